"""dj.gc: garbage collection of object stores never deletes what a row still refers to."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import joinflow as dj
from joinflow import storage
from joinflow.errors import DataJointError

REPORT_KEYS = {
    "hash_paths_referenced", "hash_paths_stored", "hash_paths_orphaned", "hash_paths_orphaned_bytes",
    "orphaned_hash_paths", "schema_paths_referenced", "schema_paths_stored", "schema_paths_orphaned",
    "schema_paths_orphaned_bytes", "orphaned_schema_paths", "hash_paths_deleted", "schema_paths_deleted",
    "deleted", "bytes_freed", "errors", "scan_errors", "dry_run",
    "grace_period", "kept_paths", "other_databases",
}


def files_under(root: Path) -> list[Path]:
    """The objects in a local store (joinflow's list of the databases using it, `_joinflow/`, left out)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "_joinflow" not in p.relative_to(root).parts) \
        if root.exists() else []


@pytest.fixture
def stores(connection, tmp_path):
    root = tmp_path / "store"
    connection.config["stores"] = {
        "default": "main",
        "main": {"protocol": "file", "location": str(root)},
        "other": {"protocol": "file", "location": str(tmp_path / "other")},
    }
    return root


def test_gc_is_a_lazy_module_attribute():
    import joinflow

    assert joinflow.gc.GarbageCollector is dj.gc.GarbageCollector
    with pytest.raises(DataJointError, match="at least one schema"):
        dj.gc.GarbageCollector()


@pytest.mark.backend
def test_gc_keeps_shared_objects_and_deletes_orphans(schema, schema_names, connection, stores, tmp_path):
    @schema
    class Subject(dj.Manual):
        definition = """
        subject_id : int32
        ---
        photo = null : <blob@>
        notes = null : <hash@>
        elsewhere = null : <blob@other>
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session_id : int32
        ---
        trace = null : <blob@>
        array = null : <npy@>
        folder = null : <object@>
        """

    shared = np.arange(1000)  # one hash object, referenced by two rows of two tables
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.bin").write_bytes(b"xx")
    Subject.insert([
        {"subject_id": 1, "photo": shared, "notes": b"first", "elsewhere": "other store"},
        {"subject_id": 2, "photo": shared, "notes": b"second", "elsewhere": None},
    ])
    Session.insert([
        {"subject_id": 1, "session_id": 1, "trace": shared, "array": np.ones(4), "folder": str(folder)},
        {"subject_id": 2, "session_id": 1, "trace": "own", "array": np.zeros(3), "folder": None},
    ])
    # a second schema in the same store: never touched by a collector of the first
    other_schema = dj.Schema(schema_names(), connection=connection)

    @other_schema
    class Unrelated(dj.Manual):
        definition = """
        item : int32
        ---
        data : <blob@>
        """

    Unrelated.insert1({"item": 1, "data": "kept forever"})
    Unrelated.delete_quick()  # orphaned, but not in the collected schema
    everything = files_under(stores)
    collector = dj.gc.GarbageCollector(schema, grace_period=0)
    report = collector.collect()
    assert set(report) == REPORT_KEYS | {"stale_temp_paths", "stale_temp_deleted"} and report["dry_run"] is True
    assert report["hash_paths_referenced"] == 4 and report["hash_paths_stored"] == 4  # shared, first, second, own
    assert report["hash_paths_orphaned"] == 0 and report["schema_paths_orphaned"] == 0
    assert report["schema_paths_referenced"] == 3  # two npy files and the folder
    assert report["schema_paths_stored"] == 4  # + the folder's file and manifest, - the folder itself
    assert collector.collect(dry_run=False)["deleted"] == 0 and files_under(stores) == everything

    # delete rows: the shared object stays while any row (in any table) refers to it
    (Subject & {"subject_id": 2}).delete()
    report = collector.collect(dry_run=True)
    digest = storage.content_hash(dj.blob.pack(shared))
    assert report["orphaned_hash_paths"] == sorted(
        f"_hash/{schema.database}/{storage.content_hash(x)}" for x in (b"second", dj.blob.pack("own")))
    assert len(report["orphaned_schema_paths"]) == 1 and report["orphaned_schema_paths"][0].endswith(".npy")
    assert report["hash_paths_orphaned_bytes"] == len(b"second") + len(dj.blob.pack("own"))
    assert files_under(stores) == everything  # a dry run deletes nothing
    report = collector.collect(dry_run=False)
    assert report["deleted"] == 3 and report["hash_paths_deleted"] == 2 and report["schema_paths_deleted"] == 1
    assert report["bytes_freed"] > 0 and report["errors"] == 0 and report["dry_run"] is False
    assert (stores / "_hash" / schema.database / digest).exists()
    row = (Session & {"subject_id": 1}).fetch1()
    assert np.array_equal(row["trace"], shared) and np.array_equal(row["array"].load(), np.ones(4))
    assert row["folder"].listdir() == ["sub"] and (Subject & {"subject_id": 1}).fetch1("notes") == b"first"

    # the last rows go: everything of this schema is collected, the other schema's orphan stays
    (Subject & {"subject_id": 1}).delete()
    report = collector.collect(dry_run=False)
    assert report["hash_paths_deleted"] == 2 and report["schema_paths_deleted"] == 3
    left = files_under(stores)
    assert len(left) == 1 and left[0].parts[-2] == other_schema.database
    assert not (stores / "_schema" / schema.database).exists() or not files_under(stores / "_schema")
    # the other store is collected separately
    assert len(files_under(tmp_path / "other")) == 1
    assert dj.gc.GarbageCollector(schema, store="other", grace_period=0).collect(dry_run=False)["hash_paths_deleted"] == 1
    assert files_under(tmp_path / "other") == []


@pytest.mark.backend
def test_gc_refuses_to_delete_after_a_scan_error(schema, connection, stores, monkeypatch):
    @schema
    class Item(dj.Manual):
        definition = """
        item : int32
        ---
        data : <blob@>
        """

    Item.insert([{"item": 1, "data": "one"}, {"item": 2, "data": "two"}])
    (Item & {"item": 2}).delete()
    collector = dj.gc.GarbageCollector(schema, grace_period=0)
    real = collector._references

    def failing(section, verbose):
        if section == "hash":
            collector._scan_errors.append("simulated: table could not be read")
            return set()  # a partial scan: every stored object would look orphaned
        return real(section, verbose)

    monkeypatch.setattr(collector, "_references", failing)
    report = collector.collect(dry_run=True)
    assert report["scan_errors"] and report["hash_paths_orphaned"] == 2
    with pytest.raises(DataJointError, match="refused to delete anything"):
        collector.collect(dry_run=False)
    assert len(files_under(stores)) == 2
    monkeypatch.undo()
    assert collector.collect(dry_run=False)["hash_paths_deleted"] == 1
    assert (Item & {"item": 1}).fetch1("data") == "one"


def test_gc_deletes_only_inside_its_sections(tmp_path):
    cfg = dj.config.copy()
    cfg["stores"] = {"main": {"protocol": "file", "location": str(tmp_path)}}

    class FakeSchema:
        database = "s"
        connection = None

    collector = dj.gc.GarbageCollector(FakeSchema(), store="main", config=cfg, grace_period=0)
    (tmp_path / "raw.txt").write_text("user data")
    with pytest.raises(DataJointError, match="schema-addressed section"):
        collector.delete_schema_path("raw.txt")
    assert (tmp_path / "raw.txt").exists()
    assert collector.delete_schema_path("_schema/s/t/k=1/f_abcd") is False
    target = tmp_path / "_schema" / "s" / "t" / "k=1" / "f_abcd"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert collector.delete_schema_path("_schema/s/t/k=1/f_abcd") is True
    assert not (tmp_path / "_schema" / "s").exists() and (tmp_path / "_schema").exists()  # empty folders pruned
    assert os.listdir(tmp_path) == ["raw.txt", "_schema"] or set(os.listdir(tmp_path)) == {"raw.txt", "_schema"}
