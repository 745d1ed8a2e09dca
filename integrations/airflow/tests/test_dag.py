"""JoinflowDag end to end with dag.test() on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from conftest import EXPECTED_UPSTREAM, PipelineModule

TABLES = ("Spikes", "Quality", "Summary", "Report")


def _group_upstream(dag) -> dict[str, set[str]]:
    """Task group -> the task groups its plan task waits for (through their report tasks)."""
    result = {}
    for group in TABLES:
        plan = dag.get_task(f"{group}.plan")
        result[group] = {t.split(".")[0] for t in plan.upstream_task_ids}
    return result


def test_structure_follows_foreign_keys(pipeline_module, airflow_runner):
    dag = airflow_runner.dag()
    assert set(dag.task_group.children) == set(TABLES)
    assert _group_upstream(dag) == EXPECTED_UPSTREAM
    for group in TABLES:
        assert {t.split(".", 1)[1] for t in dag.task_dict if t.startswith(group + ".")} == \
            {"plan", "populate", "report"}
        populate = dag.get_task(f"{group}.populate")
        assert populate.map_index_template == "{{ joinflow_label }}"
        assert dag.get_task(f"{group}.plan").downstream_task_ids == {f"{group}.populate"}
        # the report, and the plans of downstream tables (which run even when a populate task failed)
        assert {t for t in populate.downstream_task_ids if t.startswith(group + ".")} == {f"{group}.report"}
        assert dag.get_task(f"{group}.report").downstream_task_ids == set()  # reports are leaves: they fail the run
    # every table an Asset; the part table belongs to its master's group
    spikes_outlets = {a.name.rsplit(".", 1)[1] for a in dag.get_task("Spikes.report").outlets}
    assert len(spikes_outlets) == 2 and any("unit" in n for n in spikes_outlets)
    assert len({a.name for g in TABLES for a in dag.get_task(f"{g}.report").outlets}) == 5
    # sources are not tasks
    assert not any(t.startswith(("Animal", "Recording")) for t in dag.task_dict)


def test_run_computes_every_key_once_and_rerun_nothing(pipeline_module, airflow_runner):
    pm: PipelineModule = pipeline_module
    pm.add([1, 2, 3])  # 9 recordings -> 3 batches of 4 keys per table
    dag = airflow_runner.dag(batch_size=4)
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    calls = pm.calls()
    assert set(calls) == pm.expected([1, 2, 3])
    assert all(n == 1 for n in calls.values()), calls
    tis = airflow_runner.task_instances(run)
    populate = sorted((ti for ti in tis if ti.task_id == "Spikes.populate"), key=lambda ti: ti.map_index)
    assert [ti.map_index for ti in populate] == [0, 1, 2]
    assert populate[0].rendered_map_index == "Spikes [animal=1, rec=0 .. animal=2, rec=0] (4 keys)"
    report = next(ti for ti in tis if ti.task_id == "Report.report")
    assert str(report.state) == "success"
    spikes = _xcom(run, "Spikes.report")
    assert (spikes["rows_added"], list(spikes["part_rows_added"].values())) == (9, [18])
    events = _asset_events()

    # a rerun finds nothing to do: empty maps are skipped, the run still succeeds
    run2 = airflow_runner.run(dag)
    assert str(run2.state) == "success"
    assert pm.calls() == calls
    states = airflow_runner.states(run2)
    assert states[("Spikes.populate", -1)] == "skipped"
    assert states[("Report.report", -1)] == "skipped"  # inserted nothing: no Asset event
    assert _asset_events() == events

    # new rows: only their keys are computed
    pm.add([4])
    run3 = airflow_runner.run(dag)
    assert str(run3.state) == "success"
    calls3 = pm.calls()
    assert set(calls3) == pm.expected([1, 2, 3, 4]) and all(n == 1 for n in calls3.values())


def test_failing_make_fails_its_mapped_task(pipeline_module, airflow_runner, capfd, caplog):
    pm: PipelineModule = pipeline_module
    pm.add([1, 13], recs=range(2))  # animal 13 always fails in Spikes.make
    dag = airflow_runner.dag(batch_size=2)  # one batch per animal
    run = airflow_runner.run(dag)
    assert str(run.state) == "failed"
    states = airflow_runner.states(run)
    assert states[("Spikes.populate", 0)] == "success"
    assert states[("Spikes.populate", 1)] == "failed"
    assert states[("Spikes.report", -1)] == "failed"  # the table has keys in error
    assert states[("Summary.plan", -1)] == "success"  # downstream keeps going with the good keys
    assert states[("Summary.report", -1)] == "success"
    assert states[("Quality.report", -1)] == "success"  # an independent branch is unaffected
    out = capfd.readouterr()
    text = out.out + out.err + caplog.text
    assert "unlucky animal" in text and "JoinflowMakeError" in text
    # the job table holds the error; the good keys were computed once
    errors = pm.module.Spikes.jobs.errors.to_dicts()
    assert {(e["animal"], e["rec"]) for e in errors} == {(13, 0), (13, 1)}
    assert all("unlucky animal" in e["error_message"] for e in errors)
    assert pm.calls()["Spikes 1 0"] == 1 and "Spikes 13 0" not in pm.calls()


def test_retry_repends_errors(pipeline_module, airflow_runner):
    pm: PipelineModule = pipeline_module
    pm.add([1, 2])
    pm.fail_once(2, 1)
    dag = airflow_runner.dag(batch_size=3, default_args={"retries": 1, "retry_delay": 0})
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    calls = pm.calls()
    assert set(calls) == pm.expected([1, 2]) and all(n == 1 for n in calls.values()), calls
    tis = {(ti.task_id, ti.map_index): ti for ti in airflow_runner.task_instances(run)}
    assert tis[("Spikes.populate", 1)].try_number == 2
    assert tis[("Spikes.populate", 0)].try_number == 1
    assert not pm.module.Spikes.jobs.errors.to_dicts()
    # counts are the rows inserted, by the failed try and by its retry
    spikes = _xcom(run, "Spikes.report")
    assert (spikes["rows_added"], list(spikes["part_rows_added"].values())) == (6, [12])


def _xcom(run, task_id: str):
    import json

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter(XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id,
                                              XComModel.task_id == task_id,
                                              XComModel.key == "return_value").one()
        value = row.value
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _asset_events() -> int:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(AssetEvent).count()


def test_pending_sensor(pipeline_module, airflow_runner):
    pm: PipelineModule = pipeline_module
    dag = airflow_runner.dag(wait_for_pending={"poke_interval": 0.2, "timeout": 2, "mode": "poke"})
    sensor = dag.get_task("wait_for_pending")
    assert set(sensor.steps) == {f"{pm.name}:Spikes", f"{pm.name}:Quality"}  # the entry steps
    assert dag.get_task("Spikes.plan").upstream_task_ids == {"wait_for_pending"}
    # no data: the sensor times out softly and the run is skipped
    run = airflow_runner.run(dag)
    assert airflow_runner.states(run)[("wait_for_pending", -1)] == "skipped"
    assert not pm.calls()
    pm.add([1])
    run = airflow_runner.run(dag)
    assert str(run.state) == "success"
    assert set(pm.calls()) == pm.expected([1])


def test_pending_trigger(pipeline_module, airflow_runner):
    import asyncio

    from joinflow_airflow import JoinflowPendingTrigger

    pm: PipelineModule = pipeline_module
    steps = [f"{pm.name}:Spikes", f"{pm.name}:Quality"]
    trigger = JoinflowPendingTrigger(steps, conn_id=None, poll_interval=0.1)
    classpath, kwargs = trigger.serialize()
    assert classpath == "joinflow_airflow.sensors.JoinflowPendingTrigger" and kwargs["steps"] == steps

    async def first_event(timeout):
        agen = trigger.run()
        try:
            return await asyncio.wait_for(agen.__anext__(), timeout)
        finally:
            await agen.aclose()

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(first_event(0.5))  # nothing pending: keeps polling
    pm.add([1])
    event = asyncio.run(first_event(10))
    assert event.payload["pending"] == {steps[0]: 3, steps[1]: 3}
    # deferrable sensor in a DAG: work is already pending, so it succeeds without deferring
    dag = airflow_runner.dag(wait_for_pending={"deferrable": True, "poke_interval": 0.2, "timeout": 5})
    run = airflow_runner.run(dag)
    assert str(run.state) == "success" and set(pm.calls()) == pm.expected([1])


def test_a_selection_builds_only_the_selected_tables_with_their_settings(pipeline_module, airflow_runner):
    """select= / exclude= / settings= (joinflow selectors): only those task groups, each step's settings
    mapped to its populate task; from a module and from a manifest."""
    from datetime import timedelta

    dag = airflow_runner.dag(select="+Summary", exclude="Spikes",
                             settings={"Summary": {"retries": 4, "timeout": 300, "queue": "db"}})
    assert set(dag.task_group.children) == {"Summary"}  # Spikes is read, never computed
    populate = dag.get_task("Summary.populate")
    assert (populate.retries, populate.execution_timeout, populate.queue) == (4, timedelta(seconds=300), "db")
    assert dag.get_task("Summary.plan").upstream_task_ids == set()

    dag = airflow_runner.dag(manifest=True, select=["Report", "Quality"])
    assert set(dag.task_group.children) == {"Quality", "Report"}
    assert {t.split(".")[0] for t in dag.get_task("Report.plan").upstream_task_ids} == {"Quality"}
    assert dag.get_task("Report.populate").retries == 0


def test_open_errors_keep_every_run_failed_until_handled(pipeline_module, airflow_runner, capfd):
    """A failed key fails the table's report on this run and on every later run (no Asset event
    then), while downstream tables compute the good keys in the same run; retrying it from the
    DAG params makes the next run green."""
    pm: PipelineModule = pipeline_module
    pm.add([1, 2], recs=range(2))
    pm.fail_once(2, 1)  # fails in the first run (no Airflow retry), works when retried
    dag = airflow_runner.dag(batch_size=2)
    run = airflow_runner.run(dag)
    states = airflow_runner.states(run)
    assert str(run.state) == "failed"
    assert states[("Spikes.populate", 1)] == "failed" and states[("Spikes.report", -1)] == "failed"
    # downstream keeps going: Summary and Report computed every key whose inputs exist
    assert states[("Summary.report", -1)] == "success" and states[("Report.report", -1)] == "success"
    assert set(pm.calls()) == pm.expected([1, 2], recs=range(2)) - {"Spikes 2 1", "Summary 2 1", "Report 2 1"}
    # errors are not pending: the sensor does not fire for them
    from joinflow_airflow.sensors import pending_by_step

    assert pending_by_step([f"{pm.name}:Spikes"], None) == {f"{pm.name}:Spikes": 0}
    # the next run has no pending key for Spikes, and still fails while the error is open
    run2 = airflow_runner.run(dag)
    states2 = airflow_runner.states(run2)
    assert str(run2.state) == "failed" and states2[("Spikes.report", -1)] == "failed"
    assert states2[("Spikes.populate", -1)] == "skipped"
    out = capfd.readouterr()
    text = out.out + out.err
    assert "1 key(s) in error (animal=2, rec=1)" in text and "retry_errors=true" in text
    # nothing was inserted downstream: their reports are skipped, so no Asset event is emitted
    assert states2[("Summary.report", -1)] == "skipped"
    # the operator retries the errors from the UI (Trigger DAG w/ config: retry_errors=true)
    run3 = dag.test(run_conf={"retry_errors": True})
    states3 = airflow_runner.states(run3)
    assert str(run3.state) == "success", states3
    assert states3[("Spikes.report", -1)] == "success"
    assert set(pm.calls()) == pm.expected([1, 2], recs=range(2)) and all(n == 1 for n in pm.calls().values())
    assert not pm.module.Spikes.jobs.errors.to_dicts()
