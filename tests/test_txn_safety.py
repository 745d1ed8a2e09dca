"""Never a success with nothing written (issue 15, "Silent loss in transactions").

- A statement that fails inside a transaction, when the caller catches its error, undoes only
  itself: the transaction goes on and commits the rest, the same on SQLite, PostgreSQL (which
  aborts the whole transaction unless joinflow's statement savepoint undoes the statement) and
  MySQL.
- A transaction the server aborted (a deadlock or lock timeout, or a failure joinflow could not
  undo) is never committed as if nothing happened: COMMIT raises and nothing of it is written.
- populate() records an error, with nothing committed, when make() inserts no row for its key.
- Tripartite make: a NaN in what make_fetch returns compares equal to itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import joinflow as dj
from joinflow import errors


def declare_signal(schema):
    @schema
    class Signal(dj.Manual):
        definition = """
        signal_id : int32
        ---
        amplitude : float64
        """

    return Signal


def ids(table) -> list[int]:
    return sorted(table.to_arrays("signal_id").tolist())


def other_connection(conn) -> dj.Connection:
    return dj.Connection(url=conn.url.render_as_string(hide_password=False), config=conn.config)


# -- a caught statement error leaves the transaction usable ---------------------------------------
def test_caught_duplicate_inside_transaction_commits_the_other_rows(schema):
    Signal = declare_signal(schema)
    conn = schema.connection
    Signal.insert1((1, 1.0))
    with conn.transaction:
        Signal.insert1((2, 2.0))
        with pytest.raises(errors.DuplicateError):
            Signal.insert1((1, 9.0))
        Signal.insert1((3, 3.0))  # PostgreSQL refused this before: "current transaction is aborted"
        with pytest.raises(errors.DataJointError):
            conn.query("SELECT * FROM no_such_table_anywhere")
        assert (Signal & {"signal_id": 2}).fetch1("amplitude") == 2.0  # reads still work
        Signal.insert1((4, 4.0))
    assert ids(Signal) == [1, 2, 3, 4]
    assert (Signal & {"signal_id": 1}).fetch1("amplitude") == 1.0  # the refused row changed nothing


def test_caught_error_as_last_statement_still_commits(schema):
    """The row inserted before a caught error is written (PostgreSQL's COMMIT rolled it back silently)."""
    Signal = declare_signal(schema)
    conn = schema.connection
    Signal.insert1((1, 1.0))
    with conn.transaction:
        Signal.insert1((2, 2.0))
        try:
            Signal.insert1((1, 1.0))
        except errors.DuplicateError:
            pass
    assert ids(Signal) == [1, 2]


def test_caught_error_in_a_chained_transaction(schema):
    """The transaction opened by a chained commit (COMMIT AND CHAIN) is protected the same way."""
    Signal = declare_signal(schema)
    conn = schema.connection
    conn.start_transaction()
    Signal.insert1((1, 1.0))
    conn.commit_transaction(chain=True)
    with conn.transaction:
        with pytest.raises(errors.DuplicateError):
            Signal.insert1((1, 1.0))
        Signal.insert1((2, 2.0))
    conn.start_transaction()
    Signal.insert1((3, 3.0))
    conn.commit_transaction(chain=True)
    assert ids(Signal) == [1, 2, 3]
    assert not conn.in_transaction


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_caught_error_while_iterating_inside_a_transaction(schema):
    """Rows read with `for row in query` inside a transaction: a server error there, caught, keeps
    the transaction usable, and the rows written before it are committed."""
    Signal = declare_signal(schema)
    conn = schema.connection
    Signal.insert1((0, 0.0))
    with conn.transaction:
        Signal.insert1((1, 1.0))
        with pytest.raises(errors.DataJointError):
            for _ in Signal & "1 / amplitude > 0":  # division by zero on the server
                pass
        Signal.insert1((2, 2.0))
    assert ids(Signal) == [0, 1, 2]


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_caught_error_in_a_many_row_insert_leaves_none_of_its_rows(schema, chunk_size):
    """insert() of many rows is all or nothing inside a transaction too (SQLite kept the rows before
    the refused one; chunks before a refused chunk stayed on every backend)."""
    Signal = declare_signal(schema)
    conn = schema.connection
    Signal.insert1((1, 1.0))
    with conn.transaction:
        Signal.insert1((2, 2.0))
        with pytest.raises(errors.DuplicateError):
            Signal.insert([(5, 5.0), (6, 6.0), (1, 9.0), (7, 7.0)], chunk_size=chunk_size)
        Signal.insert([(3, 3.0), (4, 4.0)], chunk_size=chunk_size)
    assert ids(Signal) == [1, 2, 3, 4]


def test_make_that_catches_a_duplicate_is_committed(schema):
    """make() inserts its row, then catches a DuplicateError: the key is a success and its row is there."""
    Signal = declare_signal(schema)
    Signal.insert([(i, float(i)) for i in range(3)])

    @schema
    class Doubled(dj.Computed):
        definition = """
        -> Signal
        ---
        doubled : float64
        """

        def make(self, key):
            row = dict(key, doubled=2 * (Signal & key).fetch1("amplitude"))
            self.insert1(row)
            try:
                self.insert1(row)  # e.g. a retry that finds its own row
            except errors.DuplicateError:
                pass

    result = Doubled.populate(suppress_errors=True)
    assert result == {"success_count": 3, "error_list": []}
    assert sorted(Doubled.to_arrays("doubled").tolist()) == [0.0, 2.0, 4.0]
    assert len(Doubled.pending()) == 0


# -- an aborted transaction is never committed as a success ---------------------------------------
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_commit_refuses_a_transaction_the_server_aborted(schema):
    """With the caller's own savepoints joinflow keeps none; a caught failure then aborts the
    transaction on PostgreSQL, and COMMIT says so instead of rolling back silently."""
    Signal = declare_signal(schema)
    conn = schema.connection
    Signal.insert1((1, 1.0))
    with pytest.raises(errors.QueryError, match="COMMIT refused"):
        with conn.transaction:
            conn.query("SAVEPOINT mine")
            Signal.insert1((2, 2.0))
            with pytest.raises(errors.DuplicateError):
                Signal.insert1((1, 1.0))
    assert not conn.in_transaction
    assert ids(Signal) == [1]
    Signal.insert1((3, 3.0))  # the connection is usable afterwards
    assert ids(Signal) == [1, 3]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_caught_lock_timeout_dooms_the_transaction(schema):
    """A lock timeout or deadlock aborts the transaction's work on the server (MySQL rolls a
    deadlocked transaction back and runs later statements outside it): catching it and going on
    raises, and COMMIT refuses, with nothing written."""
    Signal = declare_signal(schema)
    conn = schema.connection
    Signal.insert([(1, 1.0), (2, 2.0)])
    if conn.dialect == "postgresql":
        conn.query("SET lock_timeout = '100ms'")
    else:
        conn.query("SET SESSION innodb_lock_wait_timeout = 1")
    other = other_connection(conn)
    try:
        other.start_transaction()
        other.query(f"UPDATE {Signal.full_table_name} SET amplitude = 20 WHERE signal_id = 2")
        with pytest.raises(errors.DeadlockError, match="COMMIT refused"):
            with conn.transaction:
                Signal.insert1((3, 3.0))
                with pytest.raises(errors.DeadlockError):
                    conn.query(f"UPDATE {Signal.full_table_name} SET amplitude = 21 WHERE signal_id = 2")
                with pytest.raises(errors.DeadlockError, match="aborted by the server earlier"):
                    Signal.insert1((4, 4.0))
        other.cancel_transaction()
    finally:
        other.close()
    assert not conn.in_transaction
    assert ids(Signal) == [1, 2]


# -- make() must insert the key it was given -------------------------------------------------------
def declare_picky(schema, Signal, skip=(), wrong=()):
    @schema
    class Picky(dj.Computed):
        definition = """
        -> Signal
        ---
        value : float64
        """

        def make(self, key):
            if key["signal_id"] in skip:
                return
            if key["signal_id"] in wrong:
                self.insert1({"signal_id": key["signal_id"] - 1, "value": -1.0})
                return
            self.insert1(dict(key, value=1.0))

    return Picky


@pytest.mark.parametrize("reserve_jobs", [False, True])
def test_make_that_inserts_nothing_is_an_error(schema, reserve_jobs):
    Signal = declare_signal(schema)
    Signal.insert([(i, float(i)) for i in range(4)])
    Picky = declare_picky(schema, Signal, skip=(1,), wrong=(2,))
    result = Picky.populate(suppress_errors=True, reserve_jobs=reserve_jobs)
    assert result["success_count"] == 2
    failed = {k["signal_id"]: message for k, message in result["error_list"]}
    assert sorted(failed) == [1, 2]
    for message in failed.values():
        assert "must insert the key it was given" in message and Picky.full_table_name in message
    # nothing of the failed makes was committed: not the row of the other key either
    assert sorted(Picky.to_arrays("signal_id").tolist()) == [0, 3]
    assert sorted(Picky.pending().to_arrays("signal_id").tolist()) == [1, 2]
    if reserve_jobs:
        assert sorted(Picky.jobs.errors.to_arrays("signal_id").tolist()) == [1, 2]
    with pytest.raises(errors.DataJointError, match="must insert the key it was given"):
        Picky.populate()


def test_make_inserted_check_can_be_turned_off(schema):
    Signal = declare_signal(schema)
    Signal.insert([(i, float(i)) for i in range(3)])
    Picky = declare_picky(schema, Signal, skip=(1,))
    schema.connection.config["jobs.check_make_inserted"] = False
    assert Picky.populate() == {"success_count": 3, "error_list": []}
    assert sorted(Picky.to_arrays("signal_id").tolist()) == [0, 2]


def test_make_inserting_several_rows_per_key_passes_the_check(schema):
    """A computed table with primary-key attributes of its own, with a part table: one key, many rows."""
    Signal = declare_signal(schema)
    Signal.insert([(i, float(i)) for i in range(3)])
    schema.connection.config["jobs.allow_new_pk_fields_in_computed_tables"] = True

    @schema
    class Harmonic(dj.Computed):
        definition = """
        -> Signal
        order : int16
        ---
        amplitude : float64
        """

        class Note(dj.Part):
            definition = """
            -> master
            ---
            note : varchar(16)
            """

        def make(self, key):
            count = key["signal_id"]  # key 0 inserts nothing
            self.insert([dict(key, order=k, amplitude=k * 1.0) for k in range(count)])
            self.Note.insert([dict(key, order=k, note=f"n{k}") for k in range(count)])

    result = Harmonic.populate(suppress_errors=True)
    assert result["success_count"] == 2
    assert [k["signal_id"] for k, _ in result["error_list"]] == [0]
    assert len(Harmonic()) == 3 and len(Harmonic.Note()) == 3


# -- tripartite make: NaN equals NaN -----------------------------------------------------------------
def test_tripartite_make_with_nan_in_make_fetch(schema):
    Signal = declare_signal(schema)
    Signal.insert([(i, float(i)) for i in range(2)])

    @schema
    class Filtered(dj.Computed):
        definition = """
        -> Signal
        ---
        total : float64
        """

        def make_fetch(self, key):
            amplitude = (Signal & key).fetch1("amplitude")
            nan = float("nan")
            return (nan, [amplitude, nan], {"gap": nan, "a": amplitude}, np.array([amplitude, np.nan]),
                    (Signal & key).to_arrays())

        def make_compute(self, key, nan, pair, gaps, array, rows):
            assert math.isnan(nan)
            return (float(np.nansum(array)),)

        def make_insert(self, key, total):
            self.insert1(dict(key, total=total))

    result = Filtered.populate(suppress_errors=True)
    assert result == {"success_count": 2, "error_list": []}
    assert sorted(Filtered.to_arrays("total").tolist()) == [0.0, 1.0]


def test_tripartite_change_next_to_nan_is_still_seen(schema):
    """NaN equal to NaN does not make other changes look equal: a changed value beside a NaN fails."""
    Signal = declare_signal(schema)
    Signal.insert1((0, 1.0))
    calls = []

    @schema
    class Moving(dj.Computed):
        definition = """
        -> Signal
        ---
        total : float64
        """

        def make_fetch(self, key):
            calls.append(1)
            return ([float("nan"), float(len(calls))],)

        def make_compute(self, key, values):
            return (1.0,)

        def make_insert(self, key, total):
            self.insert1(dict(key, total=total))

    result = Moving.populate(suppress_errors=True)
    assert result["success_count"] == 0
    assert "make_fetch" in result["error_list"][0][1] and "changed" in result["error_list"][0][1]
    assert len(Moving()) == 0
