"""JoinflowPipelineComponent: defs.yaml -> assets, through Dagster's component harness and the dg CLI."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox
from joinflow.pipeline import Pipeline

from dagster_joinflow import JoinflowPipelineComponent

STEPS = ("Acquisition", "Centroid", "DetectedPeaks", "PeakSummary", "RunQC")
SOURCES = ("Instrument", "Standard", "Sample", "Run")


def test_component_from_defs_yaml_builds_and_materializes_the_pipeline(pipeline_module, schema_name, instance):
    pm = pipeline_module
    pm.add_runs({"S1": "plasma", "S2": "urine"})
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(JoinflowPipelineComponent, defs_path="lab",
                                          scaffold_params={"module": pm.name})
        scaffolded = yaml.safe_load((path / "defs.yaml").read_text())
        assert scaffolded == {"type": "dagster_joinflow.component.JoinflowPipelineComponent",
                              "attributes": {"module": pm.name, "database_url_env": "JOINFLOW_DATABASE_URL"}}
        (path / "defs.yaml").write_text(yaml.safe_dump({
            "type": "dagster_joinflow.JoinflowPipelineComponent",
            "attributes": {"module": pm.name, "database_url": pm.url, "key_prefix": ["lab"],
                           "group_name": "lcms", "owners": ["team:ms"], "sensor": True,
                           "shards": {"RunQC": 2}},
        }))
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, JoinflowPipelineComponent)
            specs = {s.key: s for s in defs.resolve_all_asset_specs()}
            assert set(specs) == {dg.AssetKey(["lab", schema_name, t]) for t in STEPS + SOURCES}
            assert {s.group_name for s in specs.values()} == {"lcms"}
            assert {d.asset_key for d in specs[dg.AssetKey(["lab", schema_name, "Acquisition"])].deps} == {
                dg.AssetKey(["lab", schema_name, "Run"])}
            assert [s.name for s in defs.sensors] == ["joinflow_sensor"]
            runqc = defs.get_assets_def(dg.AssetKey(["lab", schema_name, "RunQC"]))
            assert f"{schema_name}__RunQC__shard" in runqc.node_def.node_names()  # shards from defs.yaml
            job = defs.resolve_implicit_global_asset_job_def()
            result = job.execute_in_process(instance=instance)
    assert result.success
    assert len(pm.module.RunQC()) == 4 and len(pm.make_calls()) == 4
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey(["lab", schema_name, t]) for t in STEPS}


def test_component_from_a_manifest_relative_to_defs_yaml(pipeline_module, schema_name):
    pm = pipeline_module
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(JoinflowPipelineComponent, defs_path="lab",
                                          scaffold_params={"manifest": "pipeline.json"})
        Pipeline(pm.module).write_manifest(path / "pipeline.json")
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            keys = {s.key for s in defs.resolve_all_asset_specs()}
    assert keys == {dg.AssetKey([schema_name, t]) for t in STEPS + SOURCES}


def test_component_selects_tables_from_defs_yaml(pipeline_module, schema_name):
    import inspect

    from dagster_joinflow import build_joinflow_assets

    if "select" not in inspect.signature(build_joinflow_assets).parameters:
        pytest.skip("build_joinflow_assets has no selection here (it comes with joinflow's pipeline selection)")
    pm = pipeline_module
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(JoinflowPipelineComponent, defs_path="lab", defs_yaml_contents={
            "type": "dagster_joinflow.JoinflowPipelineComponent",
            "attributes": {"module": pm.name, "database_url": pm.url, "select": "PeakSummary"}})
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            materializable = {k for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable
                              for k in a.keys}
    assert materializable == {dg.AssetKey([schema_name, "PeakSummary"])}


def test_component_needs_exactly_one_pipeline_source():
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(JoinflowPipelineComponent, defs_path="lab",
                                          defs_yaml_contents={"type": "dagster_joinflow.JoinflowPipelineComponent",
                                                              "attributes": {}})
        with pytest.raises(Exception) as raised:
            with sandbox.load_component_and_build_defs(defs_path=path):
                pass
    chain, exc = [], raised.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("give exactly one of 'module'" in text and "'manifest'" in text for text in chain), chain


DG_PYPROJECT = textwrap.dedent('''
    [project]
    name = "jfproj"
    version = "0.1.0"
    requires-python = ">=3.10"

    [tool.dg]
    directory_type = "project"

    [tool.dg.project]
    root_module = "jfproj"
''')

DG_DEFINITIONS = textwrap.dedent('''
    from pathlib import Path

    import dagster as dg


    @dg.definitions
    def defs() -> dg.Definitions:
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
''')


@pytest.mark.parametrize("backend", ["sqlite"])  # the CLI, not the backend, is under test (~10 s a run)
def test_dg_scaffold_and_list_defs(tmp_path, pipeline_module, schema_name, database_url):
    """`dg scaffold defs dagster_joinflow.JoinflowPipelineComponent` then `dg list defs --json` (the dg CLI)."""
    dg_cli = Path(sys.executable).with_name("dg")
    if not dg_cli.exists():
        if os.environ.get("CI"):
            pytest.fail(f"the dg CLI is not installed next to {sys.executable}: "
                        "integrations/dagster/requirements-test.txt installs dagster-dg-cli")
        pytest.skip("dagster-dg-cli not installed in this venv")
    pm = pipeline_module
    project = tmp_path / "jfproj"
    (project / "src" / "jfproj" / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(DG_PYPROJECT)
    (project / "src" / "jfproj" / "__init__.py").write_text("")
    (project / "src" / "jfproj" / "defs" / "__init__.py").write_text("")
    (project / "src" / "jfproj" / "definitions.py").write_text(DG_DEFINITIONS)
    paths = [str(project / "src"), str(pm.path)] + [p for p in sys.path if p and "site-packages" not in p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), JOINFLOW_DATABASE_URL=database_url,
               VIRTUAL_ENV=str(Path(sys.executable).parent.parent), DAGSTER_HOME=str(tmp_path),
               PATH=os.pathsep.join([str(dg_cli.parent), os.environ.get("PATH", "")]))

    def run(*args):
        proc = subprocess.run([str(dg_cli), *args], cwd=project, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    run("scaffold", "defs", "dagster_joinflow.JoinflowPipelineComponent", "lab", "--module", pm.name)
    assert yaml.safe_load((project / "src/jfproj/defs/lab/defs.yaml").read_text())["attributes"]["module"] == pm.name
    listed = json.loads(run("list", "defs", "--json"))
    keys = {a["asset_key"] for a in listed["assets"]}
    assert keys == {f"{schema_name}/{t}" for t in STEPS + SOURCES}
    checks = {c["key"] for c in listed["asset_checks"]}
    assert checks == {f"{schema_name}/{t}:no_job_errors" for t in STEPS}
