"""`conn.set_query_cache(name)` / `purge_query_cache()` (DataJoint 2.x): fetched rows are kept in
`config["query_cache"]` and the same query is answered from there, outside transactions only."""

from __future__ import annotations

import os

import pytest

import joinflow as dj
from joinflow import errors


def declare_counts(schema):
    @schema
    class Count(dj.Manual):
        definition = """
        count_id : int32
        ---
        value : float64
        label : varchar(16)
        """

    return Count


def test_cached_reads_until_purged(schema, tmp_path):
    Count = declare_counts(schema)
    conn = schema.connection
    Count.insert([{"count_id": i, "value": i / 2, "label": f"c{i}"} for i in range(3)])
    conn.config["query_cache"] = str(tmp_path / "cache")
    conn.set_query_cache("session1")
    try:
        first = Count.to_dicts(order_by="count_id")
        assert len(os.listdir(tmp_path / "cache")) == 1
        # writes are refused while the cache is on (as DataJoint): cached reads would not see them
        with pytest.raises(errors.DataJointError, match="query cache"):
            Count.insert1({"count_id": 9, "value": 4.5, "label": "late"})
        with pytest.raises(errors.DataJointError, match="query cache"):
            (Count & "count_id = 0").delete_quick()
        with pytest.raises(errors.DataJointError, match="query cache"):
            Count.update1({"count_id": 0, "value": 7.0, "label": "x"})
        conn.set_query_cache(None)
        assert len(Count.to_dicts()) == 3  # nothing was written
        Count.insert1({"count_id": 9, "value": 4.5, "label": "late"})
        conn.set_query_cache("session1")
        assert Count.to_dicts(order_by="count_id") == first  # the cached answer stays
        # another query, first seen now: fetched fresh (and cached from here on)
        assert sorted(Count.to_arrays("label").tolist()) == ["c0", "c1", "c2", "late"]
        with conn.transaction:  # inside a transaction the cache is not used
            assert len(Count.to_dicts(order_by="count_id")) == 4
        assert conn.purge_query_cache() >= 1
        assert [r["count_id"] for r in Count.to_dicts(order_by="count_id")] == [0, 1, 2, 9]
    finally:
        conn.set_query_cache(None)
    assert len(Count.to_dicts()) == 4


def test_set_query_cache_needs_a_folder(schema):
    conn = schema.connection
    conn.config["query_cache"] = None
    with pytest.raises(errors.DataJointError, match=r"dj.config\['query_cache'\]"):
        conn.set_query_cache("x")
    assert conn.purge_query_cache() == 0
