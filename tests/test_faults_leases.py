"""Leases of populate(reserve_jobs=True): a key is never made and committed by two workers.

- fencing: a key's rows are committed only while the worker still holds its lease (checked in
  the key's own transaction); a worker whose lease was taken over commits nothing;
- a worker alive on this machine (stopped, or late with its heartbeat) is not taken over;
- lease expiry is decided by the server's clock, so a worker whose own clock steps does not
  expire other workers' leases;
- ``jobs.lease_timeout`` of 0 or less is refused.

The long version with worker processes, SIGKILL, SIGSTOP/SIGCONT and a clock step is
``benchmarks/soak_leases.py``.
"""

from __future__ import annotations

import datetime
import time
import types

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow import jobs as jobs_module
from joinflow.jobs import Claims, Job
from joinflow.settings import Config

OTHER_TOKEN = 4242  # the token of "another worker" that takes a key over


def declare(schema, calls: list, *, tripartite: bool = False, during=None):
    """Source(n) -> Twice(n): make records (key, phase) in ``calls`` and runs ``during(key)`` mid-make."""

    @schema
    class Source(dj.Manual):
        definition = """
        n : int32
        """

    if tripartite:
        @schema
        class Twice(dj.Computed):
            definition = """
            -> Source
            ---
            twice : int32
            """

            def make_fetch(self, key):
                return key["n"]

            def make_compute(self, key, n):
                calls.append((key["n"], "compute"))
                if during is not None:
                    during(key)
                return 2 * n

            def make_insert(self, key, twice):
                self.insert1(dict(key, twice=twice))
    else:
        @schema
        class Twice(dj.Computed):
            definition = """
            -> Source
            ---
            twice : int32
            """

            def make(self, key):
                calls.append((key["n"], "make"))
                self.insert1(dict(key, twice=2 * key["n"]))
                if during is not None:
                    during(key)

    Source.insert([{"n": i} for i in range(4)])
    Twice.jobs.refresh()
    return Source, Twice


def other_connection(conn) -> dj.Connection:
    return dj.Connection(url=conn.url.render_as_string(hide_password=False), config=conn.config)


def server_time(conn, shift: float = 0):
    """The server's clock now, plus ``shift`` seconds, as the job table stores it."""
    now = conn.backend.db_now(conn) + datetime.timedelta(seconds=shift)
    return conn.backend.date_to_db(now, "datetime")


def take_over(conn, table, key: dict, host: str = "another-machine") -> None:
    """What another worker's claim writes into the job row of ``key`` (on ``conn``)."""
    job = Job(table)
    tc = job._tc()
    conn.execute(sa.update(tc).where(job._key_clause(tc, key)).values(
        status="reserved", connection_id=OTHER_TOKEN, host=host, pid=1, reserved_time=server_time(conn)))


def expire(table, key: dict, host: str | None = None) -> None:
    """Make the lease on ``key`` an hour old by the server's clock (optionally moving its owner)."""
    job = Job(table)
    tc = job._tc()
    values = {"reserved_time": server_time(table.connection, -3600)}
    if host is not None:
        values["host"] = host
    table.connection.execute(sa.update(tc).where(job._key_clause(tc, key)).values(**values))


def job_row(table, n: int) -> dict:
    return (Job(table) & {"n": n}).fetch1()


def test_a_key_taken_over_while_the_worker_waited_is_not_made(schema, backend, monkeypatch):
    """The worker claimed a key, then (waiting for SQLite's write lock past its lease, say) another
    worker took it over: the first worker commits nothing for it, the new owner keeps its lease.
    On SQLite, where BEGIN waits for the other writers, the lease is checked once the transaction
    has begun, so the key is not even computed; elsewhere the fencing at commit rolls it back."""
    calls = []
    _, Twice = declare(schema, calls)
    original = Claims.claim
    other = other_connection(schema.connection)

    def claim_then_lose(self, n):
        claimed = original(self, 1)
        for key, _ in claimed:
            if key["n"] == 2:
                take_over(other, Twice, key)
        return claimed

    monkeypatch.setattr(Claims, "claim", claim_then_lose)
    try:
        result = Twice.populate(reserve_jobs=True, refresh=False)
    finally:
        other.close()
    assert result == {"success_count": 3, "error_list": []}  # not a success, not an error: not ours
    assert sorted(n for n, _ in calls) == ([0, 1, 3] if backend == "sqlite" else [0, 1, 2, 3])
    assert sorted(k["n"] for k in Twice.keys()) == [0, 1, 3]
    row = job_row(Twice, 2)
    assert (row["status"], row["connection_id"]) == ("reserved", OTHER_TOKEN)


def test_a_key_taken_over_during_its_compute_is_not_committed(schema):
    """Tripartite make: another worker takes the key over while make_compute runs (outside any
    transaction, on every backend): nothing of this worker's is committed."""
    calls = []
    other = other_connection(schema.connection)
    _, Twice = declare(schema, calls, tripartite=True,
                       during=lambda key: take_over(other, Twice, key) if key["n"] == 1 else None)
    try:
        result = Twice.populate(reserve_jobs=True, refresh=False)
    finally:
        other.close()
    assert result == {"success_count": 3, "error_list": []}
    assert sorted(k["n"] for k in Twice.keys()) == [0, 2, 3]
    row = job_row(Twice, 1)
    assert (row["status"], row["connection_id"]) == ("reserved", OTHER_TOKEN)


def test_a_key_taken_over_just_before_its_commit_is_rolled_back(schema, backend):
    """Fencing: the takeover happens inside the make transaction, after its rows are inserted;
    the commit finds the lease is no longer this worker's and rolls the rows back."""
    if backend == "sqlite":
        pytest.skip("SQLite: the make transaction holds the write lock, so no worker can take a key over "
                    "between its start (where the lease is checked) and its commit")
    calls = []
    other = other_connection(schema.connection)
    _, Twice = declare(schema, calls, during=lambda key: take_over(other, Twice, key) if key["n"] == 3 else None)
    try:
        result = Twice.populate(reserve_jobs=True, refresh=False)
    finally:
        other.close()
    assert result == {"success_count": 3, "error_list": []}
    assert sorted(n for n, _ in calls) == [0, 1, 2, 3]  # key 3 was made, and its rows rolled back
    assert sorted(k["n"] for k in Twice.keys()) == [0, 1, 2]
    row = job_row(Twice, 3)
    assert (row["status"], row["connection_id"]) == ("reserved", OTHER_TOKEN)


def test_an_error_after_a_takeover_does_not_overwrite_the_new_owners_lease(schema):
    calls = []
    other = other_connection(schema.connection)

    def lose_then_fail(key):
        if key["n"] == 0:
            take_over(other, Twice, key)
            raise ValueError("failed after losing the lease")

    _, Twice = declare(schema, calls, tripartite=True, during=lose_then_fail)
    try:
        result = Twice.populate(reserve_jobs=True, refresh=False, suppress_errors=True)
    finally:
        other.close()
    assert [k for k, _ in result["error_list"]] == [{"n": 0}]  # the caller still hears of it
    row = job_row(Twice, 0)
    assert (row["status"], row["connection_id"], row["error_message"]) == ("reserved", OTHER_TOKEN, "")


def test_a_live_worker_on_this_machine_is_not_taken_over(schema):
    """An expired lease whose worker is alive here (stopped by SIGSTOP, or its heartbeat stuck behind
    a lock) stays with it; once that worker is gone, the key is taken over."""
    _, Twice = declare(schema, [])
    owner = Claims(Twice.jobs)
    try:
        (key, raw), = owner.claim(1)
        expire(Twice, key)
        taker = Claims(Twice.jobs)
        got = [k["n"] for k, _ in taker.claim(8)]
        assert key["n"] not in got and len(got) == 3  # every other key, not the live worker's
        assert job_row(Twice, key["n"])["connection_id"] == owner.token
        owner.mark.close()  # the owner dies (the kernel drops its lock)
        owner.mark = None
        assert [k for k, _ in taker.claim(8)] == [key]
        assert job_row(Twice, key["n"])["connection_id"] == taker.token
        taker.release_all()
    finally:
        owner.release_all()


class _SteppedClock(datetime.datetime):
    """datetime.datetime whose now() is three hours ahead: a client clock step."""

    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.now(tz) + datetime.timedelta(hours=3)

    @classmethod
    def utcnow(cls):
        return datetime.datetime.utcnow() + datetime.timedelta(hours=3)


def test_a_clock_step_in_a_worker_does_not_expire_other_leases(schema, monkeypatch):
    """Expiry is the server's decision: a worker whose clock jumps ahead by hours (after start-up)
    takes over no lease that is still running, even one of a worker on another machine."""
    _, Twice = declare(schema, [])
    jobs = Twice.jobs
    assert jobs.reserve({"n": 1})  # a running lease of a worker on another machine (no liveness check)
    job = Job(Twice)
    tc = job._tc()
    schema.connection.execute(sa.update(tc).where(job._key_clause(tc, {"n": 1})).values(host="another-machine"))
    jobs.candidates()  # the worker has run a while
    monkeypatch.setattr(jobs_module, "datetime", types.SimpleNamespace(
        datetime=_SteppedClock, timedelta=datetime.timedelta, date=datetime.date), raising=False)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3 * 3600)
    assert {"n": 1} not in jobs.candidates()
    assert jobs.reserve({"n": 1}) is False
    taker = Claims(Twice.jobs)
    got = [k["n"] for k, _ in taker.claim(8)]
    taker.release_all()
    assert sorted(got) == [0, 2, 3]
    assert job_row(Twice, 1)["host"] == "another-machine"


@pytest.mark.parametrize("value", [0, -1, 0.0, "0", "-5", float("nan"), float("inf"), True, "soon", None])
def test_lease_timeout_of_zero_or_less_is_refused(value):
    cfg = dj.config.copy()
    cfg["jobs.lease_timeout"] = 120
    with pytest.raises(dj.DataJointError, match=r"jobs\.lease_timeout.*above 0"):
        cfg["jobs.lease_timeout"] = value
    assert cfg["jobs.lease_timeout"] == 120  # unchanged
    cfg["jobs.lease_timeout"] = "1.5"  # a number of seconds, also from a string (environment variable)
    assert cfg["jobs.lease_timeout"] == 1.5


def test_lease_timeout_from_the_environment_is_checked(monkeypatch):
    monkeypatch.setenv("JOINFLOW_JOBS_LEASE_TIMEOUT", "0")
    config = Config(search_file=False)  # a bad environment variable is reported at first use
    with pytest.raises(dj.DataJointError, match=r"JOINFLOW_JOBS_LEASE_TIMEOUT.*jobs\.lease_timeout"):
        config["jobs.lease_timeout"]
    monkeypatch.setenv("JOINFLOW_JOBS_LEASE_TIMEOUT", "2.5")
    assert Config(search_file=False)["jobs.lease_timeout"] == 2.5


def test_populate_refuses_a_lease_timeout_that_slipped_past_the_config(schema):
    """A value put into the configuration's layers directly is checked again at populate time,
    before any key is claimed."""
    calls = []
    _, Twice = declare(schema, calls)
    schema.connection.config._runtime["jobs.lease_timeout"] = 0
    with pytest.raises(dj.DataJointError, match=r"jobs\.lease_timeout"):
        Twice.populate(reserve_jobs=True, refresh=False)
    assert calls == [] and len(Twice()) == 0
    assert Twice.jobs.progress()["pending"] == 4 and Twice.jobs.progress()["reserved"] == 0
