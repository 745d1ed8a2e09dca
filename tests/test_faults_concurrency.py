"""Concurrency under load: many workers, random make durations, random failures, deadlocks.

Every key must end exactly once as a row (success) or as an error job; no row is doubled,
no key is lost, no lease is left behind.  A deadlock is retried, never fatal.

The same scenario at soak size: ``python benchmarks/soak_populate.py --workers 8 --keys 10000``.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow import errors


def failing_key(key_id: int, fail_percent: int) -> bool:
    """Deterministic 'random' failures, so the expected outcome of every key is known."""
    return (key_id * 2654435761) % 100 < fail_percent


def declare_load_pipeline(schema, calls_file: str, fail_percent: int, max_sleep: float):
    @schema
    class Item(dj.Manual):
        definition = """
        item_id : int32
        ---
        value : float64
        """

    @schema
    class Work(dj.Computed):
        definition = """
        -> Item
        ---
        result : float64
        worker : int32
        """

        class Piece(dj.Part):
            definition = """
            -> master
            piece : int16
            ---
            share : float64
            """

        def make(self, key):
            fd = os.open(calls_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{key['item_id']} {os.getpid()}\n".encode())
            finally:
                os.close(fd)
            value = (Item & key).fetch1("value")
            if max_sleep:
                time.sleep(random.uniform(0, max_sleep))
            self.insert1(dict(key, result=value * 2, worker=os.getpid()))
            if failing_key(key["item_id"], fail_percent):
                raise RuntimeError(f"injected failure for item {key['item_id']}")
            self.Piece.insert([dict(key, piece=i, share=value / 3) for i in range(3)])

    return Item, Work


def run_load(schema, calls_file: str, *, workers: int, keys: int, fail_percent: int = 7,
             max_sleep: float = 0.003) -> dict:
    """Populate ``keys`` keys with ``workers`` processes; check and return the figures."""
    Item, Work = declare_load_pipeline(schema, calls_file, fail_percent, max_sleep)
    Item.insert([{"item_id": i, "value": float(i)} for i in range(keys)])
    started = time.time()
    result = Work.populate(reserve_jobs=True, processes=workers, suppress_errors=True)
    elapsed = time.time() - started
    expected_fail = {i for i in range(keys) if failing_key(i, fail_percent)}
    expected_ok = set(range(keys)) - expected_fail
    calls = collections.Counter(int(line.split()[0]) for line in open(calls_file).read().split("\n") if line)
    done = [k["item_id"] for k in Work.keys()]
    jobs = Work.jobs
    errored = [k["item_id"] for k in jobs.errors.keys()]
    progress = jobs.progress()
    pieces = collections.Counter(Work.Piece.to_arrays("item_id"))
    figures = {
        "workers": workers, "keys": keys, "seconds": round(elapsed, 2),
        "success": len(done), "error": len(errored), "make_calls": sum(calls.values()),
        "workers_used": len({pid for pid in Work.to_arrays("worker")}),
    }
    # every key ends exactly once: success or error, never both, never twice, never lost
    assert len(done) == len(set(done)) and set(done) == expected_ok, figures
    assert len(errored) == len(set(errored)) and set(errored) == expected_fail, figures
    assert all(n == 1 for n in calls.values()) and set(calls) == set(range(keys)), \
        f"make ran twice for {[k for k, n in calls.items() if n > 1][:10]}"
    assert result["success_count"] == len(expected_ok)
    assert sorted(k["item_id"] for k, _ in result["error_list"]) == sorted(expected_fail)
    # masters come with all their parts; failed keys left nothing behind
    assert set(pieces) == expected_ok and set(pieces.values()) == {3}
    assert progress["reserved"] == 0 and progress["pending"] == 0
    assert not expected_fail or len(Work & [{"item_id": i} for i in expected_fail]) == 0
    return figures


def test_workers_random_durations_and_failures(schema, tmp_path):
    figures = run_load(schema, str(tmp_path / "calls.txt"), workers=4, keys=300)
    assert figures["success"] + figures["error"] == 300


# ---------------------------------------------------------------------------------------------
# deadlocks: retried, not fatal
# ---------------------------------------------------------------------------------------------


def _fake_deadlock(backend: str) -> sa.exc.DBAPIError:
    """A driver error exactly as each server reports a deadlock."""
    if backend == "mysql":
        import pymysql

        orig = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
    elif backend == "postgresql":
        import psycopg

        class Orig(psycopg.errors.DeadlockDetected):
            sqlstate = "40P01"

        orig = Orig("deadlock detected")
    else:
        import sqlite3

        orig = sqlite3.OperationalError("database is locked")
    return sa.exc.OperationalError("UPDATE ...", {}, orig)


def test_deadlocked_statement_outside_a_transaction_is_retried(schema, backend, monkeypatch):
    """Fault injection: the server aborts a statement twice to break a deadlock; joinflow retries it."""

    @schema
    class Counter(dj.Manual):
        definition = """
        name : varchar(16)
        ---
        n : int32
        """

    Counter.insert1({"name": "a", "n": 0})
    conn = schema.connection
    real = conn.sa_connection
    failures = [2]

    class Flaky:
        def __getattr__(self, name):
            return getattr(real, name)

        def execute(self, *args, **kwargs):
            if failures[0]:
                failures[0] -= 1
                raise _fake_deadlock(backend)
            return real.execute(*args, **kwargs)

    monkeypatch.setattr(dj.connection, "DEADLOCK_PAUSE", 0.001)
    monkeypatch.setattr(conn, "_conn", Flaky())
    conn.execute(sa.text(f"UPDATE {Counter.full_table_name} SET n = n + 1"))
    monkeypatch.undo()
    assert failures[0] == 0 and Counter.fetch1("n") == 1  # ran once, after two aborted tries

    # inside a transaction the whole transaction must be rerun: a clear, typed error
    failures[0] = 1
    monkeypatch.setattr(conn, "_conn", Flaky())
    with pytest.raises(errors.DeadlockError, match="Run the transaction again"):
        with conn.transaction:
            failures[0] = 1
            conn.execute(sa.text(f"UPDATE {Counter.full_table_name} SET n = n + 1"))
    monkeypatch.undo()
    assert Counter.fetch1("n") == 1 and not conn.in_transaction


def _deadlock_pair(conn, lock_table: str, backend: str):
    """Make the caller's open transaction the victim of a real deadlock with a second session.

    The caller already holds row 1; a helper session takes row 2 (and many other rows, so that
    MySQL picks the caller as the cheaper victim), then waits for row 1 while the caller asks
    for row 2.  PostgreSQL: the first waiter (the caller) detects the cycle and is aborted.
    """
    other = dj.Connection(url=conn.url.render_as_string(hide_password=False), config=conn.config)
    ready = threading.Event()

    def helper():
        try:
            other.start_transaction()
            other.execute(sa.text(f"UPDATE {lock_table} SET n = n + 1 WHERE id >= 2"))
            ready.set()
            time.sleep(0.4)
            other.execute(sa.text(f"UPDATE {lock_table} SET n = n + 1 WHERE id = 1"))
            other.commit_transaction()
        except Exception:
            if other.in_transaction:
                other.cancel_transaction()
        finally:
            ready.set()
            other.close()

    thread = threading.Thread(target=helper)
    thread.start()
    ready.wait(10)
    return thread


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_deadlock_inside_make_is_retried_by_populate(schema, backend, tmp_path):
    @schema
    class Lock(dj.Lookup):
        definition = """
        id : int32
        ---
        n : int32
        """
        contents = [(i, 0) for i in range(1, 40)]

    @schema
    class Src(dj.Manual):
        definition = """
        src : int32
        """

    flag = tmp_path / "deadlocked"

    @schema
    class Out(dj.Computed):
        definition = """
        -> Src
        """

        def make(self, key):
            conn = self.connection
            table = Lock.full_table_name
            conn.execute(sa.text(f"UPDATE {table} SET n = n + 1 WHERE id = 1"))
            thread = None
            if not flag.exists():
                flag.write_text("1")
                thread = _deadlock_pair(conn, table, backend)
            try:
                conn.execute(sa.text(f"UPDATE {table} SET n = n + 1 WHERE id = 2"))
            finally:
                if thread is not None:
                    thread.join()
            self.insert1(key)

    Src.insert([{"src": 1}, {"src": 2}])
    result = Out.populate(reserve_jobs=True, suppress_errors=True)
    assert flag.exists()
    assert result["error_list"] == [] and len(Out()) == 2
