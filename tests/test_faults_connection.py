"""Lost database sessions (PostgreSQL, MySQL): the server ends the worker's session
(pg_terminate_backend / KILL CONNECTION) from a second connection, mid-make or between
statements.  The worker reconnects and carries on; nothing partial is written; keys are
computed once.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow import errors

pytestmark = pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)


def session_id(conn) -> int:
    sql = "SELECT pg_backend_pid()" if conn.dialect == "postgresql" else "SELECT CONNECTION_ID()"
    return int(conn.execute(sa.text(sql)).scalar())


def kill_session(conn, sid: int) -> None:
    """End session ``sid`` from a fresh admin connection, as a DBA or a proxy would."""
    admin = dj.Connection(url=conn.url.render_as_string(hide_password=False), config=conn.config)
    try:
        if admin.dialect == "postgresql":
            admin.execute(sa.text(f"SELECT pg_terminate_backend({int(sid)})"))
        else:
            admin.execute(sa.text(f"KILL CONNECTION {int(sid)}"))
    finally:
        admin.close()


def declare_source(schema, n: int):
    @schema
    class Signal(dj.Manual):
        definition = """
        signal_id : int32
        ---
        amplitude : float64
        """

    Signal.insert([{"signal_id": i, "amplitude": float(i)} for i in range(n)])
    return Signal


def test_session_killed_between_statements_reconnects(schema):
    Signal = declare_source(schema, 3)
    conn = schema.connection
    kill_session(conn, session_id(conn))
    assert len(Signal()) == 3  # the next statement reconnected by itself
    kill_session(conn, session_id(conn))
    Signal.insert1({"signal_id": 9, "amplitude": 9.0})  # an insert opens its own transaction: reconnects first
    assert len(Signal()) == 4


def test_session_killed_inside_a_transaction_writes_nothing(schema):
    Signal = declare_source(schema, 3)
    conn = schema.connection
    with pytest.raises(errors.LostConnectionError):
        with conn.transaction:
            Signal.insert1({"signal_id": 10, "amplitude": 1.0})
            kill_session(conn, session_id(conn))
            Signal.insert1({"signal_id": 11, "amplitude": 1.0})  # must not run on a fresh session
    assert not conn.in_transaction
    assert sorted(Signal.to_arrays("signal_id")) == [0, 1, 2]  # neither row of the lost transaction
    Signal.insert1({"signal_id": 12, "amplitude": 1.0})  # and the connection works again
    assert len(Signal()) == 4


def test_session_killed_during_compute_commits_without_recomputing(schema):
    """Tripartite make: the session dies while make_compute runs (no transaction is open)."""
    Signal = declare_source(schema, 6)
    computed = []

    @schema
    class Energy(dj.Computed):
        definition = """
        -> Signal
        ---
        energy : float64
        """

        def make_fetch(self, key):
            return (Signal & key).fetch1("amplitude")

        def make_compute(self, key, amplitude):
            computed.append(key["signal_id"])
            if key["signal_id"] in (1, 4):  # the server (or a proxy) drops us mid-compute
                kill_session(self.connection, session_id(self.connection))
            return amplitude ** 2

        def make_insert(self, key, energy):
            self.insert1(dict(key, energy=energy))

    result = Energy.populate(reserve_jobs=True, suppress_errors=True)
    assert result["error_list"] == [] and result["success_count"] == 6
    assert sorted(computed) == list(range(6))  # each key computed exactly once, no recomputation
    assert dict(zip(*Energy.to_arrays("signal_id", "energy"))) == {i: float(i * i) for i in range(6)}
    assert Energy.jobs.progress()["reserved"] == 0


def test_session_killed_inside_make_leaves_nothing_partial(schema):
    """Classic make (one transaction): the session dies after the master row, before the parts;
    nothing partial is committed and populate makes the key again."""
    Signal = declare_source(schema, 5)
    killed = []

    @schema
    class Spectrum(dj.Computed):
        definition = """
        -> Signal
        ---
        peak : float64
        """

        class Band(dj.Part):
            definition = """
            -> master
            band : int16
            ---
            power : float64
            """

        def make(self, key):
            amplitude = (Signal & key).fetch1("amplitude")
            self.insert1(dict(key, peak=amplitude))
            if key["signal_id"] == 2 and not killed:
                killed.append(key["signal_id"])
                kill_session(self.connection, session_id(self.connection))
            self.Band.insert([dict(key, band=b, power=amplitude / (b + 1)) for b in range(3)])

    result = Spectrum.populate(reserve_jobs=True, suppress_errors=True)
    assert killed == [2]
    assert result["error_list"] == []  # the lost key was rolled back and made again on a new session
    assert sorted(Spectrum.to_arrays("signal_id")) == [0, 1, 2, 3, 4]
    assert len(Spectrum.Band()) == 15


def test_session_killed_inside_make_is_retried_by_populate(schema):
    Signal = declare_source(schema, 2)
    killed = []

    @schema
    class Peak(dj.Computed):
        definition = """
        -> Signal
        ---
        peak : float64
        """

        def make(self, key):
            self.insert1(dict(key, peak=1.0))
            if not killed:
                killed.append(1)
                kill_session(self.connection, session_id(self.connection))
                self.connection.execute(sa.text("SELECT 1"))

    result = Peak.populate(reserve_jobs=True, suppress_errors=True)
    assert result["error_list"] == [] and len(Peak()) == 2
