"""Chained commits: populate() commits one key and opens the next key's transaction in one
round trip (COMMIT AND CHAIN on PostgreSQL and MySQL/MariaDB; SQLite commits plainly).

What users rely on: every key is still its own transaction, a statement run after a chained
commit is committed as always, and populate() never leaves a transaction open behind it.
"""

from __future__ import annotations

import pytest

import joinflow as dj
from joinflow import errors

from lab import declare_pipeline
from test_faults_connection import kill_session, session_id


def second_connection(conn) -> dj.Connection:
    return dj.Connection(url=conn.url.render_as_string(hide_password=False), config=conn.config)


def declare_signal(schema):
    @schema
    class Signal(dj.Manual):
        definition = """
        signal_id : int32
        ---
        amplitude : float64
        """

    return Signal


def record_sql(conn, monkeypatch) -> list[str]:
    """Every statement the connection sends to its driver, in order (the statement savepoint that
    PostgreSQL's BEGIN and COMMIT AND CHAIN set in the same round trip is left out)."""
    sent: list[str] = []
    original = conn._driver_execute

    def spy(sa_conn, sql, args):
        sent.append(sql.strip().split(";")[0])
        return original(sa_conn, sql, args)

    monkeypatch.setattr(conn, "_driver_execute", spy)
    return sent


def test_statement_after_a_chained_commit_is_committed(schema):
    Signal = declare_signal(schema)
    conn = schema.connection
    with conn.transaction:
        Signal.insert1({"signal_id": 1, "amplitude": 1.0})
    conn.start_transaction()
    Signal.insert1({"signal_id": 2, "amplitude": 2.0})
    conn.commit_transaction(chain=True)
    assert not conn.in_transaction  # nobody owns the chained transaction
    # a statement outside any transaction is committed at once, as without the chain
    conn.query(f"INSERT INTO {Signal.full_table_name} VALUES (3, 3.0)")
    other = second_connection(conn)
    try:
        seen = other.query(f"SELECT signal_id FROM {Signal.full_table_name} ORDER BY signal_id")
        assert [r[0] for r in seen] == [1, 2, 3]
    finally:
        other.close()


def test_chained_transaction_is_a_transaction(schema):
    Signal = declare_signal(schema)
    conn = schema.connection
    conn.start_transaction()
    Signal.insert1({"signal_id": 1, "amplitude": 1.0})
    conn.commit_transaction(chain=True)
    with pytest.raises(ValueError):
        with conn.transaction:  # takes over the chained transaction
            Signal.insert1({"signal_id": 2, "amplitude": 2.0})
            raise ValueError("abandon")
    assert Signal.to_arrays("signal_id").tolist() == [1]
    conn.start_transaction()
    Signal.insert1({"signal_id": 4, "amplitude": 4.0})
    conn.commit_transaction(chain=True)
    conn.start_transaction()
    Signal.insert1({"signal_id": 5, "amplitude": 5.0})
    conn.commit_transaction()
    assert sorted(Signal.to_arrays("signal_id").tolist()) == [1, 4, 5]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_session_lost_while_chained_writes_nothing_and_recovers(schema):
    Signal = declare_signal(schema)
    conn = schema.connection
    sid = session_id(conn)
    conn.start_transaction()
    Signal.insert1({"signal_id": 1, "amplitude": 1.0})
    conn.commit_transaction(chain=True)
    kill_session(conn, sid)  # the server drops the session holding the chained transaction
    with pytest.raises(errors.LostConnectionError):
        with conn.transaction:
            Signal.insert1({"signal_id": 2, "amplitude": 2.0})
    assert not conn.in_transaction
    Signal.insert1({"signal_id": 3, "amplitude": 3.0})  # reconnects
    assert sorted(Signal.to_arrays("signal_id").tolist()) == [1, 3]


@pytest.mark.parametrize("reserve_jobs", [False, True])
def test_populate_opens_one_transaction_per_run_of_keys(schema, monkeypatch, reserve_jobs):
    Source, Square = declare_pipeline(schema)
    Source.insert([{"source_id": i, "value": float(i + 1)} for i in range(6)])
    conn = schema.connection
    Square.jobs  # declare the job table before counting
    sent = record_sql(conn, monkeypatch)
    result = Square.populate(reserve_jobs=reserve_jobs)
    assert result["success_count"] == 6
    assert len(Square()) == 6 and len(Square.Digit()) == 6
    begins = sum(s == conn.backend.begin_statement for s in sent)
    chained = sum(s == "COMMIT AND CHAIN" for s in sent)
    if conn.dialect == "sqlite":
        assert (begins, chained) == (6, 0)  # SQLite: one BEGIN per key
    else:
        assert begins + chained == 6  # every key still gets its own transaction ...
        assert begins < 6  # ... and keys made back to back share the round trip that opens it
    assert not conn.in_transaction and not conn._chained


def test_populate_error_after_chained_commit_rolls_back_only_that_key(schema):
    Source, Square = declare_pipeline(schema, fail_on=(3,))
    Source.insert([{"source_id": i, "value": float(i + 10)} for i in range(6)])
    result = Square.populate(suppress_errors=True)
    assert result["success_count"] == 5 and [k["source_id"] for k, _ in result["error_list"]] == [3]
    assert sorted(Square.to_arrays("source_id").tolist()) == [0, 1, 2, 4, 5]
    assert len(Square.Digit & {"source_id": 3}) == 0  # nothing partial of the failed key


def test_tripartite_make_never_computes_inside_a_transaction(schema, monkeypatch):
    Signal = declare_signal(schema)
    Signal.insert([{"signal_id": i, "amplitude": float(i)} for i in range(4)])
    conn = schema.connection
    open_while_computing = []

    @schema
    class Scaled(dj.Computed):
        definition = """
        -> Signal
        ---
        scaled : float64
        """

        def make_fetch(self, key):
            return (Signal & key).fetch1("amplitude")

        def make_compute(self, key, amplitude):
            open_while_computing.append(conn.in_transaction or conn._chained)
            return amplitude * 2

        def make_insert(self, key, scaled):
            self.insert1(dict(key, scaled=scaled))

    sent = record_sql(conn, monkeypatch)
    assert Scaled.populate()["success_count"] == 4
    assert open_while_computing == [False] * 4
    assert sum(s == conn.backend.begin_statement for s in sent) == 4
    assert "COMMIT AND CHAIN" not in sent


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_populate_leaves_the_session_idle(schema):
    """pg_stat_activity shows the worker's session idle, not 'idle in transaction', after populate()."""
    Source, Square = declare_pipeline(schema)
    Source.insert([{"source_id": i, "value": float(i + 1)} for i in range(5)])
    conn = schema.connection
    pid = conn._conn.connection.dbapi_connection.info.backend_pid
    for reserve_jobs in (False, True):
        Square.delete()
        Square.populate(reserve_jobs=reserve_jobs)
        other = second_connection(conn)
        try:
            state = other.query("SELECT state FROM pg_stat_activity WHERE pid = :pid", {"pid": pid})
            assert [r[0] for r in state] == ["idle"]
        finally:
            other.close()
