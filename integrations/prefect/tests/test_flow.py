"""joinflow_flow end to end against the ephemeral Prefect API, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL

import prefect_joinflow.flows as flows_module
from joinflow.pipeline import Pipeline
from prefect_joinflow import JoinflowFlowError, joinflow_flow

from conftest import EXPECTED_UPSTREAM


def run(flow, **params):
    state = flow(return_state=True, **params)
    return state, state.state_details.flow_run_id


def task_runs(flow_run_id, wait: float = 30.0):
    """The flow run's task runs, once the server has recorded a final state for each.

    Prefect 3 records task-run states from events sent in the background, so right after the
    flow returns a task run can still have no state (seen on a loaded machine); wait, bounded.
    """
    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if all(r.state is not None and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)


def artifacts(flow_run_id):
    """The joinflow run-summary artifacts of a flow run."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return [a for a in found if (a.key or "").endswith("-summary")]


def step_of(task_run) -> str:
    """Task runs are named "plan <Table>" and "populate <Table> batch|shard ..."."""
    return task_run.name.split()[1]


@pytest.fixture
def recorded_events(monkeypatch):
    seen = []
    real = flows_module.emit_event

    def record(**kwargs):
        seen.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(flows_module, "emit_event", record)
    return seen


def test_task_graph_follows_the_foreign_key_graph(pipeline_module, recorded_events):
    m = pipeline_module
    m.add([1, 2])
    pipe = Pipeline(m.module)
    assert {s.cls.__name__: {u.rpartition(":")[2] for u in s.upstream} for s in pipe.steps} == EXPECTED_UPSTREAM

    state, flow_run_id = run(joinflow_flow(m.module, batch_size=4))
    assert state.is_completed(), state.message
    runs = task_runs(flow_run_id)
    by_id = {r.id: r for r in runs}
    plans = {step_of(r): r for r in runs if r.name.startswith("plan ")}
    assert set(plans) == set(EXPECTED_UPSTREAM)
    for table, plan in plans.items():
        upstream = {step_of(by_id[i.id]) for i in plan.task_inputs.get("wait_for", [])}
        assert upstream == EXPECTED_UPSTREAM[table], table
    populates = [r for r in runs if r.name.startswith("populate ")]
    assert {step_of(r) for r in populates} == set(EXPECTED_UPSTREAM)
    for r in populates:  # 6 keys per table in batches of 4 -> 2 tasks each, after their own plan
        assert [by_id[i.id].id for i in r.task_inputs["wait_for"]] == [plans[step_of(r)].id]
        assert r.state.is_completed()
    assert len(populates) == 8

    events = {(e["event"], e["resource"]["prefect.resource.name"]) for e in recorded_events}
    assert events == {("joinflow.table.populated", t) for t in [*EXPECTED_UPSTREAM, "Spikes.Unit"]}
    payload = next(e["payload"] for e in recorded_events if e["resource"]["prefect.resource.name"] == "Report")
    assert payload["rows_added"] == 6 and payload["pending_left"] == 0


def test_every_key_once_rerun_nothing_then_exactly_the_new_keys(pipeline_module):
    m = pipeline_module
    m.add([1, 2, 3])
    flow = joinflow_flow(m.name, batch_size=2)  # by module name: imported at run time
    state, flow_run_id = run(flow)
    assert state.is_completed(), state.message
    calls = m.calls()
    assert set(calls) == m.expected([1, 2, 3]) and set(calls.values()) == {1}
    summary = state.result()
    assert {s.rpartition(":")[2]: r["rows_added"] for s, r in summary.items()} == dict.fromkeys(EXPECTED_UPSTREAM, 9)
    (artifact,) = artifacts(flow_run_id)
    assert "| 9 |" in artifact.data and "report" in artifact.data.lower()

    state, _ = run(flow)  # nothing pending: nothing computed, no populate task
    assert state.is_completed()
    assert m.calls() == calls
    assert {r["state"] for r in state.result().values()} == {"nothing to do"}

    m.add([4], recs=[0, 1])
    state, flow_run_id = run(flow, batch_size=100)
    assert state.is_completed(), state.message
    new = m.calls() - calls
    assert set(new) == m.expected([4], recs=[0, 1]) and set(new.values()) == {1}
    assert set(m.calls().values()) == {1}


def test_shards_compute_every_key_once(pipeline_module):
    m = pipeline_module
    m.add(range(1, 6))
    state, flow_run_id = run(joinflow_flow(m.module, shards=3))
    assert state.is_completed(), state.message
    calls = m.calls()
    assert set(calls) == m.expected(range(1, 6)) and set(calls.values()) == {1}
    names = [r.name for r in task_runs(flow_run_id) if r.name.startswith("populate Spikes")]
    assert names and all("/3" in n for n in names)


def test_failing_make_fails_its_task_with_the_job_table_error(pipeline_module, recorded_events):
    m = pipeline_module
    m.add([1, 13])
    flow = joinflow_flow(m.module, batch_size=100)
    state, flow_run_id = run(flow)
    assert state.is_failed()
    with pytest.raises(JoinflowFlowError, match="unlucky animal"):
        state.result()

    errors = m.Spikes().jobs.errors.to_dicts()
    assert len(errors) == 3 and all("unlucky animal" in e["error_message"] for e in errors)
    failed = [r for r in task_runs(flow_run_id) if r.state.is_failed()]
    assert sorted(r.name.split()[0] for r in failed) == ["materialize", "populate"]  # the asset's too
    failed = [r for r in failed if r.name.startswith("populate ")]
    assert [step_of(r) for r in failed] == ["Spikes"]
    with pytest.raises(Exception, match="RuntimeError: unlucky animal"):
        failed[0].state.result()
    assert "unlucky animal" in failed[0].state.message

    (artifact,) = artifacts(flow_run_id)
    assert "unlucky animal" in artifact.data
    row = next(line for line in artifact.data.splitlines() if "spikes" in line.lower() and "failed" in line)
    assert "| 3 | 3 | 0 | 3 |" in row  # rows added, errors, pending left (errors are not pending), in job table
    assert ("joinflow.table.failed", "Spikes") in {(e["event"], e["resource"]["prefect.resource.name"])
                                                  for e in recorded_events}
    # the good keys flowed downstream; each computed once
    calls = m.calls()
    assert set(calls) == m.expected([1]) | m.expected([13], tables=["Quality"]) and set(calls.values()) == {1}

    state, _ = run(flow)  # errors stay in the job table: not recomputed, the run still fails
    assert state.is_failed()
    with pytest.raises(JoinflowFlowError, match="3 in all"):
        state.result()
    assert m.calls() == calls


def test_task_retry_repends_its_errors(pipeline_module):
    m = pipeline_module
    m.add([1, 2])
    m.fail_once(2, 1)
    flow = joinflow_flow(m.module, batch_size=2, retries={"Spikes": 1}, retry_delay_seconds=0)
    state, flow_run_id = run(flow)
    assert state.is_completed(), state.message
    calls = m.calls()
    assert set(calls) == m.expected([1, 2]) and set(calls.values()) == {1}
    assert len(m.Spikes().jobs.errors) == 0
    retried = [r for r in task_runs(flow_run_id) if r.run_count > 1]
    assert [step_of(r) for r in retried] == ["Spikes"]
    # counts are the rows inserted, by the failed try and by its retry
    spikes = state.result()[f"{m.name}:Spikes"]
    assert spikes["rows_added"] == 6 and list(spikes["part_rows_added"].values()) == [12]


def test_open_errors_keep_every_run_failed_until_handled(pipeline_module, recorded_events):
    """A failed key fails this run and every later one (no pending work, no "populated" event)
    until it is retried or ignored; downstream tables compute the good keys in the same run;
    ``allow_errors=True`` ends Completed with a message saying so."""
    m = pipeline_module
    m.add([1, 2], recs=range(2))
    m.fail_once(2, 1)
    flow = joinflow_flow(m.module, batch_size=2)
    state, _ = run(flow)
    assert state.is_failed()
    assert set(m.calls()) == m.expected([1, 2], recs=range(2)) - {"Spikes 2 1", "Summary 2 1", "Report 2 1"}
    recorded_events.clear()
    state, flow_run_id = run(flow)
    assert state.is_failed()
    with pytest.raises(JoinflowFlowError, match=r"Spikes.*key\(s\) in error from an earlier run.*retry_errors=True"):
        state.result()
    assert not [r for r in task_runs(flow_run_id) if r.name.startswith("populate")]  # errors are not pending
    events = {(e["event"], e["resource"]["prefect.resource.name"]) for e in recorded_events}
    assert events == {("joinflow.table.failed", "Spikes")}  # a no-op run triggers nothing
    state, _ = run(flow, allow_errors=True)
    assert state.is_completed() and "Completed with errors" in state.message
    state, _ = run(flow, retry_errors=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary[f"{m.name}:Spikes"]["rows_added"] == 1 and summary[f"{m.name}:Report"]["rows_added"] == 1
    assert set(m.calls()) == m.expected([1, 2], recs=range(2)) and set(m.calls().values()) == {1}
    # part tables' events carry their own rows
    unit = next(e for e in recorded_events if e["resource"]["prefect.resource.name"] == "Spikes.Unit")
    assert unit["payload"]["rows_added"] == 2


RUNNER = textwrap.dedent("""
    import sys
    import {module} as pipeline
    from prefect_joinflow import joinflow_flow

    state = joinflow_flow(pipeline, batch_size=2)(return_state=True)
    sys.exit(0 if state.is_completed() else 1)
""")


def test_overlapping_flow_runs_compute_each_key_once(pipeline_module):
    m = pipeline_module
    m.add(range(1, 5))
    script = m.tmp_path / "run_flow.py"
    script.write_text(RUNNER.format(module=m.name))
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), JF_TEST_MAKE_DELAY="0.02")
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, cwd=m.tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    calls = m.calls()
    assert set(calls) == m.expected(range(1, 5)) and set(calls.values()) == {1}


def test_entrypoint_for_serve(tmp_path, monkeypatch):
    (tmp_path / "jfp_entry.py").write_text(textwrap.dedent("""
        from prefect_joinflow import joinflow_flow
        flow = joinflow_flow("some_lab.pipeline", name="lab")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import jfp_entry

    deployment = jfp_entry.flow.to_deployment(name="lab-hourly", cron="0 * * * *")
    assert deployment.entrypoint == "jfp_entry.py:flow"
    assert deployment.flow_name == "lab"
    assert set(deployment._parameter_openapi_schema.properties) == {"batch_size", "retry_errors", "ignore_errors",
                                                                    "allow_errors"}


def test_dask_cluster_of_two_processes_computes_every_key_once(pipeline_module):
    from prefect_dask import DaskTaskRunner

    m = pipeline_module
    m.add(range(1, 7))
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "processes": True, "threads_per_worker": 1,
                                            "dashboard_address": None})
    state, flow_run_id = run(joinflow_flow(m.name, batch_size=3, task_runner=runner))
    assert state.is_completed(), state.message
    calls = m.calls()
    assert set(calls) == m.expected(range(1, 7)) and set(calls.values()) == {1}
    assert os.getpid() not in m.pids() and len(m.pids()) == 2  # the two worker processes did the work
    plans = {step_of(r): r for r in task_runs(flow_run_id) if r.name.startswith("plan ")}
    assert set(plans) == set(EXPECTED_UPSTREAM)


def test_database_block_sets_the_joinflow_url(monkeypatch):
    import joinflow as dj
    from prefect_joinflow import JoinflowDatabase, apply_database_block

    JoinflowDatabase(url="sqlite:////tmp/jfp-block-test.db").save("jfp-test-db", overwrite=True)
    monkeypatch.setitem(dj.config, "database.url", None)
    monkeypatch.delenv("JOINFLOW_DATABASE_URL", raising=False)
    apply_database_block("jfp-test-db")
    assert dj.config["database.url"] == "sqlite:////tmp/jfp-block-test.db"
    assert os.environ["JOINFLOW_DATABASE_URL"] == "sqlite:////tmp/jfp-block-test.db"
    assert "jfp-block-test" not in repr(JoinflowDatabase.load("jfp-test-db"))  # a secret: masked


def test_a_selection_runs_only_the_selected_tables_with_their_settings(pipeline_module):
    """select= / exclude=: only those tables get tasks (upstream ones are read, never computed);
    a step's settings become its populate tasks' options (tags, retries)."""
    m = pipeline_module
    m.add([1])
    flow = joinflow_flow(m.module, batch_size=4, select="Spikes+", exclude="Report",
                         settings={"Summary": {"tags": ["nightly"], "retries": 2}})
    state, flow_run_id = run(flow)
    assert state.is_completed(), state.message
    assert {s.rpartition(":")[2] for s in state.result()} == {"Spikes", "Summary"}
    assert set(m.calls()) == m.expected([1], tables=("Spikes", "Summary"))  # Quality and Report not computed
    runs = task_runs(flow_run_id)
    assert {step_of(r) for r in runs} == {"Spikes", "Summary"}
    summary = [r for r in runs if r.name.startswith("populate Summary")]
    assert summary and all("nightly" in r.tags and r.empirical_policy.retries == 2 for r in summary)
    assert all("nightly" not in r.tags for r in runs if step_of(r) == "Spikes")
