"""`dj.SchemaCodec`: a user codec written the way DataJoint 2.x's documentation shows
(`_extract_context`, `_codec_config`, `_build_path`, `_get_backend`, `put_buffer`) stores its
objects schema-addressed, reads them back, and garbage collection knows its paths."""

from __future__ import annotations

from pathlib import Path

import pytest

import joinflow as dj
from joinflow.gc import GarbageCollector


class TextCodec(dj.SchemaCodec):
    name = "jftext"

    def validate(self, value):
        if not isinstance(value, str):
            raise TypeError(f"<jftext> stores str, got {type(value).__name__}")

    def encode(self, value, *, key=None, context=None, store_name=None):
        schema, table, field, pk = self._extract_context(key, context)
        config = self._codec_config(key, context)
        path, token = self._build_path(schema, table, field, pk, ext=".txt", store_name=store_name, config=config)
        self._get_backend(store_name, config=config).put_buffer(value.encode(), path)
        return {"path": path, "store": store_name, "token": token, "size": len(value.encode())}

    def decode(self, stored, *, key=None, context=None):
        config = self._codec_config(key, context)
        return self._get_backend(stored.get("store"), config=config).get_buffer(stored["path"]).decode()


@pytest.fixture
def notes(schema, tmp_path):
    root = tmp_path / "store"
    schema.connection.config["stores"] = {"default": "main", "main": {"protocol": "file", "location": str(root)}}

    @schema
    class Note(dj.Manual):
        definition = """
        note_id : int32
        ---
        body : <jftext@>
        """

    return Note, root


def test_a_datajoint_style_schema_codec_round_trips(notes, schema):
    Note, root = notes
    Note.insert([{"note_id": 1, "body": "first"}, {"note_id": 2, "body": "second ünïcode"}])
    assert {r["note_id"]: r["body"] for r in Note.to_dicts()} == {1: "first", 2: "second ünïcode"}
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.txt"))
    assert len(files) == 2
    assert all(f.startswith(f"_schema/{schema.database}/note/note_id=") and "/body_" in f for f in files)
    with pytest.raises(dj.errors.DataTypeError, match=r"`body`.*stores str"):
        Note.insert1({"note_id": 3, "body": b"bytes"})
    assert len(Note()) == 2


def test_gc_sees_the_codec_paths(notes, schema):
    Note, root = notes
    Note.insert([{"note_id": i, "body": f"note {i}"} for i in range(3)])
    report = GarbageCollector(schema, store="main", grace_period=0).collect()
    assert report["schema_paths_orphaned"] == 0
    (Note & {"note_id": 0}).delete()
    report = GarbageCollector(schema, store="main", grace_period=0).collect(dry_run=False)
    assert report["schema_paths_deleted"] == 1
    assert len(list(Path(root).rglob("*.txt"))) == 2
    assert sorted(r["body"] for r in Note.to_dicts()) == ["note 1", "note 2"]
