"""An interrupted ``joinflow copy`` is visible, resumable and removable, with its objects.

The copy writes a ``~copy`` marker into each target schema first and drops it last; it records
each object before writing it.  A kill midway is simulated in-process (the clean-up that a
caught error runs is switched off, as a kill skips it) and, once, by a real SIGKILL of a
subprocess.  SQLite -> PostgreSQL and PostgreSQL -> MySQL; local and S3 (moto) stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest

import joinflow as dj
from joinflow import copy as copy_module
from joinflow import storage, testing
from joinflow.copy import CopyError, copy_schemas, discard_copy, incomplete_copy

BUCKET = "joinflow-copy-resume"


class Killed(BaseException):
    """Stands for the process being killed: nothing after it runs."""


def _config(spec: dict):
    cfg = dj.config.copy()
    cfg["safemode"] = False
    cfg["stores"] = {"default": "main", "main": spec}
    return cfg


def _files(store) -> list[str]:
    """Every file under the store's root (relative paths)."""
    store.fs.invalidate_cache()
    root = store.full_path("").rstrip("/")
    if not store.fs.exists(root):
        return []
    return sorted(p[len(root) + 1:] for p in store.fs.find(root))


def _build_source(url: str, cfg, name: str) -> None:
    conn = dj.Connection(url=url, config=cfg)
    schema = dj.Schema(name, connection=conn)

    @schema
    class Subject(dj.Manual):
        definition = """
        subject_id : int32
        ---
        subject_name : varchar(20)
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session_id : int32
        ---
        raw : <blob@>
        obj = null : <object@>
        """

    Subject.insert([{"subject_id": i, "subject_name": f"s{i}"} for i in range(3)])
    Session.insert([{"subject_id": i % 3, "session_id": i, "raw": np.arange(i + 3), "obj": f"object {i}".encode()}
                    for i in range(5)])
    conn.close()


def _interrupt_after(monkeypatch, batches: int) -> None:
    """The next copy dies after ``batches`` batches of rows, leaving what it wrote."""
    real = copy_module._copy_table
    done = [0]

    def dying(*args, **kwargs):
        for n in real(*args, **kwargs):
            yield n
            done[0] += 1
            if done[0] == batches:
                raise Killed()

    monkeypatch.setattr(copy_module, "_copy_table", dying)
    monkeypatch.setattr(copy_module, "_undo", lambda *a, **k: None)  # a killed process cleans nothing up


def _restore(monkeypatch) -> None:
    monkeypatch.undo()


def _sessions(url: str, cfg, name: str) -> dict:
    with dj.Connection(url=url, config=cfg) as conn:
        module = dj.virtual_schema(name, connection=conn)
        return {r["session_id"]: (list(r["raw"]), r["obj"].read()) for r in module.Session.to_dicts()}


@pytest.mark.parametrize("store_kind", ["file", "s3"])
@pytest.mark.parametrize("pair", [("sqlite", "postgresql"), ("postgresql", "mysql")], ids=lambda p: "-to-".join(p))
def test_an_interrupted_copy_is_visible_resumable_and_removable(pair, store_kind, tmp_path, monkeypatch, request):
    source_url = testing.database_url(pair[0], tmp_path)
    target_url = testing.database_url(pair[1], tmp_path / "target")
    (tmp_path / "target").mkdir(exist_ok=True)
    if store_kind == "file":
        source_spec = {"protocol": "file", "location": str(tmp_path / "source_store")}
        target_spec = {"protocol": "file", "location": str(tmp_path / "target_store")}
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        base = {"protocol": "s3", "endpoint": endpoint, "bucket": BUCKET, "access_key": "testing",
                "secret_key": "testing", "secure": False}
        source_spec = {**base, "location": f"src-{uuid.uuid4().hex[:8]}"}
        target_spec = {**base, "location": f"tgt-{uuid.uuid4().hex[:8]}"}
    source_cfg, target_cfg = _config(source_spec), _config(target_spec)
    target_store = storage.get_store(target_cfg, "main")
    if store_kind == "s3" and not target_store.fs.exists(BUCKET):
        target_store.fs.mkdir(BUCKET)
    name = testing.unique_schema_name("cpsrc")
    resumed, discarded, dropped = (testing.unique_schema_name(p) for p in ("cpres", "cpdis", "cpdrop"))
    _build_source(source_url, source_cfg, name)
    kw = dict(source_config=source_cfg, target_config=target_cfg, progress=False, batch_size=2)
    try:
        expected = _sessions(source_url, source_cfg, name)
        # killed in the middle of the second table: 3 subjects (2 batches), 2 of 5 sessions (1 batch)
        _interrupt_after(monkeypatch, 3)
        with pytest.raises(Killed):
            copy_schemas({name: resumed}, source_url, target_url, **kw)
        _restore(monkeypatch)
        with dj.Connection(url=target_url, config=target_cfg) as conn:
            info = incomplete_copy(conn, resumed)
            assert info is not None and info["schemas"] == {name: resumed} and name in json.dumps(info)
            module = dj.virtual_schema(resumed, connection=conn)
            assert len(module.Subject()) == 3 and len(module.Session()) == 2
        # a copy into it again says what it is and how to get out; it changes nothing
        with pytest.raises(CopyError, match="incomplete copy from .*--resume.*--discard"):
            copy_schemas({name: resumed}, source_url, target_url, **kw)
        with pytest.raises(CopyError, match="same schema arguments"):
            copy_schemas({name: resumed, "other": "x"}, source_url, target_url, resume=True, **kw)
        report = copy_schemas({name: resumed}, source_url, target_url, resume=True, **kw)
        assert report.resumed and all(t["source_rows"] == t["target_rows"] for t in report.tables)
        assert _sessions(target_url, target_cfg, resumed) == expected
        with dj.Connection(url=target_url, config=target_cfg) as conn:
            assert incomplete_copy(conn, resumed) is None  # complete: the marker is gone
        with pytest.raises(CopyError, match="Nothing to resume"):
            copy_schemas({name: resumed}, source_url, target_url, resume=True, **kw)
        kept = _files(target_store)

        # interrupted again, into another schema: discarding removes its tables and the objects it wrote
        _interrupt_after(monkeypatch, 3)
        with pytest.raises(Killed):
            copy_schemas({name: discarded}, source_url, target_url, **kw)
        _restore(monkeypatch)
        written = [f for f in _files(target_store) if f not in kept]
        assert any(f"/{discarded}/" in f for f in written) and len(written) >= 2
        with pytest.raises(CopyError, match="holds no incomplete copy"):
            discard_copy([resumed], target_url, target_config=target_cfg)  # a complete schema is not touched
        done = discard_copy({name: discarded}, target_url, target_config=target_cfg)
        assert done["objects_removed"] >= 2
        assert _files(target_store) == kept
        with dj.Connection(url=target_url, config=target_cfg) as conn:
            assert not conn.backend.schema_exists(conn, discarded)

        if store_kind == "s3":  # the same removal as --discard: once is enough (moto is slow)
            return
        # and dropping an incomplete target by hand removes its objects too
        _interrupt_after(monkeypatch, 3)
        with pytest.raises(Killed):
            copy_schemas({name: dropped}, source_url, target_url, **kw)
        _restore(monkeypatch)
        assert _files(target_store) != kept
        with dj.Connection(url=target_url, config=target_cfg) as conn:
            dj.Schema(dropped, connection=conn).drop(prompt=False)
        assert _files(target_store) == kept
        assert _sessions(target_url, target_cfg, resumed) == expected  # the complete copy is untouched
    finally:
        testing.drop_schemas(target_url, [resumed, discarded, dropped])
        testing.drop_schemas(source_url, [name])


def test_a_copy_killed_by_sigkill_is_reported_and_resumed(tmp_path):
    """A real SIGKILL of a ``joinflow copy`` process (SQLite -> PostgreSQL), then the command line."""
    from test_cli import run

    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    target_url = testing.database_url("postgresql", tmp_path)
    source_spec = {"protocol": "file", "location": str(tmp_path / "source_store")}
    target_spec = {"protocol": "file", "location": str(tmp_path / "target_store")}
    for path, spec in (("from.toml", source_spec), ("to.toml", target_spec)):
        (tmp_path / path).write_text(f'[stores]\ndefault = "main"\nmain = {{ protocol = "file", '
                                     f'location = "{spec["location"]}" }}\n')
    name, copied = testing.unique_schema_name("cpkill"), testing.unique_schema_name("cpkilled")
    _build_source(source_url, _config(source_spec), name)
    script = f"""
import os, signal, sys
import joinflow as dj
from joinflow import copy as c
real = c._copy_table
batches = [0]
def dying(*args, **kwargs):
    for n in real(*args, **kwargs):
        yield n
        batches[0] += 1
        if batches[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
c._copy_table = dying
cfg = dj.config.copy()
cfg["stores"] = {{"default": "main", "main": {target_spec!r}}}
src = dj.config.copy()
src["stores"] = {{"default": "main", "main": {source_spec!r}}}
c.copy_schemas({{{name!r}: {copied!r}}}, {source_url!r}, {target_url!r}, source_config=src, target_config=cfg,
               progress=False, batch_size=2)
"""
    try:
        killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        args = ["copy", "--from", source_url, "--to", target_url, f"{name}={copied}", "--from-config",
                tmp_path / "from.toml", "--to-config", tmp_path / "to.toml", "--batch-size", "2"]
        again = run(*args)
        assert again.returncode == 1 and "incomplete copy" in again.stderr and "--resume" in again.stderr
        status = run("status", copied, "--database-url", target_url)
        assert status.returncode == 0 and "incomplete copy" in status.stderr, status.stderr
        populate = run("populate", copied, "--database-url", target_url)
        assert populate.returncode == 1 and "nothing computed" in populate.stderr, populate.stderr
        resumed = run(*args, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert "finished the interrupted copy" in resumed.stdout and "row counts verified" in resumed.stdout
        assert _sessions(target_url, _config(target_spec), copied) == _sessions(source_url, _config(source_spec), name)
        with dj.Connection(url=target_url, config=_config(target_spec)) as conn:
            assert incomplete_copy(conn, copied) is None
    finally:
        testing.drop_schemas(target_url, [copied])
