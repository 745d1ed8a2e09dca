"""Fetching many rows whose values live in a remote store reads the objects in one concurrent
request per store (fsspec `cat` of a list), not one request per row; what cannot be read that
way is read, and reported, one by one."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import joinflow as dj
from joinflow import errors, expression, storage


@pytest.fixture
def memory_store(connection):
    connection.config["stores"] = {
        "default": "mem",
        "mem": {"protocol": "memory", "location": f"jf-prefetch-{os.getpid()}-{uuid.uuid4().hex[:8]}"},
    }
    yield storage.get_store(connection.config, "mem")


def declare(schema):
    @schema
    class Trace(dj.Manual):
        definition = """
        trace_id : int32
        ---
        samples : <blob@mem>
        raw = null : <hash@mem>
        """

    return Trace


@pytest.fixture
def reads(monkeypatch):
    """Counts of batched reads (objects per call) and of single reads."""
    counts = {"batches": [], "single": 0}
    get_many, get = storage.Store.get_many, storage.Store.get

    def counting_get_many(self, paths):
        found = get_many(self, paths)
        counts["batches"].append(len(found))
        return found

    def counting_get(self, path):
        if (self.protocol, self.full_path(path)) not in (storage._PREFETCHED.get() or {}):
            counts["single"] += 1
        return get(self, path)

    monkeypatch.setattr(storage.Store, "get_many", counting_get_many)
    monkeypatch.setattr(storage.Store, "get", counting_get)
    return counts


def test_fetch_reads_store_objects_in_one_batch(schema, memory_store, reads, monkeypatch):
    Trace = declare(schema)
    n = 40
    Trace.insert([{"trace_id": i, "samples": np.arange(5) * i, "raw": f"raw {i}".encode()} for i in range(n)])
    rows = Trace.to_dicts(order_by="trace_id")
    assert [list(r["samples"]) for r in rows] == [list(np.arange(5) * i) for i in range(n)]
    assert [r["raw"] for r in rows] == [f"raw {i}".encode() for i in range(n)]
    assert reads["batches"] == [2 * n] and reads["single"] == 0  # both columns: one request
    samples = Trace.to_arrays("samples", order_by="trace_id")
    assert np.array_equal(samples[7], np.arange(5) * 7)
    assert reads["batches"][-1] == n and reads["single"] == 0
    monkeypatch.setattr(expression, "ITER_BATCH", 16)
    assert sum(1 for _ in Trace()) == n
    assert reads["batches"][-3:] == [32, 32, 16] and reads["single"] == 0  # one request per streamed batch
    assert (Trace & {"trace_id": 3}).fetch1("raw") == b"raw 3"  # a single row: a single read


def test_a_missing_object_is_still_reported_by_name(schema, memory_store):
    Trace = declare(schema)
    Trace.insert([{"trace_id": i, "samples": [i], "raw": f"raw {i}".encode()} for i in range(5)])
    stored = Trace.connection.query(f"SELECT raw FROM {Trace.full_table_name} WHERE trace_id = 2")[0][0]
    [(path, _store)] = Trace.heading["raw"].codec.referenced_paths(stored)
    memory_store.remove(path)
    with pytest.raises(errors.MissingExternalFile, match=path):
        Trace.to_dicts()
    assert [r["raw"] for r in (Trace & "trace_id != 2").to_dicts(order_by="trace_id")] == [
        b"raw 0", b"raw 1", b"raw 3", b"raw 4"]
