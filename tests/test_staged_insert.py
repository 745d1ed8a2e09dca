"""Table.staged_insert1: <object@> values written in place, the row inserted on exit, nothing left on failure."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import joinflow as dj
from joinflow import storage
from joinflow.errors import DataJointError, DuplicateError, MissingAttributeError, UnknownAttributeError

from test_gc import files_under

pytestmark = pytest.mark.backend


@pytest.fixture
def stores(connection, tmp_path):
    root = tmp_path / "store"
    connection.config["stores"] = {
        "default": "main",
        "main": {"protocol": "file", "location": str(root)},
        "scratch": {"protocol": "memory", "location": f"jf-staged-{os.getpid()}-{tmp_path.name}"},
    }
    yield root
    scratch = storage.get_store(connection.config, "scratch")
    if scratch.fs.exists(scratch.root):
        scratch.fs.rm(scratch.root, recursive=True)


def scratch_files(connection) -> list[str]:
    scratch = storage.get_store(connection.config, "scratch")
    found = scratch.fs.find(scratch.root) if scratch.fs.exists(scratch.root) else []
    return sorted(p for p in found if "/_joinflow/" not in p)  # objects only, not the list of databases


@pytest.fixture
def Recording(schema, stores):
    @schema
    class Recording(dj.Manual):
        definition = """
        rec_id : int32
        ---
        rig : varchar(16)
        notes = null : <object@>
        traces = null : <object@scratch>
        meta = null : <blob>
        """

    return Recording


def test_file_and_folder_are_written_in_place_then_inserted(Recording, connection, stores):
    with Recording.staged_insert1 as s:  # through the class, as in DataJoint
        s.rec["rec_id"] = 1
        with s.open("notes", ".txt") as f:
            f.write(b"hello notes")
        mapper = s.store("traces", ".zarr")
        mapper[".zarray"] = b'{"shape": [4]}'
        mapper["0/0"] = b"\x01\x02\x03"
        s.rec["rig"] = "A"
        assert len(Recording()) == 0  # nothing inserted inside the block
        assert not files_under(stores) or all(".tmp-" in str(p) for p in files_under(stores))
    row = (Recording & {"rec_id": 1}).fetch1()
    assert row["rig"] == "A"
    notes = row["notes"]
    assert isinstance(notes, dj.ObjectRef) and notes.read() == b"hello notes" and notes.verify()
    # the path an ordinary insert would use: table name, key, field, token, extension
    table = Recording.table_name
    assert re.fullmatch(rf"_schema/{Recording.database}/{re.escape(table)}/rec_id=1/notes_[\w-]{{8}}\.txt", notes.path)
    assert notes.size == 11 and notes.ext == ".txt" and not notes.is_dir and notes.store == "main"
    traces = row["traces"]
    assert traces.is_dir and traces.item_count == 2 and traces.size == 17 and traces.store == "scratch"
    assert traces.path.endswith(".zarr") and traces.ext == ".zarr"
    assert sorted(traces.listdir()) == [".zarray", "0"] and traces.verify()
    with traces.open("0/0") as f:
        assert f.read() == b"\x01\x02\x03"
    assert json.loads(storage.get_store(connection.config, "scratch").get(traces.path + ".manifest.json"))[
        "item_count"] == 2
    # the stored JSON is DataJoint's
    raw = connection.execute(f"SELECT notes FROM {Recording.full_table_name}").scalar()
    meta = raw if isinstance(raw, dict) else json.loads(raw)
    assert set(meta) == {"path", "store", "size", "ext", "is_dir", "item_count", "timestamp"}
    # no temporary names are left
    assert [p.name for p in files_under(stores)] == [Path(notes.path).name]
    assert not [p for p in scratch_files(connection) if ".tmp-" in p]


def test_text_mode_and_an_unclosed_file(Recording):
    with Recording().staged_insert1 as s:
        s.rec.update(rec_id=2, rig="B")
        f = s.open("notes", "csv", mode="w")
        f.write("a,b\n1,2\n")  # left open: closed (flushed) on exit
    ref = (Recording & {"rec_id": 2}).fetch1("notes")
    assert ref.read() == b"a,b\n1,2\n" and ref.path.endswith(".csv") and ref.size == 8


def test_an_exception_in_the_block_removes_the_objects(Recording, connection, stores):
    with pytest.raises(RuntimeError, match="acquisition failed"):
        with Recording.staged_insert1 as s:
            s.rec.update(rec_id=3, rig="C")
            with s.open("notes", ".txt") as f:
                f.write(b"partial")
            s.store("traces")["chunk"] = b"123"
            raise RuntimeError("acquisition failed")
    assert len(Recording()) == 0
    assert files_under(stores) == [] and scratch_files(connection) == []


def test_a_failed_insert_removes_the_objects(Recording, connection, stores):
    Recording.insert1({"rec_id": 4, "rig": "D"})
    with pytest.raises(DuplicateError):
        with Recording.staged_insert1 as s:
            s.rec.update(rec_id=4, rig="again")
            with s.open("notes", ".txt") as f:
                f.write(b"x")
            s.store("traces")["a"] = b"1"
    assert (Recording & {"rec_id": 4}).fetch1("rig") == "D"
    assert files_under(stores) == [] and scratch_files(connection) == []
    # a value the column cannot hold: refused by insert1, objects removed
    with pytest.raises(DataJointError, match="rig"):
        with Recording.staged_insert1 as s:
            s.rec.update(rec_id=5, rig="x" * 40)
            with s.open("notes") as f:
                f.write(b"x")
    assert files_under(stores) == [] and len(Recording & {"rec_id": 5}) == 0


def test_a_rolled_back_transaction_removes_the_objects(Recording, connection, stores):
    with pytest.raises(ZeroDivisionError):
        with connection.transaction:
            with Recording.staged_insert1 as s:
                s.rec.update(rec_id=6, rig="E")
                with s.open("notes", ".txt") as f:
                    f.write(b"inside a transaction")
            assert len(Recording & {"rec_id": 6}) == 1 and len(files_under(stores)) == 1
            1 / 0
    assert len(Recording()) == 0 and files_under(stores) == []


def test_bad_staging_is_refused_with_a_clear_error(Recording, connection, stores):
    name = Recording.full_table_name
    with Recording.staged_insert1 as s:
        with pytest.raises(DataJointError, match=r"`meta` is <blob>; only <object@> attributes can be staged "
                                                 r"\(notes, traces\)") as info:
            s.open("meta")
        assert name in str(info.value) and "s.rec['meta']" in str(info.value)
        with pytest.raises(DataJointError, match="`rig` is varchar"):
            s.store("rig")
        with pytest.raises(UnknownAttributeError, match="`nope` is not in the table heading"):
            s.open("nope")
        with pytest.raises(MissingAttributeError, match=r"set s.rec\['rec_id'\] before"):
            s.open("notes")  # the path is built from the primary key
        s.rec.update(rec_id=7, rig="F")
        with pytest.raises(DataJointError, match="plain suffix"):
            s.open("notes", "../../x")
        with pytest.raises(DataJointError, match="mode 'wb'"):
            s.open("notes", mode="rb")
        with s.open("notes") as f:
            f.write(b"ok")
        with pytest.raises(DataJointError, match="already staged"):
            s.store("notes")
    assert (Recording & {"rec_id": 7}).fetch1("notes").read() == b"ok"
    # the key changed after staging, or nothing written: refused on exit, nothing left
    with pytest.raises(DataJointError, match="primary key changed"):
        with Recording.staged_insert1 as s:
            s.rec.update(rec_id=8, rig="G")
            s.store("traces")["a"] = b"1"
            s.rec["rec_id"] = 9
    with pytest.raises(DataJointError, match="nothing was written"):
        with Recording.staged_insert1 as s:
            s.rec.update(rec_id=8, rig="G")
            s.store("traces")
    assert len(Recording & "rec_id > 7") == 0 and scratch_files(connection) == []
    assert len(files_under(stores)) == 1  # only rec_id=7's object
    # only inside a with statement
    with pytest.raises(DataJointError, match="with statement"):
        Recording.staged_insert1.open("notes")
