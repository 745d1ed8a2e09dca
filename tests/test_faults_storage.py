"""Storage faults: the object store raises in the middle of a write.

A fault-injecting fsspec filesystem (an in-memory filesystem registered under the test
protocol ``jffault``) fails ``pipe_file`` after writing part of the bytes, or fails the
final rename.  The insert must fail with an error, the row must be absent, and no object
written for the failed insert may stay behind or be referenced; objects that other rows
reference must survive.
"""

from __future__ import annotations

import itertools
import os

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import joinflow as dj
from joinflow import errors

PROTOCOL = "jffault"


class FaultyFileSystem(MemoryFileSystem):
    """Memory filesystem whose writes fail on demand: after ``fail_after`` successful
    writes, the next write stores half of its bytes and raises ``OSError``."""

    protocol = PROTOCOL
    fail_after: int | None = None
    fail_rename = False
    writes = 0

    @classmethod
    def arm(cls, fail_after: int | None = None, fail_rename: bool = False) -> None:
        cls.fail_after, cls.fail_rename, cls.writes = fail_after, fail_rename, 0

    def pipe_file(self, path, value, **kwargs):
        cls = type(self)
        if cls.fail_after is not None and cls.writes >= cls.fail_after:
            super().pipe_file(path, value[: len(value) // 2], **kwargs)  # half-written, then the store fails
            raise OSError(f"injected store failure while writing {path}")
        cls.writes += 1
        return super().pipe_file(path, value, **kwargs)

    def mv(self, path1, path2, **kwargs):
        if type(self).fail_rename:
            raise OSError(f"injected store failure while renaming {path1}")
        return super().mv(path1, path2, **kwargs)


fsspec.register_implementation(PROTOCOL, FaultyFileSystem, clobber=True)
_roots = itertools.count()


@pytest.fixture
def faulty(connection):
    root = f"/jffault-{os.getpid()}-{next(_roots)}"
    stores = dict(connection.config["stores"] or {})
    stores["faulty"] = {"protocol": PROTOCOL, "location": root}
    connection.config["stores"] = stores
    FaultyFileSystem.arm(None)
    yield root
    FaultyFileSystem.arm(None)
    fs = FaultyFileSystem()
    if fs.exists(root):
        fs.rm(root, recursive=True)


def objects(root: str) -> set[str]:
    fs = FaultyFileSystem()
    return {p for p in fs.find(root) if "/_joinflow/" not in p} if fs.exists(root) else set()  # objects only


def collected(table, root: str) -> set[str]:
    """The objects left once garbage collection has run: a failed insert deletes its private
    objects at once and leaves hash-addressed ones (their content may be shared) to gc."""
    from joinflow.gc import GarbageCollector

    schema = dj.Schema(table.database, connection=table.connection, create_schema=False)
    report = GarbageCollector(schema, store="faulty", grace_period=0).collect(dry_run=False)
    assert report["errors"] == 0 and not report["scan_errors"]
    return objects(root)


@pytest.fixture
def recording(schema, faulty):
    @schema
    class Recording(dj.Manual):
        definition = """
        rec_id : int32
        ---
        raw : <hash@faulty>
        trace = null : <blob@faulty>
        """

    # the store's list of the databases using it is written by the first insert: write it now, so that
    # the injected failures hit the objects these tests are about
    from joinflow import storage

    storage.register_database(storage.get_store(schema.connection.config, "faulty"), schema.database,
                              storage.database_identity(schema.connection))
    return Recording


def test_write_fails_mid_object(recording, faulty):
    FaultyFileSystem.arm(fail_after=0)
    with pytest.raises((errors.DataJointError, OSError), match="injected store failure"):
        recording.insert1({"rec_id": 1, "raw": b"x" * 1000})
    assert len(recording()) == 0
    assert objects(faulty) == set()  # the half-written temporary object was removed too


def test_rename_fails(recording, faulty):
    FaultyFileSystem.arm(fail_rename=True)
    with pytest.raises((errors.DataJointError, OSError), match="injected store failure"):
        recording.insert1({"rec_id": 1, "raw": b"y" * 100})
    assert len(recording()) == 0 and collected(recording, faulty) == set()


def test_second_attribute_fails_first_object_removed(recording, faulty):
    FaultyFileSystem.arm(fail_after=1)  # `raw` is written, `trace` fails
    with pytest.raises((errors.DataJointError, OSError), match="injected store failure"):
        recording.insert1({"rec_id": 1, "raw": b"first", "trace": np.arange(50)})
    assert len(recording()) == 0 and collected(recording, faulty) == set()


def test_batch_fails_on_third_row_nothing_inserted(recording, faulty):
    FaultyFileSystem.arm(fail_after=2)
    rows = [{"rec_id": i, "raw": f"payload {i}".encode()} for i in range(5)]
    with pytest.raises((errors.DataJointError, OSError), match="injected store failure"):
        recording.insert(rows)
    assert len(recording()) == 0 and collected(recording, faulty) == set()
    FaultyFileSystem.arm(None)
    recording.insert(rows)  # the store is healthy again: everything goes in
    assert [r["raw"] for r in recording.to_dicts(order_by="rec_id")] == [r["raw"] for r in rows]


def test_shared_object_survives_a_failed_insert(recording, faulty):
    recording.insert1({"rec_id": 1, "raw": b"shared content"})
    before = objects(faulty)
    FaultyFileSystem.arm(fail_after=0)  # row 2 reuses the existing object, row 3's new object fails
    with pytest.raises((errors.DataJointError, OSError), match="injected store failure"):
        recording.insert([{"rec_id": 2, "raw": b"shared content"}, {"rec_id": 3, "raw": b"new content"}])
    assert collected(recording, faulty) == before
    assert (recording & {"rec_id": 1}).fetch1("raw") == b"shared content"


def test_database_refuses_row_objects_removed(recording, faulty):
    recording.insert1({"rec_id": 1, "raw": b"one"})
    before = objects(faulty)
    with pytest.raises(errors.DuplicateError):
        recording.insert1({"rec_id": 1, "raw": b"another value"})  # object written, then the row is refused
    assert collected(recording, faulty) == before
    assert (recording & {"rec_id": 1}).fetch1("raw") == b"one"


def test_rolled_back_transaction_removes_its_objects(recording, faulty):
    conn = recording.connection
    with pytest.raises(RuntimeError):
        with conn.transaction:
            recording.insert1({"rec_id": 5, "raw": b"in a transaction", "trace": [1, 2, 3]})
            raise RuntimeError("the caller gives up")
    assert len(recording()) == 0 and collected(recording, faulty) == set()


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_rollback_does_not_delete_an_object_another_session_now_references(recording, faulty, schema):
    conn = recording.connection
    other = dj.Connection(url=conn.url.render_as_string(hide_password=False), config=conn.config)
    try:
        other_table = dj.FreeTable(other, recording.full_table_name)
        conn.start_transaction()
        recording.insert1({"rec_id": 1, "raw": b"same bytes"})  # writes the object, not committed yet
        other_table.insert1({"rec_id": 2, "raw": b"same bytes"})  # sees the object, reuses it, commits
        conn.cancel_transaction()  # the first insert is rolled back
        assert (recording & {"rec_id": 2}).fetch1("raw") == b"same bytes"
    finally:
        other.close()


def test_gc_removes_a_stale_half_written_upload(schema, tmp_path):
    from joinflow.gc import GarbageCollector

    conn = schema.connection
    stores = dict(conn.config["stores"] or {})
    stores["local"] = {"protocol": "file", "location": str(tmp_path / "objects")}
    conn.config["stores"] = stores

    @schema
    class Blobby(dj.Manual):
        definition = """
        blob_id : int32
        ---
        data : <blob@local>
        """

    Blobby.insert1({"blob_id": 1, "data": [1, 2, 3]})
    folder = tmp_path / "objects" / "_hash" / schema.database
    stale = folder / "abcdefghijklmnopqrstuvwxyz.tmp-0123456789abcdef"
    stale.write_bytes(b"half of an object")
    os.utime(stale, (1, 1))  # written long ago by a process that was killed
    GarbageCollector(schema, store="local", grace_period=0).collect(dry_run=False)
    assert list(Blobby.to_arrays("blob_id")) == [1]
    assert not stale.exists()
