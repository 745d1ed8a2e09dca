"""Pipeline selection (select= / exclude=), per-step settings and code versions.

Selection and settings are graph logic over the foreign keys: they run on SQLite here (fast);
running a selected pipeline on every backend is in tests/test_pipeline.py.
"""

import json
import subprocess
import sys

import pytest

from joinflow.errors import DataJointError
from joinflow.pipeline import Pipeline, manifest_main, read_manifest


@pytest.fixture(params=["sqlite"])
def backend(request):  # graph logic: one backend is enough
    return request.param


MODULE = '''
import joinflow as dj
config = dj.config.copy()
config["safemode"] = False
connection = dj.Connection(url={url!r}, config=config)
lab = dj.Schema({lab!r}, connection=connection)
report = dj.Schema({report!r}, connection=connection)

@lab
class Animal(dj.Manual):
    definition = """
    animal : int32
    """

@lab
class Recording(dj.Manual):
    definition = """
    -> Animal
    rec : int16
    ---
    signal : float64
    """

@lab
class Spikes(dj.Computed):
    definition = """
    -> Recording
    ---
    count : int32
    """

    class Unit(dj.Part):
        definition = """
        -> master
        unit : int16
        """

    def make(self, key):
        {make_body}

@lab
class Summary(dj.Computed):
    orchestration = {{"retries": 3, "pool": "db", "tags": ["nightly"]}}
    definition = """
    -> Spikes
    ---
    units : int32
    """

    def make(self, key):
        self.insert1(dict(key, units=len(Spikes.Unit & key)))

@lab
class Weight(dj.Computed):
    definition = """
    -> Animal
    ---
    grams : float64
    """

    def make(self, key):
        self.insert1(dict(key, grams=1.0))

@report
class Report(dj.Computed):
    definition = """
    -> Summary
    ---
    text : varchar(32)
    """

    def make(self, key):
        self.insert1(dict(key, text="ok"))
'''

MAKE = 'self.insert1(dict(key, count=int((Recording & key).fetch1("signal"))))'


def write_module(tmp_path, monkeypatch, connection, name, lab, report, make_body=MAKE):
    url = connection.url.render_as_string(hide_password=False)
    (tmp_path / f"{name}.py").write_text(MODULE.format(url=url, lab=lab, report=report, make_body=make_body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return __import__(name)


@pytest.fixture
def lab_module(tmp_path, connection, schema_names, monkeypatch):
    lab, report = schema_names(), schema_names()
    name = f"jf_select_{lab}"
    module = write_module(tmp_path, monkeypatch, connection, name, lab, report)
    module.schemas = (lab, report)
    yield module
    module.connection.close()
    sys.modules.pop(name, None)


def names(pipe):
    return {s.class_name for s in pipe.steps}


def upstream(pipe, step):
    return [u.rpartition(":")[2] for u in pipe.step(step).upstream]


def test_select_with_ancestors_descendants_schemas_and_tiers(lab_module):
    m = lab_module
    lab, report = m.schemas
    full = Pipeline(m)
    assert names(full) == {"Spikes", "Weight", "Summary", "Report"}

    only = Pipeline(m, select="Summary")
    assert names(only) == {"Summary"} and only.step("Summary").upstream == []
    nodes = {n.class_name: n for n in only.nodes}
    assert set(nodes) == {"Animal", "Recording", "Spikes", "Unit", "Summary"}  # its inputs stay, as sources
    assert nodes["Spikes"].external and not nodes["Spikes"].is_step and not nodes["Summary"].external
    assert [n.class_name for n in full.nodes if n.external] == []

    assert names(Pipeline(m, select="+Summary")) == {"Spikes", "Summary"}
    assert names(Pipeline(m, select="Spikes+")) == {"Spikes", "Summary", "Report"}
    assert names(Pipeline(m, select=["Weight", "Report"])) == {"Weight", "Report"}
    assert names(Pipeline(m, select="Weight Report")) == {"Weight", "Report"}  # space: union
    assert names(Pipeline(m, select=f"schema:{report}")) == {"Report"}
    assert names(Pipeline(m, select=f"tier:computed,schema:{lab}")) == {"Spikes", "Weight", "Summary"}
    assert names(Pipeline(m, select="Spikes.Unit")) == {"Spikes"}  # a part goes with its master
    assert names(Pipeline(m, select=f"{m.__name__}:Weight")) == {"Weight"}
    assert names(Pipeline(m, exclude="Summary+")) == {"Spikes", "Weight"}
    # excluding a step in the middle: Report still waits for Spikes (through the external Summary)
    middle = Pipeline(m, select="tier:computed", exclude="Summary")
    assert names(middle) == {"Spikes", "Weight", "Report"} and upstream(middle, "Report") == ["Spikes"]
    assert [n.class_name for n in middle.nodes if n.external] == ["Summary"]
    # a selection leaves the whole pipeline unchanged, and runs only its steps
    assert names(full.subset(select="Weight")) == {"Weight"} and names(full) == names(Pipeline(m))


def test_bad_selectors_are_clear_errors(lab_module):
    m = lab_module
    with pytest.raises(DataJointError, match=r"select='\+Spikez': 'Spikez' names no table.*Close matches: .*Spikes"):
        Pipeline(m, select="+Spikez")
    with pytest.raises(DataJointError, match=r"exclude='Sumary'.*Close matches: .*Summary"):
        Pipeline(m, exclude=["Sumary"])
    with pytest.raises(DataJointError, match="unknown tier 'computd'; tiers are lookup, manual, imported, computed"):
        Pipeline(m, select="tier:computd")
    with pytest.raises(DataJointError, match=r"'schema:nope' names no table"):
        Pipeline(m, select="schema:nope")
    with pytest.raises(DataJointError, match="selects no Imported or Computed table: nothing would be computed"):
        Pipeline(m, select="tier:manual")
    with pytest.raises(DataJointError, match="selects no Imported or Computed table"):
        Pipeline(m, exclude="*")
    with pytest.raises(DataJointError, match="select= must be a selector string or a list"):
        Pipeline(m, select=5)
    with pytest.raises(DataJointError, match="empty selector"):
        Pipeline(m, select="")
    with pytest.raises(DataJointError, match="already a selection"):
        Pipeline(m, select="Summary").subset(select="Summary")


def test_selection_from_a_manifest_and_recorded_in_it(lab_module, tmp_path):
    m = lab_module
    path = tmp_path / "pipeline.json"
    whole = Pipeline(m).write_manifest(path)
    assert "selection" not in whole
    live = Pipeline(m, select="+Summary", exclude="Spikes")
    built = Pipeline.from_manifest(path, select="+Summary", exclude="Spikes")
    assert names(built) == names(live) == {"Summary"}
    assert [(n.name, n.external) for n in built.nodes] == [(n.name, n.external) for n in live.nodes]
    manifest = built.to_manifest()
    assert manifest == live.to_manifest()
    assert manifest["selection"] == {"select": ["+Summary"], "exclude": ["Spikes"]}
    assert manifest["database"] == whole["database"]
    assert [t["name"].rpartition(":")[2] for t in manifest["tables"] if t.get("external")] == ["Spikes", "Spikes.Unit"]
    again = Pipeline.from_manifest(manifest)  # a selected manifest rebuilds the same selection
    assert names(again) == {"Summary"} and again.selection == manifest["selection"]
    assert again.to_manifest() == manifest
    with pytest.raises(DataJointError, match="already a selection"):
        Pipeline.from_manifest(manifest, select="Summary")
    out = tmp_path / "selected.json"
    assert manifest_main(["manifest", m.__name__, "-o", str(out), "--select", "+Summary", "--exclude", "Spikes"]) == 0
    assert read_manifest(out) == manifest
    assert manifest_main(["manifest", m.__name__, "-o", str(out), "--select", "Nope"]) == 2
    assert read_manifest(out) == manifest  # the failed run left the file alone
    from joinflow import cli

    out2 = tmp_path / "cli.json"  # `joinflow manifest` takes the same options
    assert cli.main(["manifest", m.__name__, "-o", str(out2), "--select", "+Summary", "--exclude", "Spikes"]) == 0
    assert read_manifest(out2) == manifest
    assert cli.main(["manifest", m.__name__, "-o", str(out2), "--exclude", "Sumary"]) != 0
    assert read_manifest(out2) == manifest


def test_per_step_settings(lab_module, tmp_path):
    m = lab_module
    pipe = Pipeline(m)
    assert pipe.step("Summary").settings == {"retries": 3, "pool": "db", "tags": ["nightly"]}  # class attribute
    assert pipe.step("Spikes").settings == {}
    tuned = Pipeline(m, settings={"*": {"retries": 1}, "tier:computed": {"timeout": 600},
                                  "Summary": {"pool": "big", "batch_size": 10, "airflow.priority_weight": 5}})
    assert tuned.step("Spikes").settings == {"retries": 1, "timeout": 600}
    assert tuned.step("Summary").settings == {"retries": 1, "pool": "big", "tags": ["nightly"], "timeout": 600,
                                              "batch_size": 10, "airflow.priority_weight": 5}
    manifest = tuned.to_manifest()
    assert {s["name"].rpartition(":")[2]: s.get("settings") for s in manifest["steps"]}["Summary"] == \
        tuned.step("Summary").settings
    rebuilt = Pipeline.from_manifest(manifest, settings={"Spikes": {"queue": "gpu"}})
    assert rebuilt.step("Spikes").settings == {"retries": 1, "timeout": 600, "queue": "gpu"}
    assert rebuilt.step("Summary").settings == tuned.step("Summary").settings
    assert pipe.step("Summary").settings["retries"] == 3  # settings= changed a copy, not this pipeline

    with pytest.raises(DataJointError, match=r"Unknown setting 'retires' of settings\['Spikes'\]\. "
                                             r"Did you mean 'retries'\?"):
        Pipeline(m, settings={"Spikes": {"retires": 2}})
    with pytest.raises(DataJointError, match=r"Setting 'retries' of settings\['Spikes'\] must be an integer >= 0 .*, "
                                             r"not -1"):
        Pipeline(m, settings={"Spikes": {"retries": -1}})
    with pytest.raises(DataJointError, match="'Spikez' names no table"):
        Pipeline(m, settings={"Spikez": {"retries": 2}})
    m.Weight.orchestration = {"timeout": "soon"}
    try:
        with pytest.raises(DataJointError, match=r"Setting 'timeout' of .*:Weight \(orchestration attribute\) "
                                                 r"must be a number of seconds > 0 .*, not 'soon'"):
            Pipeline(m).step("Weight").settings
    finally:
        del m.Weight.orchestration


CODE_VERSION = """
import json, sys
sys.path.insert(0, sys.argv[1])
from joinflow.pipeline import Pipeline
m = __import__(sys.argv[2])
print(json.dumps({s.class_name: s.code_version for s in Pipeline(m).steps}))
"""


def test_code_version_covers_make_and_is_stable_across_processes(lab_module, tmp_path, monkeypatch, connection,
                                                                 schema_names):
    m = lab_module
    lab, report = m.schemas
    pipe = Pipeline(m)
    versions = {s.class_name: s.code_version for s in pipe.steps}
    assert len(set(versions.values())) == 4 and all(len(v) == 16 for v in versions.values())
    assert {t["name"].rpartition(":")[2]: t["code_version"] for t in pipe.to_manifest()["tables"]}["Spikes"] == \
        versions["Spikes"]
    assert Pipeline.from_manifest(pipe.to_manifest()).step("Spikes").code_version == versions["Spikes"]
    # the same code in another process: the same versions
    proc = subprocess.run([sys.executable, "-c", CODE_VERSION, str(tmp_path), m.__name__], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == versions
    # only Spikes' make() changes (same definition): only its version changes
    changed = write_module(tmp_path, monkeypatch, connection, f"{m.__name__}_v2", lab, report,
                           make_body="self.insert1(dict(key, count=0))")
    try:
        again = {s.class_name: s.code_version for s in Pipeline(changed).steps}
        assert again["Spikes"] != versions["Spikes"]
        assert {k: v for k, v in again.items() if k != "Spikes"} == {k: v for k, v in versions.items() if k != "Spikes"}
    finally:
        changed.connection.close()
        sys.modules.pop(changed.__name__, None)
