"""JoinflowDag(manifest=...): the DAG from a manifest equals the DAG from the module, parsing
touches neither the pipeline module nor the database, and the tasks still run end to end."""

from __future__ import annotations

import sys

import pytest
import sqlalchemy

from conftest import AIRFLOW_HOME, PipelineModule


def _shape(dag) -> dict:
    """Everything about the DAG's structure that a user or the scheduler sees."""
    shape = {}
    for task_id, t in dag.task_dict.items():
        shape[task_id] = (
            sorted(t.upstream_task_ids), sorted(t.downstream_task_ids), type(t).__name__,
            sorted((a.name, a.uri) for a in t.outlets or ()), getattr(t, "map_index_template", None),
            t.trigger_rule, getattr(t, "steps", None),
        )
    return {"tasks": shape, "groups": sorted(dag.task_group.children), "tags": sorted(dag.tags),
            "doc": dag.doc_md}


def test_manifest_dag_matches_module_dag(pipeline_module, airflow_runner):
    options = {"wait_for_pending": {"poke_interval": 1}}
    from_module = airflow_runner.dag(**options)
    from_manifest = airflow_runner.dag(manifest=True, **options)
    assert _shape(from_manifest) == _shape(from_module)
    plan = from_manifest.get_task("Spikes.plan")
    assert plan.op_args[0] == f"{pipeline_module.name}:Spikes"
    assert plan.op_args[3] == f"{pipeline_module.Spikes.database}.{pipeline_module.Spikes.table_name}"


def test_parsing_a_manifest_dag_imports_nothing_and_queries_nothing(pipeline_module, airflow_runner,
                                                                    monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    airflow_runner.dag(manifest=True)  # writes the files
    monkeypatch.delitem(sys.modules, pipeline_module.name)
    touched = []  # URLs of every connection / statement during the parse, Airflow's own excluded

    def on_connect(conn, *args):
        touched.append(str(conn.engine.url))

    events = ("engine_connect", "before_cursor_execute")
    for name in events:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, name, on_connect)
    try:
        bag = DagBag(dag_folder=str(airflow_runner.path))
    finally:
        for name in events:
            sqlalchemy.event.remove(sqlalchemy.engine.Engine, name, on_connect)
    assert not bag.import_errors and bag.get_dag(airflow_runner.dag_id) is not None
    assert pipeline_module.name not in sys.modules
    assert [url for url in touched if str(AIRFLOW_HOME) not in url] == []


def test_manifest_dag_runs_end_to_end(pipeline_module, airflow_runner):
    pm: PipelineModule = pipeline_module
    pm.add([1, 2])
    dag = airflow_runner.dag(batch_size=4, manifest=True)
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    calls = pm.calls()
    assert set(calls) == pm.expected([1, 2]) and all(n == 1 for n in calls.values()), calls
    run = airflow_runner.run(dag)  # rerun: nothing to do
    assert str(run.state) == "success" and pm.calls() == calls


def test_stale_manifest_fails_the_plan_with_the_fix(pipeline_module, airflow_runner):
    from joinflow_airflow.dag import JoinflowManifestError, plan_work

    with pytest.raises(JoinflowManifestError, match="stale: regenerate it"):
        plan_work(f"{pipeline_module.name}:Spikes", conn_id=None, expected_table="elsewhere.spikes")


def test_bad_manifest_arguments(tmp_path):
    from joinflow_airflow import JoinflowDag, JoinflowManifestError

    with pytest.raises(TypeError, match="exactly one of pipeline= .* or manifest="):
        JoinflowDag("x")
    with pytest.raises(JoinflowManifestError, match="does not exist.*python -m joinflow.pipeline manifest"):
        JoinflowDag("x", manifest=tmp_path / "missing.json")


def test_adapter_reader_agrees_with_joinflow(pipeline_module):
    """The parse-time reader (no joinflow import) accepts and rejects what joinflow does."""
    from joinflow.errors import DataJointError
    from joinflow.pipeline import Pipeline, read_manifest
    from joinflow_airflow.manifest import JoinflowManifestError, load_manifest

    good = Pipeline(pipeline_module.module).to_manifest()
    assert load_manifest(good) == read_manifest(good) == good
    bad = [dict(good, steps=good["steps"][:1]), dict(good, version=99), {"format": "other"},
           {k: v for k, v in good.items() if k != "hash"}]
    for manifest in bad:
        with pytest.raises(JoinflowManifestError):
            load_manifest(manifest)
        with pytest.raises(DataJointError):
            read_manifest(manifest)


def test_manifest_dag_file_does_not_import_joinflow(tmp_path):
    """Airflow parses each DAG file in a fresh process: a manifest DAG never imports joinflow."""
    import json
    import subprocess
    from pathlib import Path

    example = Path(__file__).resolve().parents[3] / "examples" / "lcms" / "airflow_dag.py"
    code = ("import sys, runpy; runpy.run_path(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m == 'joinflow' or m.startswith(('joinflow.', 'lcms'))))")
    proc = subprocess.run([sys.executable, "-c", code, str(example)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"')) == []
