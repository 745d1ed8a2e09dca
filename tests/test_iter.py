"""`for row in query` streams: rows come from the server in batches as the loop consumes them,
so memory stays flat; the session stays usable inside the loop; a transaction sees its own rows."""

from __future__ import annotations

import tracemalloc
import uuid

import numpy as np
import pytest

import joinflow as dj
from joinflow import errors, expression


def declare_readings(schema):
    @schema
    class Reading(dj.Manual):
        definition = """
        reading_id : int64
        ---
        value : float64
        tag : uuid
        meta : json
        trace : <blob>
        """

    @schema
    class Log(dj.Manual):
        definition = """
        log_id : int64
        """

    return Reading, Log


def fill(Reading, n):
    Reading.insert([{"reading_id": i, "value": i / 4, "tag": uuid.UUID(int=i), "meta": {"i": i},
                     "trace": np.arange(3) * i} for i in range(n)])


def test_iteration_gives_the_rows_to_dicts_gives(schema, monkeypatch):
    Reading, _ = declare_readings(schema)
    fill(Reading, 23)
    monkeypatch.setattr(expression, "ITER_BATCH", 5)  # several batches, the last one short
    streamed = sorted(Reading(), key=lambda r: r["reading_id"])
    fetched = Reading.to_dicts(order_by="reading_id")
    assert [r.keys() for r in streamed] == [r.keys() for r in fetched]
    for a, b in zip(streamed, fetched):
        assert a["tag"] == b["tag"] == uuid.UUID(int=a["reading_id"]) and a["meta"] == {"i": a["reading_id"]}
        assert np.array_equal(a["trace"], b["trace"]) and a["value"] == b["value"]
    assert sorted(r["reading_id"] for r in (Reading & "reading_id > 20")) == [21, 22]


def test_memory_stays_flat_while_iterating(schema):
    @schema
    class Big(dj.Manual):
        definition = """
        big_id : int64
        ---
        label : varchar(40)
        """

    n = 60_000
    Big.insert([{"big_id": i, "label": f"label number {i}"} for i in range(n)])
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    assert len(Big.to_dicts()) == n
    whole = tracemalloc.get_traced_memory()[1] - base
    base = tracemalloc.get_traced_memory()[0]  # (a driver may keep its last result until the next statement)
    tracemalloc.reset_peak()
    assert sum(1 for _ in Big()) == n
    streamed = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert streamed < whole / 5, (streamed, whole)


def test_the_session_stays_usable_inside_the_loop(schema, monkeypatch):
    Reading, Log = declare_readings(schema)
    fill(Reading, 12)
    monkeypatch.setattr(expression, "ITER_BATCH", 4)
    for row in Reading():
        Log.insert1({"log_id": row["reading_id"]})  # a write between batches of the read
        assert (Reading & {"reading_id": row["reading_id"]}).fetch1("value") == row["value"]
    assert len(Log()) == 12


def test_a_transaction_sees_its_own_rows_while_iterating(schema):
    Reading, _ = declare_readings(schema)
    fill(Reading, 3)
    conn = schema.connection
    with conn.transaction:
        Reading.insert1({"reading_id": 99, "value": 1.0, "tag": uuid.UUID(int=99), "meta": {}, "trace": [1]})
        assert sorted(r["reading_id"] for r in Reading()) == [0, 1, 2, 99]
    assert len(Reading()) == 4


def test_leaving_the_loop_early_releases_the_reader(schema, monkeypatch):
    Reading, _ = declare_readings(schema)
    fill(Reading, 30)
    monkeypatch.setattr(expression, "ITER_BATCH", 2)
    pool = schema.connection.engine.pool
    before = pool.checkedout() if hasattr(pool, "checkedout") else None
    for _ in range(40):  # more than the pool holds: a leaked reader would exhaust it
        for row in Reading():
            break
    if before is not None:
        assert pool.checkedout() == before
    assert len(Reading()) == 30


def test_a_bad_query_fails_with_a_clear_error_when_iterated(schema):
    Reading, _ = declare_readings(schema)
    fill(Reading, 2)
    with pytest.raises(errors.DataJointError, match="no_such_column"):
        list(Reading & "no_such_column > 1")
