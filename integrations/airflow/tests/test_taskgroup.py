"""JoinflowTaskGroup inside a user's DAG, node converters / operator_args, and the workers mode,
end to end with dag.test() on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PipelineModule


def _load(runner, text: str):
    runner.path.write_text(text)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(runner.path))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(runner.dag_id)


USER_DAG = """
import sys
sys.path.insert(0, {path!r})
import {module}
from airflow.sdk import DAG, task
from joinflow_airflow import JoinflowTaskGroup

def note(what):
    with open({marks!r}, "a") as f:
        f.write(f"{{what}} {{len({module}.Summary())}} {{len({module}.Report())}}\\n")

with DAG(dag_id={dag_id!r}) as dag:
    before = task(note, task_id="before")("before")
    lab = JoinflowTaskGroup(group_id="lab", pipeline={module}, conn_id=None, batch_size=4, {options})
    after = task(note, task_id="after")("after")
    before >> lab >> after
"""


def test_task_group_between_user_tasks_runs_the_pipeline_in_order(pipeline_module, airflow_runner, tmp_path):
    """A JoinflowTaskGroup (a selection of the pipeline) between the user's own tasks: the user's
    upstream task runs before any key, the downstream one after the last table is complete."""
    pm: PipelineModule = pipeline_module
    pm.add([1, 2])
    marks = tmp_path / "marks.txt"
    dag = _load(airflow_runner, USER_DAG.format(path=str(pm.tmp_path), module=pm.name, dag_id=airflow_runner.dag_id,
                                                marks=str(marks), options='select="+Summary"'))
    assert set(dag.task_group.children) == {"before", "lab", "after"}
    assert set(dag.task_group.children["lab"].children) == {"lab.Spikes", "lab.Summary"}  # the selection only
    assert dag.get_task("lab.Spikes.plan").upstream_task_ids == {"before"}
    # downstream waits for the upstream populate tasks (not its report, which fails on open errors)
    assert dag.get_task("lab.Summary.plan").upstream_task_ids == {"lab.Spikes.populate"}
    # every table's report is a leaf of the group (it fails on open errors), so the user's next task waits for all
    assert dag.get_task("after").upstream_task_ids == {"lab.Spikes.report", "lab.Summary.report"}
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    # before: nothing computed yet; after: every Summary key is there (Report is not selected)
    assert marks.read_text().splitlines() == ["before 0 0", "after 6 0"]
    calls = pm.calls()
    assert set(calls) == pm.expected([1, 2], tables=("Spikes", "Summary")) and all(n == 1 for n in calls.values())


CONVERTER_DAG = """
import sys
sys.path.insert(0, {path!r})
import {module}
from airflow.sdk import task
from joinflow_airflow import JoinflowDag

seen = []

def whole_table(node, conn_id, operator_args):
    seen.append((node["name"], node["group_id"], sorted(operator_args)))
    def populate_all():
        from joinflow.pipeline import load_step
        return load_step(node["name"]).run()["rows_added"]
    return task(populate_all, task_id="custom", retries=operator_args["retries"])()

dag = JoinflowDag(dag_id={dag_id!r}, pipeline={module}, conn_id=None, batch_size=4,
                  operator_args={{"retries": 3, "queue": "lab"}},
                  settings={{"Summary": {{"retries": 5}}}},
                  node_converters={{{module}.Quality: whole_table}})
"""


def test_node_converter_replaces_a_tables_tasks(pipeline_module, airflow_runner):
    """node_converters={Quality: fn}: Quality's group holds only the user's operator, still in
    foreign-key order; operator_args reach every populate task under the per-step settings."""
    pm: PipelineModule = pipeline_module
    pm.add([1])
    text = CONVERTER_DAG.format(path=str(pm.tmp_path), module=pm.name, dag_id=airflow_runner.dag_id)
    dag = _load(airflow_runner, text)
    assert {t for t in dag.task_dict if t.startswith("Quality.")} == {"Quality.custom"}
    assert dag.get_task("Quality.custom").retries == 3
    assert "Quality.custom" in dag.get_task("Report.plan").upstream_task_ids
    assert dag.get_task("Spikes.populate").retries == 3 and dag.get_task("Spikes.populate").queue == "lab"
    assert dag.get_task("Summary.populate").retries == 5  # a step's settings win over operator_args
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    calls = pm.calls()
    assert set(calls) == pm.expected([1]) and all(n == 1 for n in calls.values())
    assert str(airflow_runner.states(run)[("Quality.custom", -1)]) == "success"


def test_bad_building_options_fail_the_dag_file(pipeline_module, airflow_runner):
    from joinflow_airflow import JoinflowDag

    pm: PipelineModule = pipeline_module
    for options, words in (({"mode": "fast"}, "mode='fast'"), ({"mode": "workers", "workers": 0}, "workers=0"),
                           ({"time_budget": -1}, "time_budget=-1"), ({"node_converters": {"Spikes": 3}}, "not a callable"),
                           ({"operator_args": ["retries"]}, "operator_args")):
        with pytest.raises((ValueError, TypeError), match=words):
            JoinflowDag(dag_id="bad", pipeline=pm.module, conn_id=None, **options)


def test_workers_mode_computes_every_key_once(pipeline_module, airflow_runner):
    """mode="workers": per table `workers` mapped tasks pull keys from the job table; every key
    is computed once, a rerun has no worker, new keys are picked up."""
    pm: PipelineModule = pipeline_module
    pm.add([1, 2, 3])  # 9 keys per table
    dag = airflow_runner.dag(mode="workers", workers=3)
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    calls = pm.calls()
    assert set(calls) == pm.expected([1, 2, 3]) and all(n == 1 for n in calls.values()), calls
    tis = sorted((ti for ti in airflow_runner.task_instances(run) if ti.task_id == "Spikes.populate"),
                 key=lambda ti: ti.map_index)
    assert [ti.rendered_map_index for ti in tis] == [f"Spikes worker {i}/3" for i in (1, 2, 3)]
    run2 = airflow_runner.run(dag)
    assert str(run2.state) == "success" and pm.calls() == calls
    assert airflow_runner.states(run2)[("Spikes.populate", -1)] == "skipped"
    pm.add([4])  # 3 new keys: 3 workers
    run3 = airflow_runner.run(dag)
    assert str(run3.state) == "success"
    calls3 = pm.calls()
    assert set(calls3) == pm.expected([1, 2, 3, 4]) and all(n == 1 for n in calls3.values())


def test_workers_time_budget_leaves_the_rest_pending(pipeline_module, airflow_runner):
    """A worker past its time budget stops after the key in hand; the rest stay pending (the
    report says so) and the next run makes them, each once."""
    pm: PipelineModule = pipeline_module
    pm.add([1, 2, 3])
    dag = airflow_runner.dag(mode="workers", workers=2, time_budget=1e-9, select="Spikes")
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    assert len(pm.module.Spikes()) == 2  # two workers, one key each
    for _ in range(5):
        run = airflow_runner.run(dag)
    assert len(pm.module.Spikes()) == 9
    calls = pm.calls()
    assert set(calls) == pm.expected([1, 2, 3], tables=("Spikes",)) and all(n == 1 for n in calls.values())
