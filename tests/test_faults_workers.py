"""Worker processes of populate(processes=N) and the job table, under faults.

- SIGTERM to the parent stops its workers: their keys are rolled back and given back.
- A worker that dies (SIGKILL, out of memory) is a failure naming the keys it held, never
  "0 computed, 0 errors": populate() raises, or lists them with suppress_errors=True, and
  ``joinflow populate --workers N`` exits 1 naming them.
- Primary-key attributes named like the job table's own columns (``status``, ``version``,
  ``host``, ...) work with reserve_jobs, Table.jobs and the CLI.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import joinflow as dj
from joinflow.errors import WorkerDiedError
from joinflow.jobs import JOB_COLUMNS

from joinflow import cli

# every column of DataJoint's job table, as primary-key attributes of one table
COLLIDING = "\n".join(f"{name} : int32" for name in JOB_COLUMNS)


def wait_until(predicate, what: str, limit: float = 60.0):
    """Poll ``predicate`` until it is true (``limit`` only keeps a broken run from hanging)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().split(") ", 1)[1].split()[1]) == pid:
                        found.add(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has stopped computing
    except FileNotFoundError:
        return False


CHILD = '''
import sys, time
import joinflow as dj

config = dj.config.copy()
config["safemode"] = False
config["jobs.lease_timeout"] = 600  # a key given back is pending at once, not because its lease ran out
connection = dj.Connection(url={url!r}, config=config)
schema = dj.Schema({schema!r}, connection=connection)


@schema
class Item(dj.Manual):
    definition = """
    item : int32
    """


@schema
class Slow(dj.Computed):
    definition = """
    -> Item
    ---
    value : int32
    """

    def make(self, key):
        self.insert1(dict(key, value=1))  # inserted, then the make goes on: the rollback must remove it
        time.sleep(120)


Slow.populate(reserve_jobs=True, processes=2)
'''


def test_sigterm_to_parent_stops_workers(connection, schema, schema_name, backend, tmp_path):
    @schema
    class Item(dj.Manual):
        definition = """
        item : int32
        """

    @schema
    class Slow(dj.Computed):
        definition = """
        -> Item
        ---
        value : int32
        """

        def make(self, key):  # pragma: no cover - made by the child's workers only
            raise AssertionError

    Item.insert([{"item": i} for i in range(4)])
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(url=connection.url.render_as_string(hide_password=False), schema=schema_name))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    pids: set[int] = set()
    try:
        jobs = Slow.jobs
        computing = 1 if backend == "sqlite" else 2  # SQLite: one make at a time (BEGIN IMMEDIATE)
        wait_until(lambda: len(jobs.reserved) == computing, "the workers computing")
        pids = wait_until(lambda: len(children(child.pid)) == 2 and children(child.pid), "two workers")
        assert {r["pid"] for r in jobs.reserved.to_dicts()} <= pids
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        assert child.returncode != 0  # stopped, not finished
        wait_until(lambda: not any(alive(pid) for pid in pids), "the workers to stop", limit=30)
    finally:
        for pid in [child.pid, *pids]:  # a failed run must not leave processes that hold locks
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        child.wait()
    assert len(Slow()) == 0  # the rolled-back make left nothing
    assert len(jobs.reserved) == 0
    assert sorted(r["item"] for r in jobs.pending.to_dicts()) == [0, 1, 2, 3]  # claimable again at once


def declare_killer(schema, parent_pid: int):
    @schema
    class Item(dj.Manual):
        definition = """
        item : int32
        """

    @schema
    class Fragile(dj.Computed):
        definition = """
        -> Item
        ---
        value : int32
        """

        def make(self, key):
            if key["item"] == 3 and os.getpid() != parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
            self.insert1(dict(key, value=key["item"]))

    return Item, Fragile


def test_dead_worker_is_a_failure_with_its_keys(schema, backend):
    Item, Fragile = declare_killer(schema, os.getpid())
    Item.insert([{"item": i} for i in range(6)])
    result = Fragile.populate(reserve_jobs=True, processes=2, suppress_errors=True)
    assert result["success_count"] == 5
    assert [key for key, _ in result["error_list"]] == [{"item": 3}]
    message = result["error_list"][0][1]
    assert "died" in message and "SIGKILL" in message
    assert sorted(r["item"] for r in Fragile.to_dicts()) == [0, 1, 2, 4, 5]
    errors = Fragile.jobs.errors.to_dicts()
    assert [e["item"] for e in errors] == [3] and "SIGKILL" in errors[0]["error_message"]
    assert len(Fragile.jobs.reserved) == 0

    # without suppress_errors: an exception naming the key
    Fragile.jobs.errors.delete()
    with pytest.raises(WorkerDiedError, match=r"'item': 3"):
        Fragile.populate(reserve_jobs=True, processes=2)
    assert [e["item"] for e in Fragile.jobs.errors.to_dicts()] == [3]
    assert sorted(r["item"] for r in Fragile.to_dicts()) == [0, 1, 2, 4, 5]


def test_job_columns_as_key_attributes(schema, backend):
    @schema
    class Source(dj.Manual):
        definition = COLLIDING

    @schema
    class Derived(dj.Computed):
        definition = """
        -> Source
        ---
        out : int32
        """

        def make(self, key):
            if key["status"] == 2:
                raise ValueError("status two fails")
            self.insert1(dict(key, out=key["version"] + key["host"]))

    rows = [{name: i + j for j, name in enumerate(JOB_COLUMNS)} for i in range(3)]
    Source.insert(rows)
    result = Derived.populate(reserve_jobs=True, suppress_errors=True)
    assert result["success_count"] == 2 and len(result["error_list"]) == 1
    assert sorted(r["status"] for r in Derived.to_dicts()) == [0, 1]
    jobs = Derived.jobs
    assert set(JOB_COLUMNS) <= set(jobs.heading.primary_key)  # the key keeps its names
    assert jobs.cols.status == "job_status" and jobs.cols.version == "job_version"
    errors = jobs.errors.to_dicts()
    assert len(errors) == 1 and errors[0]["status"] == 2 and errors[0]["version"] == 2 + JOB_COLUMNS.index("version")
    assert errors[0]["job_status"] == "error" and "status two fails" in errors[0]["job_error_message"]
    assert jobs.progress()["error"] == 1 and len(jobs.reserved) == 0 and len(jobs.pending) == 0
    # Job API on the renamed columns: refresh, reserve, complete, ignore
    Source.insert1({name: 10 + j for j, name in enumerate(JOB_COLUMNS)})
    assert jobs.refresh()["added"] == 1
    key = {name: 10 + j for j, name in enumerate(JOB_COLUMNS)}
    assert jobs.reserve(key) and len(jobs.reserved) == 1
    jobs.release(key)
    jobs.ignore(key)
    assert jobs.progress()["ignore"] == 1
    jobs.ignored.delete()
    assert Derived.populate(reserve_jobs=True, processes=2, suppress_errors=True)["success_count"] == 1
    assert len(Derived()) == 3


CLI_MODULE = '''
import os
import joinflow as dj

config = dj.config.copy()
config["safemode"] = False
connection = dj.Connection(url={url!r}, config=config)
schema = dj.Schema({schema!r}, connection=connection)


@schema
class Run(dj.Manual):
    definition = """
    version : int32
    status : varchar(16)
    host : varchar(32)
    """


@schema
class Result(dj.Computed):
    definition = """
    -> Run
    ---
    value : int32
    """

    def make(self, key):
        if key["version"] == 3:
            os.kill(os.getpid(), 9)  # a worker dies (the out-of-memory killer)
        self.insert1(dict(key, value=key["version"]))
'''


def test_cli_dead_worker_and_job_column_names(connection, schema_name, backend, tmp_path, capsys):
    """``joinflow populate --workers 2`` / ``jobs`` / ``status`` (in-process: the same entry point, faster)."""
    url = connection.url.render_as_string(hide_password=False)
    path = tmp_path / f"workers_{schema_name}.py"
    path.write_text(CLI_MODULE.format(url=url, schema=schema_name))
    dj.Schema(schema_name, connection=connection)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(path.stem)
    finally:
        sys.path.remove(str(tmp_path))
    mod.Run.insert([{"version": v, "status": "ok", "host": "h"} for v in range(5)])

    def joinflow(*args) -> tuple[int, str]:
        code = cli.main([*args])
        return code, capsys.readouterr().out

    try:
        code, out = joinflow("populate", str(path), "--workers", "2", "--json")
        assert code == 1, out
        report = json.loads(out)
        assert "tables" in report, out
        table = report["tables"][0]
        assert table["computed"] == 4 and report["error_count"] == 1
        assert table["errors"][0]["key"] == {"version": 3, "status": "ok", "host": "h"}
        assert "died" in table["errors"][0]["error"] and "SIGKILL" in table["errors"][0]["error"]
        code, out = joinflow("populate", str(path), "--workers", "2")  # the text report names the key too
        assert code == 0 and "0 errors" in out  # the error job is not retried behind the user's back
        code, out = joinflow("jobs", str(path), "--errors")
        assert code == 0 and '"version": 3' in out and "SIGKILL" in out
        code, out = joinflow("jobs", str(path), "--json")
        assert [(j["key"]["version"], j["status"]) for j in json.loads(out)["jobs"]] == [(3, "error")]
        code, out = joinflow("status", str(path), "--json")
        status = json.loads(out)["tables"][0]
        assert status["done"] == 4 and status["error"] == 1
        code, out = joinflow("jobs", str(path), "--clear", "--all", "--yes", "--json")
        assert code == 0 and json.loads(out)["total"] == 1
    finally:
        mod.connection.close()
