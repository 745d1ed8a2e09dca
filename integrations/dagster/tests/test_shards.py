"""Parallel work inside a table: shards=N makes the asset a graph (plan -> N shard ops -> collect)."""

import sys
import textwrap

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob

from dagster_joinflow import NO_JOB_ERRORS, DagsterJoinflowTranslator, JoinflowResource, build_joinflow_assets


def _metadata(result, key: dg.AssetKey) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_sharded_table_computes_every_key_once_through_shard_ops(pipeline_module, schema_name, instance):
    pm = pipeline_module
    pm.add_runs({"S1": "plasma", "S2": "urine", "S3": "plasma", "S4": "urine"})
    assets = build_joinflow_assets(pm.module, DagsterJoinflowTranslator(shards={"RunQC": 3}))
    runqc = dg.AssetKey([schema_name, "RunQC"])
    [sharded] = [a for a in assets if isinstance(a, dg.AssetsDefinition) and runqc in a.keys]
    plain = {s.key: s for a in build_joinflow_assets(pm.module) for s in ([a] if isinstance(a, dg.AssetSpec) else a.specs)}
    sharded_spec = sharded.specs_by_key[runqc]
    assert {d.asset_key for d in sharded_spec.deps} == {d.asset_key for d in plain[runqc].deps}
    for attribute in ("group_name", "description", "metadata", "owners", "tags", "code_version"):
        assert getattr(sharded_spec, attribute) == getattr(plain[runqc], attribute), attribute
    assert sorted(sharded.node_def.node_names()) == sorted(
        [f"{schema_name}__RunQC__{op}" for op in ("plan", "shard", "collect")])
    result = dg.materialize(assets, instance=instance, resources={"joinflow": JoinflowResource(database_url=pm.url)})
    assert result.success
    assert len(pm.module.RunQC()) == 8
    assert sorted(pm.make_calls()) == sorted(set(pm.make_calls())) and len(pm.make_calls()) == 8
    md = _metadata(result, runqc)
    assert md["rows_added"] == 8 and md["pending_before"] == 8 and md["pending_left"] == 0 and md["errors"] == 0
    shards = md["shards"]
    assert 2 <= len(shards) <= 3 and sum(s["rows_added"] for s in shards) == 8
    shard_steps = [e.step_key for e in result.all_events
                   if e.event_type_value == "STEP_SUCCESS" and "RunQC__shard" in (e.step_key or "")]
    assert len(shard_steps) == len(shards)
    [check] = [c for c in result.get_asset_check_evaluations() if c.asset_key == runqc]
    assert check.passed and check.check_name == NO_JOB_ERRORS

    again = dg.materialize(assets, instance=instance, resources={"joinflow": JoinflowResource(database_url=pm.url)})
    assert again.success and len(pm.make_calls()) == 8
    # nothing to do: no materialization, or one that says so
    assert all(e.materialization.metadata["rows_added"].value == 0
               for e in again.get_asset_materialization_events() if e.asset_key == runqc)


def test_a_failing_make_in_one_shard_fails_the_asset_and_the_others_are_computed(pipeline_module, schema_name,
                                                                                 instance):
    pm = pipeline_module
    pm.add_runs({"S1": "plasma", "S2": "broken", "S3": "plasma"})
    assets = build_joinflow_assets(pm.module, DagsterJoinflowTranslator(shards={"RunQC": 2}))
    result = dg.materialize(assets, instance=instance, resources={"joinflow": JoinflowResource(database_url=pm.url)},
                            raise_on_error=False)
    assert not result.success
    runqc = dg.AssetKey([schema_name, "RunQC"])
    assert len(pm.module.RunQC()) == 4  # S1 and S3: 2 runs each; S2's two runs failed
    # a materialization, if any, counts the failures (it stands for the rows computed)
    assert all(e.materialization.metadata["errors"].value == 2 and e.materialization.metadata["rows_added"].value == 4
               for e in result.get_asset_materialization_events() if e.asset_key == runqc)
    [check] = [c for c in result.get_asset_check_evaluations() if c.asset_key == runqc]
    assert not check.passed and check.metadata["error_count"].value == 2
    failures = [e.step_failure_data.user_failure_data.description for e in result.all_events
                if e.event_type_value == "STEP_FAILURE" and "RunQC" in e.step_key]
    assert failures and "detector saturated for sample S2" in failures[0]


def test_shards_and_partitions_on_one_table_are_refused(pipeline_module):
    translator = DagsterJoinflowTranslator(shards={"RunQC": 2}, partition_attributes={"RunQC": "sample_id"})
    with pytest.raises(ValueError, match="RunQC has partitions and shards=2"):
        build_joinflow_assets(pipeline_module.module, translator)


MULTIPROCESS_DEFS = textwrap.dedent('''
    import sys
    sys.path.insert(0, {moddir!r})
    import dagster as dg
    from dagster_joinflow import DagsterJoinflowTranslator, JoinflowResource, build_joinflow_assets

    module = __import__({module!r})
    assets = build_joinflow_assets(module, DagsterJoinflowTranslator(shards={{"RunQC": 3}}))
    job = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job("runqc", selection=[dg.AssetKey([{schema!r}, "RunQC"])])],
        resources={{"joinflow": JoinflowResource(database_url={url!r})}},
        executor=dg.multiprocess_executor.configured(
            {{"max_concurrent": 3, "start_method": {{"forkserver": {{"preload_modules": ["dagster_joinflow"]}}}}}}),
    ).resolve_job_def("runqc")
''')


@pytest.fixture
def slow_pipeline_module(tmp_path, database_url, schema_name):
    """The test pipeline whose RunQC.make takes 0.3 s: every shard op (forked within
    milliseconds of the others) then makes keys of its own shard."""
    from conftest import make_pipeline_module

    pm = make_pipeline_module(tmp_path, database_url, schema_name, make_seconds=0.3)
    yield pm
    pm.module.connection.close()
    sys.modules.pop(pm.name, None)
    if str(pm.path) in sys.path:
        sys.path.remove(str(pm.path))


# PostgreSQL: makes run in parallel there (SQLite serializes writers: a make holds its write lock)
@pytest.mark.parametrize("backend", ["postgresql"])
def test_shards_run_in_separate_processes_of_the_multiprocess_executor(slow_pipeline_module, schema_name, tmp_path,
                                                                       instance):
    pm = slow_pipeline_module
    pm.add_runs({"S1": "plasma", "S2": "urine", "S3": "plasma"})
    upstream = build_joinflow_assets(pm.module)
    runqc = dg.AssetKey([schema_name, "RunQC"])
    resources = {"joinflow": JoinflowResource(database_url=pm.url)}
    ready = dg.materialize(upstream, instance=instance, resources=resources,
                           selection=dg.AssetSelection.keys(runqc).upstream() - dg.AssetSelection.keys(runqc))
    assert ready.success and len(pm.module.PeakSummary()) == 6 and len(pm.module.RunQC()) == 0
    defs_file = tmp_path / "sharded_defs.py"
    defs_file.write_text(MULTIPROCESS_DEFS.format(moddir=str(pm.path), module=pm.name, schema=schema_name, url=pm.url))
    with dg.execute_job(ReconstructableJob.for_file(str(defs_file), "job"), instance=instance) as result:
        assert result.success
        md = _metadata(result, runqc)
    assert len(pm.module.RunQC()) == 6 and len(pm.make_calls()) == 6 == len(set(pm.make_calls()))
    shard_pids = {s["pid"] for s in md["shards"]}
    assert len(md["shards"]) >= 2 and len(shard_pids) == len(md["shards"])  # one process per shard op
    assert len(pm.make_pids()) >= 2 and pm.make_pids() <= shard_pids  # makes ran in several shard processes
    assert sum(s["rows_added"] for s in md["shards"]) == 6
