"""dagster-joinflow: assets from the foreign-key graph, materialization, checks, sensor, translator."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from joinflow.pipeline import Pipeline

from dagster_joinflow import (
    NO_JOB_ERRORS,
    DagsterJoinflowTranslator,
    JoinflowResource,
    build_joinflow_assets,
    build_joinflow_sensor,
)


def _specs(assets):
    out = {}
    for a in assets:
        for s in ([a] if isinstance(a, dg.AssetSpec) else a.specs):
            out[s.key.to_user_string()] = s
    return out


def _materializable(assets):
    return {k for a in assets if isinstance(a, dg.AssetsDefinition) for k in a.keys}


def _resources(pm):
    return {"joinflow": JoinflowResource(database_url=pm.url)}


def _materialization_metadata(result, key: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_assets_and_deps_match_the_foreign_key_graph(pipeline_module, schema_name):
    assets = build_joinflow_assets(pipeline_module.module)
    specs = _specs(assets)
    s = schema_name
    assert set(specs) == {f"{s}/{t}" for t in ("Instrument", "Standard", "Sample", "Run", "Acquisition", "Centroid",
                                                "DetectedPeaks", "PeakSummary", "RunQC")}
    deps = {k: sorted(d.asset_key.to_user_string() for d in spec.deps) for k, spec in specs.items()}
    assert deps == {
        f"{s}/Instrument": [],
        f"{s}/Standard": [],
        f"{s}/Sample": [],
        f"{s}/Run": [f"{s}/Instrument", f"{s}/Sample", f"{s}/Standard"],  # renamed nullable FK; part Spike
        f"{s}/Acquisition": [f"{s}/Run"],
        f"{s}/Centroid": [f"{s}/Acquisition"],
        f"{s}/DetectedPeaks": [f"{s}/Centroid"],
        f"{s}/PeakSummary": [f"{s}/DetectedPeaks", f"{s}/Run"],
        f"{s}/RunQC": [f"{s}/Instrument", f"{s}/PeakSummary"],  # through its part table Flag
    }
    # the same graph as the pipeline's foreign keys (parts folded into their masters)
    pipe = Pipeline(pipeline_module.module)
    by_full = {n.full_table_name: n for n in pipe.nodes}
    for node in pipe.nodes:
        if node.tier == "Part":
            assert node.name.split(":")[1] in specs[f"{s}/{node.name.split(':')[1].split('.')[0]}"].metadata[
                "joinflow/parts"]
            continue
        expected = {by_full[p].name.split(":")[1].split(".")[0] for p in node.parents}
        expected |= {by_full[p].name.split(":")[1].split(".")[0]
                     for part in node.parts for p in by_full[part].parents} - {node.cls.__name__}
        assert {d.asset_key.path[-1] for d in specs[f"{s}/{node.cls.__name__}"].deps} == expected
    assert _materializable(assets) == {dg.AssetKey([s, t]) for t in ("Acquisition", "Centroid", "DetectedPeaks",
                                                                      "PeakSummary", "RunQC")}
    assert all(spec.group_name == s for spec in specs.values())
    summary = specs[f"{s}/PeakSummary"]
    assert summary.description.startswith("per-run summary of the spectra")
    column_schema = summary.metadata["dagster/column_schema"]
    column_schema = getattr(column_schema, "schema", column_schema)  # TableSchema or its MetadataValue
    columns = {c.name: c for c in column_schema.columns}
    assert list(columns) == ["sample_id", "run_idx", "n_spectra", "max_tic", "base_peak_mz", "n_peaks",
                             "standards_found", "mass_error_ppm"]
    assert columns["base_peak_mz"].description == "base peak of the most intense scan"
    assert "primary key" in columns["sample_id"].constraints.other
    assert "joinflow" in summary.kinds
    assert specs[f"{s}/Run"].metadata["joinflow/parts"] == ["Run.Spike"]
    defs = dg.Definitions(assets=assets, sensors=[build_joinflow_sensor(assets)],
                          resources=_resources(pipeline_module))
    dg.Definitions.validate_loadable(defs)
    check_keys = {c for a in assets if isinstance(a, dg.AssetsDefinition) for c in a.check_keys}
    assert check_keys == {dg.AssetCheckKey(dg.AssetKey([s, t]), NO_JOB_ERRORS) for t in ("Acquisition", "Centroid", "DetectedPeaks", "PeakSummary", "RunQC")}


def test_materialize_computes_every_key_once_and_a_rerun_nothing(pipeline_module, schema_name, instance):
    pm = pipeline_module
    pm.add_runs({"S1": "plasma", "S2": "urine", "S3": "plasma"})
    assets = build_joinflow_assets(pm.module)
    result = dg.materialize(assets, instance=instance, resources=_resources(pm))
    assert result.success
    assert len(pm.module.PeakSummary()) == 6 and len(pm.module.RunQC()) == 6
    md = _materialization_metadata(result, f"{schema_name}/RunQC")
    assert md["rows_added"] == 6 and md["pending_left"] == 0 and md["errors"] == 0
    assert md["dagster/row_count"] == 6 and md["duration_s"] >= 0
    assert sorted(pm.make_calls()) == sorted(set(pm.make_calls())) and len(pm.make_calls()) == 6
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 5 and all(c.passed for c in checks)

    again = dg.materialize(assets, instance=instance, resources=_resources(pm))
    assert again.success
    assert again.get_asset_materialization_events() == []  # nothing inserted: no materialization
    assert len(pm.make_calls()) == 6


OVERLAP_SCRIPT = textwrap.dedent('''
    import json, sys
    import dagster as dg
    from dagster_joinflow import JoinflowResource, build_joinflow_assets
    module = __import__(sys.argv[1])
    assets = build_joinflow_assets(module)
    result = dg.materialize(assets, resources={"joinflow": JoinflowResource(database_url=sys.argv[2])})
    added = {e.asset_key.to_user_string(): e.materialization.metadata["rows_added"].value
             for e in result.get_asset_materialization_events()}
    print("RESULT", json.dumps({"success": result.success, "added": added}))
''')


def test_overlapping_materializations_compute_each_key_once(tmp_path, database_url, schema_name):
    from conftest import make_pipeline_module

    pm = make_pipeline_module(tmp_path, database_url, schema_name, make_seconds=0.1)
    try:
        samples = {f"S{i:02d}": "plasma" for i in range(12)}
        pm.add_runs(samples, runs_per_sample=2)  # 24 keys x 100 ms in RunQC
        script = tmp_path / "overlap.py"
        script.write_text(OVERLAP_SCRIPT)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pm.path), os.environ.get("PYTHONPATH", "")]))
        env.pop("DAGSTER_HOME", None)
        procs = [subprocess.Popen([sys.executable, str(script), pm.name, database_url], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=300) for p in procs]
        results = []
        for (out, err), p in zip(outputs, procs):
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.split("RESULT", 1)[1]))
        assert all(r["success"] for r in results)
        calls = pm.make_calls()
        assert len(calls) == 24 and len(set(calls)) == 24  # every key computed exactly once
        # a run that inserted nothing (the other did it all) has no materialization
        assert sum(r["added"].get(f"{schema_name}/RunQC", 0) for r in results) == 24
        assert sum(r["added"].get(f"{schema_name}/PeakSummary", 0) for r in results) == 24
        assert len(pm.module.RunQC()) == 24
        split = {pid: sum(1 for c in pm._calls() if c["pid"] == pid) for pid in pm.make_pids()}
        print("make calls per process:", split)  # usually both processes share the work
    finally:
        pm.module.connection.close()
        sys.modules.pop(pm.name, None)
        sys.path.remove(str(pm.path))


def test_open_errors_fail_every_run_until_retried_or_ignored(pipeline_module, schema_name, instance):
    """A failing make: the asset materializes its good keys (downstream keeps going) and the
    no_job_errors check fails the run; a rerun with nothing to do still fails (no new
    materialization); the sensor starts no run for the errors; ignoring them makes runs green."""
    pm = pipeline_module
    pm.add_runs({"S1": "plasma", "BAD": "broken"})
    assets = build_joinflow_assets(pm.module)
    result = dg.materialize(assets, instance=instance, resources=_resources(pm), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.user_failure_data
    assert "RunQC" in failure.step_key and "2 key(s) in error" in error.description
    assert "detector saturated for sample BAD" in error.description and "retry_errors: true" in error.description
    md = _materialization_metadata(result, f"{schema_name}/RunQC")
    assert (md["rows_added"], md["errors"], md["open_errors"]) == (2, 2, 2)  # the good keys, all the same
    checks = {c.asset_check_key.asset_key.path[-1]: c for c in result.get_asset_check_evaluations()}
    assert checks["PeakSummary"].passed
    qc = checks["RunQC"]
    assert not qc.passed and qc.severity == dg.AssetCheckSeverity.ERROR
    assert qc.metadata["error_count"].value == 2
    assert "detector saturated" in json.dumps(qc.metadata["first_errors"].value)
    assert len(pm.module.RunQC()) == 2

    # errors are not pending: the sensor requests no run for them
    sensor = build_joinflow_sensor(assets)
    defs = dg.Definitions(assets=assets, sensors=[sensor], resources=_resources(pm))
    tick = sensor(dg.build_sensor_context(instance=instance, definitions=defs, cursor=None))
    assert isinstance(tick, dg.SkipReason)

    # the next run has nothing to compute and still fails; no upstream asset says it was updated
    again = dg.materialize(assets, instance=instance, resources=_resources(pm), raise_on_error=False)
    assert not again.success
    assert all(e.asset_key.path[-1] in ("Acquisition", "Centroid", "DetectedPeaks", "PeakSummary")
               and e.materialization.metadata["rows_added"].value == 0
               for e in again.get_asset_materialization_events())
    assert not any(e.asset_key.path[-1] == "RunQC" for e in again.get_asset_materialization_events())
    # a retry (config retry_errors) re-pends the failed keys; they fail again and are recorded again
    op = f"{schema_name}__RunQC"
    retry = dg.materialize(assets, instance=instance, resources=_resources(pm), raise_on_error=False,
                           selection=[dg.AssetKey([schema_name, "RunQC"])],
                           run_config={"ops": {op: {"config": {"retry_errors": True}}}})
    assert not retry.success
    assert len(pm.make_calls()) == 4 + 2
    # ignoring them (config ignore_errors) ends the failures
    ignore = dg.materialize(assets, instance=instance, resources=_resources(pm), raise_on_error=False,
                            selection=[dg.AssetKey([schema_name, "RunQC"])],
                            run_config={"ops": {op: {"config": {"ignore_errors": True}}}})
    assert ignore.success
    assert ignore.get_asset_materialization_events() == []  # nothing inserted: nothing to trigger
    assert len(pm.module.RunQC().jobs.ignored) == 2
    quiet = dg.materialize(assets, instance=instance, resources=_resources(pm))
    assert quiet.success and quiet.get_asset_materialization_events() == []


def test_the_sensor_requests_runs_for_new_upstream_rows_only(pipeline_module, schema_name, instance):
    pm = pipeline_module
    assets = build_joinflow_assets(pm.module)
    sensor = build_joinflow_sensor(assets, minimum_interval_seconds=5)
    defs = dg.Definitions(assets=assets, sensors=[sensor], resources=_resources(pm))

    def tick(cursor):
        ctx = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
        result = sensor(ctx)
        return result, ctx.cursor

    result, cursor = tick(None)  # no data yet: nothing pending
    assert isinstance(result, dg.SkipReason)
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SkipReason)

    pm.add_runs({"S1": "plasma"})
    result, cursor2 = tick(cursor)
    [request] = result.run_requests
    assert {k.path[-1] for k in request.asset_selection} == {"Acquisition", "Centroid", "DetectedPeaks", "PeakSummary", "RunQC"}
    # the same state again: the same run key (Dagster dedupes it) and, with the new cursor, nothing
    same, _ = tick(cursor)
    assert same.run_requests[0].run_key == request.run_key
    result, cursor3 = tick(result.cursor)
    assert isinstance(result, dg.SkipReason)

    run = dg.materialize(assets, instance=instance, resources=_resources(pm), selection=request.asset_selection)
    assert run.success and len(pm.module.RunQC()) == 2
    result, cursor4 = tick(cursor3)  # tables changed, but nothing is pending
    assert isinstance(result, dg.SkipReason)
    result, _ = tick(cursor4)
    assert isinstance(result, dg.SkipReason)

    pm.add_runs({"S2": "plasma"})
    result, _ = tick(cursor4)
    assert len(result.run_requests) == 1 and result.run_requests[0].run_key != request.run_key


def test_translator_overrides(pipeline_module, schema_name, instance):
    class MyTranslator(DagsterJoinflowTranslator):
        def get_asset_key(self, node):
            return dg.AssetKey(["lab", node.cls.__name__.lower()])

        def get_group_name(self, node):
            return "mass_spec"

        def get_description(self, node):
            return f"table {node.cls.__name__}"

        def get_metadata(self, node):
            return {**super().get_metadata(node), "team": "proteomics"}

    pm = pipeline_module
    assets = build_joinflow_assets(pm.module, MyTranslator(owners=["team:proteomics"], tags={"domain": "lcms"}))
    specs = _specs(assets)
    assert set(specs) == {f"lab/{t}" for t in ("instrument", "standard", "sample", "run", "acquisition", "centroid",
                                                "detectedpeaks", "peaksummary", "runqc")}
    assert {d.asset_key.to_user_string() for d in specs["lab/runqc"].deps} == {"lab/peaksummary", "lab/instrument"}
    spec = specs["lab/peaksummary"]
    assert spec.group_name == "mass_spec" and spec.description == "table PeakSummary"
    assert spec.owners == ["team:proteomics"] and spec.tags["domain"] == "lcms"
    assert spec.metadata["team"] == "proteomics" and "dagster/column_schema" in spec.metadata
    pm.add_runs({"S1": "plasma"})
    result = dg.materialize(assets, instance=instance, resources=_resources(pm))
    assert result.success and len(pm.module.RunQC()) == 2

    class WholeSpec(DagsterJoinflowTranslator):
        def get_asset_spec(self, node):
            return dg.AssetSpec(key=["x", node.cls.__name__], group_name="g")

    specs = _specs(build_joinflow_assets(pm.module, WholeSpec()))
    assert {d.asset_key.to_user_string() for d in specs["x/PeakSummary"].deps} == {"x/Run", "x/DetectedPeaks"}


def test_partitions_keyed_by_a_primary_key_attribute(pipeline_module, schema_name, instance):
    pm = pipeline_module
    translator = DagsterJoinflowTranslator(partition_attributes={"PeakSummary": "sample_id"})
    assets = build_joinflow_assets(pm.module, translator)
    specs = _specs(assets)
    pdef = specs[f"{schema_name}/PeakSummary"].partitions_def
    assert isinstance(pdef, dg.DynamicPartitionsDefinition)
    sensor = build_joinflow_sensor(assets)
    defs = dg.Definitions(assets=assets, sensors=[sensor], resources=_resources(pm))
    pm.add_runs({"S1": "plasma", "S2": "plasma"})
    for upstream in (pm.module.Acquisition, pm.module.Centroid, pm.module.DetectedPeaks):
        upstream.populate()
    ctx = dg.build_sensor_context(instance=instance, definitions=defs)
    result = sensor(ctx)
    [add] = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == ["S1", "S2"]
    by_partition = {r.partition_key: r for r in result.run_requests if r.partition_key}
    assert set(by_partition) == {"S1", "S2"}
    instance.add_dynamic_partitions(pdef.name, list(add.partition_keys))
    summary = next(a for a in assets if isinstance(a, dg.AssetsDefinition)
                   and dg.AssetKey([schema_name, "PeakSummary"]) in a.keys)
    run = dg.materialize([summary], instance=instance, resources=_resources(pm), partition_key="S1")
    assert run.success
    assert {r["sample_id"] for r in pm.module.PeakSummary().to_dicts()} == {"S1"}
    assert _materialization_metadata(run, f"{schema_name}/PeakSummary")["rows_added"] == 2
    again = sensor(dg.build_sensor_context(instance=instance, definitions=defs, cursor=result.cursor))
    assert [r.partition_key for r in again.run_requests if r.partition_key] == ["S2"]
    assert not again.dynamic_partitions_requests


def test_the_resource_refuses_a_step_bound_to_another_database(pipeline_module, tmp_path, instance):
    pm = pipeline_module
    assets = build_joinflow_assets(pm.module)
    other = {"joinflow": JoinflowResource(database_url=f"sqlite:///{tmp_path / 'elsewhere.db'}")}
    result = dg.materialize(assets, instance=instance, resources=other, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][:1]
    assert "JOINFLOW_DATABASE_URL" in failure.step_failure_data.user_failure_data.description


def test_the_example_definitions_validate(tmp_path):
    """`dagster definitions validate` loads examples/lcms/dagster_defs.py (SQLite in a temp dir)."""
    root = Path(__file__).resolve().parents[3]
    env = dict(os.environ, JOINFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'lcms.db'}", DAGSTER_HOME=str(tmp_path))
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "definitions", "validate", "-f", str(root / "examples/lcms/dagster_defs.py")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_a_selection_builds_only_the_selected_assets_with_their_settings(pipeline_module, schema_name):
    """select= / exclude=: only those tables are materializable, their upstream tables are external
    assets; a step's settings become its op's retry policy and tags; code versions cover make()."""
    s = schema_name
    assets = build_joinflow_assets(pipeline_module.module, select="DetectedPeaks+", exclude="RunQC",
                                   settings={"PeakSummary": {"retries": 2, "tags": ["heavy"]}})
    assert _materializable(assets) == {dg.AssetKey([s, "DetectedPeaks"]), dg.AssetKey([s, "PeakSummary"])}
    specs = _specs(assets)
    assert f"{s}/RunQC" not in specs  # downstream of the selection: not built
    assert {f"{s}/Centroid", f"{s}/Acquisition", f"{s}/Run"} <= set(specs)  # upstream: external, never computed
    summary = next(a for a in assets if isinstance(a, dg.AssetsDefinition) and dg.AssetKey([s, "PeakSummary"]) in a.keys)
    assert summary.op.retry_policy.max_retries == 2 and "heavy" in summary.op.tags
    peaks = next(a for a in assets if isinstance(a, dg.AssetsDefinition) and dg.AssetKey([s, "DetectedPeaks"]) in a.keys)
    assert peaks.op.retry_policy is None
    step = Pipeline(pipeline_module.module).step("PeakSummary")
    assert specs[f"{s}/PeakSummary"].code_version == step.code_version
    dg.Definitions.validate_loadable(dg.Definitions(assets=assets, resources=_resources(pipeline_module)))
