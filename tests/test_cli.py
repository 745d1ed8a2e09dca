"""The ``joinflow`` command line, through its real entry point (a subprocess per command).

Most commands run on SQLite; one status test runs on PostgreSQL and MySQL, and ``joinflow
copy`` moves the lcms example (plus a schema of blobs, in-table and hash-addressed in a
store) from SQLite to PostgreSQL and to MySQL.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import joinflow as dj
from joinflow import cli, testing

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENTRY = Path(sys.executable).with_name("joinflow")
COMMAND = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "joinflow.cli"]


def run(*args, env=None, cwd=None, input=None) -> subprocess.CompletedProcess:
    """``joinflow ARGS`` in a subprocess; stdin is not a terminal."""
    full_env = {k: v for k, v in os.environ.items() if k != "JOINFLOW_DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd,
                          input=input if input is not None else "", timeout=180)


def run_json(*args, code: int = 0, **kw):
    result = run(*args, "--json", **kw)
    assert result.returncode == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)


# -- a pipeline module on SQLite ----------------------------------------------------------------------
@pytest.fixture
def sqlite_pipeline(tmp_path, monkeypatch):
    name = testing.unique_schema_name("cli")
    module = testing.import_pipeline_module(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", name, monkeypatch)
    yield module
    module.close()


def test_help_and_bad_arguments(tmp_path, capsys):
    top = run("--help")
    assert top.returncode == 0
    for command in ("status", "populate", "jobs", "diagram", "schema", "gc", "copy", "manifest"):
        assert command in top.stdout
    for args in (["copy", "--help"], ["schema", "describe", "--help"], ["jobs", "--help"]):  # in-process: faster
        with pytest.raises(SystemExit) as exit_:
            cli.main(args)
        assert exit_.value.code == 0
    # argparse errors: exit 2, the usage on stderr, a JSON error document with --json
    bad = run("frobnicate")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    doc = run_json("copy", "--from", "sqlite:///x.db", "lab", code=2)
    assert "--to" in doc["error"] and doc["exit_code"] == 2
    # an unknown module names itself and the fix
    env = {"JOINFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    missing = run("status", "no_such_module", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "no_such_module" in missing.stderr and "PYTHONPATH" in missing.stderr
    doc = run_json("schema", "describe", "no_such_schema", code=2, env=env)
    assert "no_such_schema" in doc["error"] and "joinflow schema list" in doc["error"]
    assert cli.main(["--database-url", "not a url", "schema", "list"]) == 2
    assert "not a database URL" in capsys.readouterr().err
    assert cli.main(["diagram", "whatever", "-o", str(tmp_path / "x.txt")]) == 2
    assert ".svg, .png, .mmd" in capsys.readouterr().err


def test_status_populate_jobs(sqlite_pipeline):
    m = sqlite_pipeline
    m.add([1, 13], recs=range(2))  # animal 13 always fails in Spikes
    name = m.name
    status = run_json("status", name)
    by_table = {t["table"]: t for t in status["tables"]}
    assert by_table["Spikes"]["pending"] == 4 and by_table["Spikes"]["done"] == 0
    text = run("status", name)
    assert text.returncode == 0 and "Spikes" in text.stdout and "pending" in text.stdout
    assert cli.main(["status", f"{name}:Nope"]) == 2  # (in-process: the same parser, faster)

    # populate: errors recorded -> exit code 1, reported per table
    result = run_json("populate", name, code=1)
    spikes = next(t for t in result["tables"] if t["table"] == "Spikes")
    assert spikes["computed"] == 2 and len(spikes["errors"]) == 2
    assert all("unlucky animal" in e["error"] for e in spikes["errors"])
    assert result["error_count"] == 2
    assert cli.main(["populate", name, "--workers", "0"]) == 2

    # jobs: the error rows with their messages
    jobs = run_json("jobs", name, "--errors")
    assert sorted(j["key"]["rec"] for j in jobs["jobs"]) == [0, 1]
    assert all(j["status"] == "error" and "unlucky animal" in j["error_message"] for j in jobs["jobs"])
    listing = run("jobs", name, "--table", "Spikes", "--errors")
    assert listing.returncode == 0 and "unlucky animal" in listing.stdout
    assert cli.main(["jobs", name, "--all"]) == 2  # --all only with --clear

    # --clear asks first; without a terminal it refuses unless --yes, and deletes nothing
    refused = run("jobs", name, "--clear")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(m.Spikes.jobs.errors) == 2
    cleared = run_json("jobs", name, "--clear", "--yes")
    assert cleared["deleted"]["Spikes"] == 2 and cleared["total"] == 2
    assert len(m.Spikes.jobs.errors) == 0
    after = {t["table"]: t for t in run_json("status", name)["tables"]}
    assert after["Spikes"]["error"] == 0 and after["Spikes"]["pending"] == 2  # they will be retried


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_status_on_server(server, tmp_path, monkeypatch):
    url = testing.database_url(server, tmp_path)
    name = testing.unique_schema_name("cli")
    module = testing.import_pipeline_module(tmp_path, url, name, monkeypatch)
    try:
        module.add([1, 2], recs=range(1))
        module.Spikes.populate()
        tables = {t["table"]: t for t in run_json("status", module.name)["tables"]}
        assert tables["Spikes"]["done"] == 2 and tables["Summary"]["pending"] == 2
        # the schema is also a target by its name (tables read from the catalog)
        tables = {t["table"]: t for t in run_json("--database-url", url, "status", name)["tables"]}
        assert tables["Spikes"]["done"] == 2
    finally:
        module.close()
        testing.drop_schemas(url, [name])


def test_schema_list_and_describe(sqlite_pipeline):
    m = sqlite_pipeline
    url = m.connection.url.render_as_string(hide_password=False)
    schema = m.schema.database
    listed = run_json("schema", "list", "--database-url", url)
    assert schema in listed["schemas"]
    described = run_json("--database-url", url, "schema", "describe", schema)
    tables = {t["class"]: t for t in described["tables"]}
    assert {"Animal", "Recording", "Spikes", "Spikes.Unit", "Report"} <= set(tables)
    assert tables["Spikes"]["tier"] == "Computed" and "-> Recording" in tables["Spikes"]["definition"]
    text = run("--database-url", url, "schema", "describe", schema)
    assert text.returncode == 0
    assert "class Spikes(dj.Computed)" in text.stdout and "class Unit(dj.Part)" in text.stdout


def test_diagram(sqlite_pipeline, tmp_path):
    out = tmp_path / "pipeline.mmd"
    doc = run_json("diagram", sqlite_pipeline.name, "-o", out)
    assert out.exists() and doc["output"] == str(out.resolve())
    assert "Spikes" in out.read_text()
    assert run("diagram", sqlite_pipeline.name, "--status", "-o", tmp_path / "status.mmd").returncode == 0
    assert "Spikes" in (tmp_path / "status.mmd").read_text()


def test_manifest(sqlite_pipeline, tmp_path):
    """`joinflow manifest` writes what JoinflowDag(manifest=...) reads: the same steps, upstream
    steps and tables as the live pipeline, loadable without a database."""
    from joinflow.pipeline import Pipeline

    out = tmp_path / "pipeline.json"
    doc = run_json("manifest", sqlite_pipeline.name, "-o", out)
    live = Pipeline(sqlite_pipeline.module)
    offline = Pipeline.from_manifest(out)
    assert doc["steps"] == len(live.steps) > 0 and doc["hash"] == json.loads(out.read_text())["hash"]
    assert [s.name for s in offline.steps] == [s.name for s in live.steps]
    assert [s.upstream for s in offline.steps] == [s.upstream for s in live.steps]
    printed = run("manifest", sqlite_pipeline.name)  # -o - (default): the JSON on stdout
    assert printed.returncode == 0 and json.loads(printed.stdout)["hash"] == doc["hash"]
    missing = run("manifest", "no_such_module_xyz", "-o", tmp_path / "x.json", cwd=tmp_path)
    assert missing.returncode == 2 and "no_such_module_xyz" in missing.stderr
    assert not (tmp_path / "x.json").exists()


def test_gc(tmp_path):
    pytest.importorskip("joinflow.gc", reason="the garbage collector is not built yet")
    url, stores = f"sqlite:///{tmp_path / 'gc.db'}", _stores(tmp_path / "store")
    cfg = dj.config.copy()
    cfg.update({"stores": stores, "safemode": False})
    conn = dj.Connection(url=url, config=cfg)
    name = testing.unique_schema_name("gc")
    schema = dj.Schema(name, connection=conn)

    @schema
    class Image(dj.Manual):
        definition = """
        image_id : int32
        ---
        pixels : <blob@>
        """

    Image.insert([(1, np.zeros(50)), (2, np.ones(50))])
    (Image & {"image_id": 2}).delete()  # its object is now an orphan
    conn.close()
    env = {"DJ_STORES": json.dumps(stores), "JOINFLOW_DATABASE_URL": url}
    young = run_json("gc", "--dry-run", name, env=env)  # the orphan is younger than the grace period: kept
    assert young["hash_paths_orphaned"] == 0 and len(young["kept_paths"]) == 1 and young["grace_period"] == 3600
    dry = run_json("gc", "--dry-run", "--grace-period", "0", name, env=env)
    assert dry["hash_paths_stored"] == 2 and dry["hash_paths_orphaned"] == 1 and dry["deleted"] == 0
    refused = run("gc", "--grace-period", "0", name, env=env)  # deleting asks first; no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = run_json("gc", "--grace-period", "0", name, "--yes", env=env)
    assert done["deleted"] == 1
    assert len(list((tmp_path / "store" / "_hash" / name).iterdir())) == 1
    assert run("gc", "no_such_schema", env=env).returncode == 2


# -- joinflow copy ----------------------------------------------------------------------------------------
BUILD_SOURCE = '''
import sys
import numpy as np
import joinflow as dj
from joinflow.pipeline import Pipeline

dj.config["safemode"] = False
sys.path.insert(0, {examples!r})
from lcms import pipeline as p

p.Sample.insert([
    {{"sample_id": "S1", "organism": "human", "matrix": "plasma", "collected": "2024-03-01"}},
    {{"sample_id": "S2", "organism": "mouse", "matrix": "liver", "collected": None}},
    {{"sample_id": "S3", "organism": "yeast", "matrix": "culture", "collected": None}},
])
p.Run.insert([
    {{"sample_id": s, "run_idx": r, "ms": ms, "acquired": f"2024-03-0{{r}} 09:30:00", "polarity": pol}}
    for s, r, ms, pol in [("S1", 1, "orbi1", "positive"), ("S1", 2, None, "negative"),
                          ("S2", 1, "qtof1", "positive"), ("S3", 1, "orbi1", "negative")]
])
if hasattr(p.Run, "Spike"):
    p.Run.Spike.insert([dict(k, standard="caffeine", amount_pmol=2.5) for k in p.Run.keys()])
for step in Pipeline(p).steps:  # every computed table, parents first (blobs in the part tables)
    step.table.populate()

extra = dj.Schema("lcms_traces")


@extra
class Trace(dj.Manual):
    definition = """
    # raw traces of a run: blobs in the table and in the store
    -> p.Run
    trace : int16
    ---
    values : <blob>
    image : <blob@>
    raw = null : <hash@>
    """


@extra
class Export(dj.Manual):
    definition = """
    # schema-addressed objects: a .npy file per run, a folder or a file for some
    -> p.Run
    ---
    spectrum : <npy@>
    files = null : <object@>
    """


rng = np.random.default_rng(3)
import pathlib
folder = pathlib.Path("export")
(folder / "sub").mkdir(parents=True)
(folder / "a.txt").write_text("first")
(folder / "sub" / "b.bin").write_bytes(bytes(range(50)))
keys = p.Run.keys(order_by="KEY")
Export.insert([dict(k, spectrum=rng.normal(size=(3, 4)), files=[str(folder), b"plain bytes", None, None][i])
               for i, k in enumerate(keys)])
Trace.insert([dict(k, trace=t, values=rng.normal(size=t + 5), image=rng.integers(0, 255, (20, 30 + t)),
                   raw=bytes([t]) * 100 if t else None)
              for k in p.Run.keys() for t in range(3)])
'''


def _stores(path: Path) -> dict:
    return {"default": "main", "main": {"protocol": "file", "location": str(path)}}


@pytest.fixture(scope="module")
def lcms_source(tmp_path_factory):
    """The lcms example on SQLite, populated, with a schema of blobs that references it."""
    folder = tmp_path_factory.mktemp("lcms_source")
    db, store = folder / "lcms.db", folder / "store"
    env = {**os.environ, "JOINFLOW_DATABASE_URL": f"sqlite:///{db}", "DJ_STORES": json.dumps(_stores(store)),
           "LCMS_RAW_DIR": str(folder / "raw")}
    build = subprocess.run([sys.executable, "-c", BUILD_SOURCE.format(examples=str(EXAMPLES))], env=env,
                           cwd=folder, capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stderr
    (folder / "source.toml").write_text(f'[stores]\ndefault = "main"\nmain = {{ protocol = "file", '
                                        f'location = "{store}" }}\n')
    return {"url": f"sqlite:///{db}", "store": store, "config": folder / "source.toml"}


def _contents(ref):
    """What a fetched <npy@>/<object@> value holds: the array, the bytes, or {relative path: bytes}."""
    if hasattr(ref, "load"):
        return ref.load()
    if not ref.is_dir:
        return ref.read()
    return {f"{folder}/{name}".lstrip("/"): ref.open(f"{folder}/{name}".lstrip("/")).read()
            for folder, _, names in ref.walk() for name in names}


@functools.lru_cache(maxsize=None)
def _types(url: str, schema: str, table: str) -> dict[str, str]:
    with dj.Connection(url=url) as conn:
        return {a.name: a.type for a in dj.FreeTable(conn, conn.backend.full_table_name(schema, table)).heading}


def _rows(url: str, schema: str, stores: dict) -> dict[str, list[dict]]:
    cfg = dj.config.copy()
    cfg["stores"] = stores
    conn = dj.Connection(url=url, config=cfg)
    try:
        rows = {}
        for table in dj.virtual_schema(schema, connection=conn).schema.list_tables():
            free = dj.FreeTable(conn, conn.backend.full_table_name(schema, table))
            key = free.primary_key  # sorted here: collations order text differently
            rows[table] = sorted(free.to_dicts(), key=lambda r: [str(r[k]) for k in key])
        return rows
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_copy_sqlite_to_server(server, lcms_source, tmp_path):
    url = testing.database_url(server, tmp_path)
    lcms, traces = testing.unique_schema_name("cp_lcms"), testing.unique_schema_name("cp_traces")
    target_store = tmp_path / "target_store"
    target_cfg = tmp_path / "target.toml"
    target_cfg.write_text(f'[stores]\ndefault = "main"\nmain = {{ protocol = "file", location = "{target_store}" }}\n')
    args = ["copy", "--from", lcms_source["url"], "--to", url, f"lcms={lcms}", f"lcms_traces={traces}",
            "--from-config", lcms_source["config"], "--to-config", target_cfg]
    try:
        report = run_json(*args)
        assert report["schemas"] == {"lcms": lcms, "lcms_traces": traces}
        assert report["tables"] and all(t["source_rows"] == t["target_rows"] > 0 for t in report["tables"])
        # one image per trace; the raw bytes are the same in every run: stored once (hash-addressed);
        # four .npy files, one folder, one file (schema-addressed)
        assert report["objects_copied"] == 4 * 3 + 2 + 4 + 2

        source_stores, target_stores = _stores(lcms_source["store"]), _stores(target_store)
        for source_schema, target_schema in (("lcms", lcms), ("lcms_traces", traces)):
            before = _rows(lcms_source["url"], source_schema, source_stores)
            after = _rows(url, target_schema, target_stores)
            assert {t: len(r) for t, r in after.items()} == {t: len(r) for t, r in before.items()}
            for table, rows in before.items():
                for old, new in zip(rows, after[table]):
                    assert old.keys() == new.keys()
                    for name, value in old.items():
                        if hasattr(value, "to_json"):  # an object in the store: compare its contents
                            assert new[name].to_json()["path"].startswith(f"_schema/{target_schema}/")
                            value, new[name] = _contents(value), _contents(new[name])
                        if isinstance(value, np.ndarray):
                            assert new[name].dtype == value.dtype and np.array_equal(new[name], value), (table, name)
                        elif isinstance(value, float):
                            # float32 columns: MySQL returns FLOAT rounded to 6 significant digits
                            exact = _types(lcms_source["url"], source_schema, table)[name] != "float32"
                            assert new[name] == (value if exact else pytest.approx(value, rel=1e-5)), (table, name)
                        else:
                            assert new[name] == value, (table, name)
        # the objects now live in the target's store, under the new schema name
        assert len(list((target_store / "_hash" / traces).iterdir())) == 4 * 3 + 2
        assert len(list((target_store / "_schema" / traces).rglob("*.npy"))) == 4
        assert len(list((target_store / "_schema" / traces).rglob("*.manifest.json"))) == 1

        # again into the non-empty target: refused, and nothing changed
        again = run(*args)
        assert again.returncode == 1
        assert "already has data" in again.stderr and "never overwrites" in again.stderr
        counts = {t: len(r) for t, r in _rows(url, traces, target_stores).items()}
        assert counts == {"trace": 12, "export": 4}
        doc = run_json(*args, code=1)
        assert "already has data" in doc["error"]
    finally:
        testing.drop_schemas(url, [traces, lcms])


def test_copy_bad_input_changes_nothing(lcms_source, tmp_path):
    target = f"sqlite:///{tmp_path / 'target.db'}"
    # a referenced schema left out: named, with the fix
    alone = run("copy", "--from", lcms_source["url"], "--to", target, "lcms_traces")
    assert alone.returncode == 1 and "Add `lcms` to the schemas to copy" in alone.stderr
    # the target's configuration lacks the store the blobs live in
    no_store = run("copy", "--from", lcms_source["url"], "--to", target, "lcms", "lcms_traces",
                   "--from-config", lcms_source["config"], env={"DJ_STORES": "{}"})
    assert no_store.returncode == 1 and "target configuration" in no_store.stderr
    with dj.Connection(url=target) as conn:
        assert conn.backend.list_schemas(conn) == []
    # a dry run plans and changes nothing; then a real copy into SQLite
    plan = run_json("copy", "--from", lcms_source["url"], "--to", target, "lcms", "--dry-run")
    assert plan["dry_run"] and {t["table"].strip('"') for t in plan["tables"]} >= {"lcms.run", "lcms.sample"}
    copied = run_json("copy", "--from", lcms_source["url"], "--to", target, "lcms")
    assert all(t["source_rows"] == t["target_rows"] for t in copied["tables"])
    text = run("copy", "--from", lcms_source["url"], "--to", target, "lcms=lcms2")
    assert text.returncode == 0 and "row counts verified" in text.stdout


def test_copy_from_python(lcms_source, tmp_path):
    from joinflow.copy import CopyError, copy_schemas

    target = f"sqlite:///{tmp_path / 'py.db'}"
    report = copy_schemas(["lcms"], lcms_source["url"], target, progress=False)
    assert report.as_dict()["rows"] == sum(t["source_rows"] for t in report.tables) > 0
    with pytest.raises(CopyError, match="already has data"):
        copy_schemas({"lcms": "lcms"}, lcms_source["url"], target)
    with pytest.raises(CopyError, match="SOURCE=TARGET"):
        copy_schemas(["=x"], lcms_source["url"], target)
    with pytest.raises(CopyError, match="`nope` does not exist"):
        copy_schemas(["nope"], lcms_source["url"], target)


def test_copy_failure_leaves_target_as_it_was(lcms_source, tmp_path, monkeypatch):
    from joinflow import copy as copy_module

    target = f"sqlite:///{tmp_path / 'fail.db'}"
    calls = []
    real = copy_module._copy_table

    def failing(source, target_conn, plan, *args):
        calls.append(plan.table)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        yield from real(source, target_conn, plan, *args)

    monkeypatch.setattr(copy_module, "_copy_table", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        copy_module.copy_schemas(["lcms"], lcms_source["url"], target)
    with dj.Connection(url=target) as conn:
        assert conn.backend.list_schemas(conn) == []  # the schema it created is gone again
    # empty tables of the same heading that exist already are filled, not declared again
    monkeypatch.setattr(copy_module, "_copy_table", real)
    copy_module.copy_schemas(["lcms"], lcms_source["url"], target)
    with dj.Connection(url=target, config=dj.config.copy()) as conn:
        for table in reversed(dj.virtual_schema("lcms", connection=conn).schema.list_tables()):  # children first
            dj.FreeTable(conn, conn.backend.full_table_name("lcms", table)).delete_quick()
    report = copy_module.copy_schemas(["lcms"], lcms_source["url"], target)
    assert all(t["source_rows"] == t["target_rows"] for t in report.tables)
