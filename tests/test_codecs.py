"""Codec API, <attach>, object stores (<hash@>, <blob@>, <attach@>, the <x@> default) and their integrity."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import joinflow as dj
from joinflow import codecs, storage
from joinflow.errors import DataJointError, DataTypeError, DeclarationError, MissingExternalFile


# --------------------------------------------------------------------------------------------
# the codec API
# --------------------------------------------------------------------------------------------
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class PointCodec(dj.Codec):
    """A point stored as text (a codec over a core type)."""

    name = "point"

    def get_dtype(self, is_store):
        return "varchar(64)"

    def validate(self, value):
        if not isinstance(value, Point):
            raise TypeError(f"<point> expects a Point, got {type(value).__name__}")

    def encode(self, value, *, key=None, context=None, store_name=None):
        return f"{value.x},{value.y}"

    def decode(self, stored, *, key=None, context=None):
        x, y = stored.split(",")
        return Point(float(x), float(y))


class GraphCodec(dj.Codec):
    """A graph as an edge list, chained through <blob> (in the table or in a store)."""

    name = "edges"
    seen_keys: list = []

    def get_dtype(self, is_store):
        return "<blob>"

    def encode(self, value, *, key=None, context=None, store_name=None):
        GraphCodec.seen_keys.append((dict(key or {}), (context or {}).get("field")))
        return {"nodes": sorted(value), "edges": sorted(map(list, value.get("edges", ())))} if isinstance(value, set) \
            else {"nodes": value["nodes"], "edges": value["edges"]}

    def decode(self, stored, *, key=None, context=None):
        return stored


class LegacySignatureCodec(dj.Codec):
    """A codec written for DataJoint < 2.3.4: no `context` keyword."""

    name = "legacy_upper"

    def get_dtype(self, is_store):
        return "varchar(32)"

    def encode(self, value, *, key=None, store_name=None):
        return value.upper()

    def decode(self, stored, *, key=None):
        return stored.lower()


def test_registry():
    names = dj.list_codecs()
    for name in ("blob", "attach", "hash", "point", "edges"):
        assert name in names
    assert isinstance(dj.get_codec("point"), PointCodec)
    assert dj.get_codec("<blob@store>") is dj.get_codec("blob")
    with pytest.raises(DataJointError, match="not registered"):
        dj.get_codec("nope")
    with pytest.raises(DataJointError, match="already registered"):
        class Other(dj.Codec):
            name = "point"

            def get_dtype(self, is_store):
                return "json"

    class Abstract(dj.Codec, register=False):
        name = "abstract_base"

    assert "abstract_base" not in dj.list_codecs()


def test_chain_resolution():
    chain = codecs.resolve("<edges@cold>")
    assert [c.name for c in chain.codecs] == ["edges", "blob", "hash"]
    assert chain.dtype == "json" and chain.store == "cold"
    assert codecs.resolve("<edges>").dtype == "bytes"
    assert codecs.resolve("<blob@>").store == ""
    with pytest.raises(DataJointError, match="object store only"):
        codecs.resolve("<hash>")

    class Loop(dj.Codec):
        name = "loop_a"

        def get_dtype(self, is_store):
            return "<loop_a>"

    with pytest.raises(DeclarationError, match="cycle"):
        codecs.resolve("<loop_a>")
    codecs.unregister_codec("loop_a")


def test_codecs_from_entry_points(tmp_path, monkeypatch):
    """A third-party package registers codecs through `joinflow.codecs` or DataJoint's `datajoint.codecs`."""
    (tmp_path / "third_party_codecs.py").write_text(textwrap.dedent("""
        class Reversed:                      # duck-typed (e.g. written against datajoint.Codec)
            name = "reversed_text"
            def get_dtype(self, is_store):
                return "varchar(64)"
            def encode(self, value, *, key=None, store_name=None):
                return value[::-1]
            def decode(self, stored, *, key=None):
                return stored[::-1]
            def validate(self, value):
                pass
            def referenced_paths(self, stored):
                return []
    """))
    dist = tmp_path / "third_party_codecs-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: third-party-codecs\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[datajoint.codecs]\nreversed_text = third_party_codecs:Reversed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(codecs, "_entry_points_loaded", False)
    try:
        assert "reversed_text" in dj.list_codecs()
        assert codecs.resolve("<reversed_text>").dtype == "varchar(64)"
    finally:
        codecs.unregister_codec("reversed_text")
        sys.modules.pop("third_party_codecs", None)


@pytest.mark.backend
def test_custom_codecs_round_trip(schema, connection):
    GraphCodec.seen_keys.clear()

    @schema
    class Shape(dj.Manual):
        definition = """
        shape_id : int32
        ---
        center : <point>           # a custom codec over varchar
        graph = null : <edges>     # chained through <blob>
        label = null : <legacy_upper>
        """

    Shape.insert([
        {"shape_id": 1, "center": Point(1.5, -2), "graph": {"nodes": [1, 2], "edges": [[1, 2]]}, "label": "abc"},
        {"shape_id": 2, "center": Point(0, 0), "graph": None, "label": None},
    ])
    rows = Shape.to_dicts(order_by="shape_id")
    assert rows[0]["center"] == Point(1.5, -2.0)
    assert rows[0]["graph"] == {"nodes": [1, 2], "edges": [[1, 2]]}
    assert rows[0]["label"] == "abc"
    assert rows[1]["graph"] is None and rows[1]["label"] is None
    assert GraphCodec.seen_keys == [({"shape_id": 1}, "graph")]  # encode gets the row's key and context
    assert (Shape & {"shape_id": 1}).fetch1("center") == Point(1.5, -2.0)
    # the stored value is the codec's text, queryable in SQL
    raw = connection.execute(f"SELECT center, label FROM {Shape.full_table_name} WHERE shape_id = 1").fetchone()
    assert tuple(raw) == ("1.5,-2", "ABC")
    with pytest.raises(DataTypeError, match=r"attribute `center` \(<point>\).*expects a Point"):
        Shape.insert1({"shape_id": 3, "center": (1, 2)})
    connection.forget_catalog()
    heading = dj.FreeTable(connection, Shape.full_table_name).heading
    assert heading["center"].type == "<point>" and heading["center"].comment == "a custom codec over varchar"
    assert heading["graph"].type == "<edges>"


@pytest.mark.backend
def test_codec_declaration_errors(schema):
    with pytest.raises(DeclarationError, match="<nosuchcodec> is not registered"):
        @schema
        class Bad(dj.Manual):
            definition = """
            bad_id : int32
            ---
            value : <nosuchcodec>
            """

    with pytest.raises(DeclarationError, match="primary-key attribute `value`"):
        @schema
        class BadKey(dj.Manual):
            definition = """
            value : <blob>
            """

    with pytest.raises(DeclarationError, match="Store 'nowhere' is requested but not configured"):
        @schema
        class BadStore(dj.Manual):
            definition = """
            bad_id : int32
            ---
            value : <blob@nowhere>
            """

    with pytest.raises(DeclarationError, match="only a null default"):
        @schema
        class BadDefault(dj.Manual):
            definition = """
            bad_id : int32
            ---
            value = 5 : <blob>
            """


# --------------------------------------------------------------------------------------------
# <attach>
# --------------------------------------------------------------------------------------------
@pytest.mark.backend
def test_attach_in_table(schema, connection, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "notes.txt").write_bytes(b"first version\n")
    (source / "data.bin").write_bytes(bytes(range(256)) * 100)
    download = tmp_path / "downloads"
    connection.config["download_path"] = str(download)

    @schema
    class Document(dj.Manual):
        definition = """
        doc_id : int32
        ---
        file : <attach>
        """

    Document.insert([{"doc_id": 1, "file": source / "notes.txt"}, {"doc_id": 2, "file": str(source / "data.bin")}])
    path = (Document & {"doc_id": 1}).fetch1("file")
    assert Path(path) == download / "notes.txt" and Path(path).read_bytes() == b"first version\n"
    assert (Document & {"doc_id": 1}).fetch1("file") == path  # the same content is not extracted twice
    assert Path((Document & {"doc_id": 2}).fetch1("file")).read_bytes() == bytes(range(256)) * 100
    # a different file of the same name does not overwrite the first one
    (source / "notes.txt").write_bytes(b"second version\n")
    Document.insert1({"doc_id": 3, "file": source / "notes.txt"})
    other = (Document & {"doc_id": 3}).fetch1("file")
    assert Path(other).name == "notes_1.txt" and Path(other).read_bytes() == b"second version\n"
    assert Path(path).read_bytes() == b"first version\n"

    with pytest.raises(DataTypeError, match=r"attribute `file` \(<attach>\).*does not exist"):
        Document.insert1({"doc_id": 4, "file": source / "missing.txt"})
    with pytest.raises(DataTypeError, match="directory"):
        Document.insert1({"doc_id": 4, "file": source})


def test_attach_never_writes_outside_the_download_path(tmp_path):
    codec = dj.get_codec("attach")
    cfg = dj.config.copy()
    cfg["download_path"] = str(tmp_path / "dl")
    for hostile in (b"../../escape.txt", b"/etc/passwd_copy", b"..", b"sub/../../x"):
        result = Path(codec.decode(hostile + b"\0payload", context={"config": cfg}))
        assert result.parent == tmp_path / "dl" and result.read_bytes() == b"payload"
    assert not (tmp_path / "escape.txt").exists()


# --------------------------------------------------------------------------------------------
# object stores
# --------------------------------------------------------------------------------------------
@pytest.fixture
def stores(connection, tmp_path):
    """A file store `main` (the default) and an in-memory store `scratch`."""
    root = tmp_path / "store"
    memory_root = f"jf-test-{os.getpid()}-{tmp_path.name}"
    connection.config["stores"] = {
        "default": "main",
        "main": {"protocol": "file", "location": str(root)},
        "scratch": {"protocol": "memory", "location": memory_root},
        "folded": {"protocol": "file", "location": str(tmp_path / "folded"), "subfolding": [2, 2]},
    }
    yield root
    storage.get_store(connection.config, "scratch").fs.rm("/" + memory_root, recursive=True) \
        if storage.get_store(connection.config, "scratch").fs.exists("/" + memory_root) else None


def files_under(root: Path) -> list[Path]:
    """The objects in a local store (joinflow's list of the databases using it, `_joinflow/`, left out)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "_joinflow" not in p.relative_to(root).parts) \
        if root.exists() else []


@pytest.mark.backend
def test_blob_in_stores(schema, connection, stores):
    @schema
    class Recording(dj.Manual):
        definition = """
        rec_id : int32
        ---
        trace : <blob@>               # the default store (broken in DataJoint 2.3.5)
        copy = null : <blob@main>
        scratch = null : <blob@scratch>
        folded = null : <blob@folded>
        """

    trace = np.arange(10_000, dtype=np.float32)
    Recording.insert([
        {"rec_id": 1, "trace": trace, "copy": trace, "scratch": {"a": 1}, "folded": [1, 2]},
        {"rec_id": 2, "trace": trace, "copy": None, "scratch": None, "folded": None},
    ])
    row = (Recording & {"rec_id": 1}).fetch1()
    assert np.array_equal(row["trace"], trace) and row["trace"].dtype == np.float32
    assert np.array_equal(row["copy"], trace) and row["scratch"] == {"a": 1} and row["folded"] == [1, 2]
    # hash-addressed: _hash/{schema}/{base32 md5}; identical content stored once
    digest = storage.content_hash(dj.blob.pack(trace))
    assert len(digest) == 26 and digest == digest.lower() and "=" not in digest
    assert files_under(stores) == [stores / "_hash" / schema.database / digest]
    folded = files_under(stores.parent / "folded")
    assert len(folded) == 1 and folded[0].relative_to(stores.parent / "folded").parts[:2] == ("_hash", schema.database)
    assert len(folded[0].relative_to(stores.parent / "folded").parts) == 5  # _hash/schema/ab/cd/hash
    # the row keeps DataJoint's metadata
    raw = connection.execute(f"SELECT trace FROM {Recording.full_table_name} WHERE rec_id = 1").scalar()
    meta = raw if isinstance(raw, dict) else __import__("json").loads(raw)
    assert meta == {"hash": digest, "path": f"_hash/{schema.database}/{digest}", "schema": schema.database,
                    "store": "main", "size": len(dj.blob.pack(trace))}
    # a missing or modified object is reported, naming the attribute
    (stores / "_hash" / schema.database / digest).write_bytes(b"tampered")
    with pytest.raises(DataJointError, match=r"`trace`.*does not match its hash"):
        (Recording & {"rec_id": 2}).fetch1("trace")
    (stores / "_hash" / schema.database / digest).unlink()
    with pytest.raises(MissingExternalFile, match="missing from store 'main'"):
        (Recording & {"rec_id": 2}).fetch1("trace")
    assert not [p for p in files_under(stores) if ".tmp-" in p.name]  # atomic writes leave no temp files


@pytest.mark.backend
def test_hash_and_attach_in_store(schema, connection, stores, tmp_path):
    connection.config["download_path"] = str(tmp_path / "dl")
    source = tmp_path / "image.png"
    source.write_bytes(b"\x89PNG fake image")

    @schema
    class Asset(dj.Manual):
        definition = """
        asset_id : int32
        ---
        raw = null : <hash@>
        attachment = null : <attach@scratch>
        """

    Asset.insert([{"asset_id": 1, "raw": b"raw bytes", "attachment": source}])
    row = (Asset & {"asset_id": 1}).fetch1()
    assert row["raw"] == b"raw bytes"
    assert Path(row["attachment"]).read_bytes() == b"\x89PNG fake image"
    assert Path(row["attachment"]).name == "image.png"
    with pytest.raises(DataTypeError, match=r"attribute `raw` \(<hash@>\).*stores bytes"):
        Asset.insert1({"asset_id": 2, "raw": "not bytes"})


@pytest.mark.backend
def test_default_store_must_be_configured(schema, connection, tmp_path):
    connection.config["stores"] = {"main": {"protocol": "file", "location": str(tmp_path / "s")}}
    with pytest.raises(DeclarationError, match=r"attribute `value` \(<blob@>\).*stores'\]\['default'\] is not set"):
        @schema
        class NoDefault(dj.Manual):
            definition = """
            item : int32
            ---
            value : <blob@>
            """


@pytest.mark.backend
def test_failed_insert_leaves_no_orphaned_objects(schema, connection, stores):
    """Hash-addressed objects of a failed insert are shared by content, so they are not deleted
    on the spot (another session may reference them by now); no row references them and gc
    collects exactly them, keeping the object row 1 still uses."""
    from joinflow.gc import GarbageCollector

    @schema
    class Sample(dj.Manual):
        definition = """
        sample : int32
        ---
        data : <blob@>
        """

    Sample.insert1({"sample": 1, "data": np.arange(100)})
    kept = files_under(stores)
    assert len(kept) == 1
    with pytest.raises(dj.errors.DuplicateError):  # the second row is a duplicate: nothing is inserted
        Sample.insert([{"sample": 2, "data": np.arange(100)}, {"sample": 1, "data": np.arange(7)},
                       {"sample": 3, "data": "new object"}])
    assert len(Sample()) == 1
    with pytest.raises(DataTypeError):  # an encoding failure midway
        Sample.insert([{"sample": 4, "data": "written first"}, {"sample": 5, "data": object()}])
    leftovers = sorted(set(files_under(stores)) - set(kept))
    assert len(leftovers) == 3  # np.arange(7), "new object", "written first"
    report = GarbageCollector(schema, grace_period=0).collect(dry_run=False)
    assert report["hash_paths_deleted"] == 3 and files_under(stores) == kept
    assert np.array_equal((Sample & {"sample": 1}).fetch1("data"), np.arange(100))


@pytest.mark.backend
def test_rolled_back_transaction_deletes_its_objects(schema, connection, stores):
    @schema
    class Sample(dj.Manual):
        definition = """
        sample : int32
        ---
        data : <blob@>
        """

    with pytest.raises(RuntimeError):
        with connection.transaction:
            Sample.insert1({"sample": 1, "data": "inside a transaction"})
            assert len(files_under(stores)) == 1
            raise RuntimeError("make() failed after the insert")
    assert len(Sample()) == 0 and len(files_under(stores)) == 1  # unreferenced: left to gc
    from joinflow.gc import GarbageCollector

    assert GarbageCollector(schema, grace_period=0).collect(dry_run=False)["hash_paths_deleted"] == 1
    assert files_under(stores) == []
    with connection.transaction:
        Sample.insert1({"sample": 1, "data": "committed"})
    assert len(files_under(stores)) == 1 and (Sample & {"sample": 1}).fetch1("data") == "committed"
    # update1 writes a new object; the old one is left for garbage collection (rows may share it)
    Sample.update1({"sample": 1, "data": "updated"})
    assert (Sample & {"sample": 1}).fetch1("data") == "updated"
    assert len(files_under(stores)) == 2


def test_store_configuration_errors(tmp_path):
    cfg = dj.config.copy()
    cfg["stores"] = {"default": "missing", "nolocation": {"protocol": "file"}, "noproto": {"location": "/x"}}
    with pytest.raises(storage.StoreError, match="Store 'missing' is requested but not configured"):
        storage.get_store(cfg, "")
    with pytest.raises(storage.StoreError, match="needs a `location`"):
        storage.get_store(cfg, "nolocation")
    with pytest.raises(storage.StoreError, match="no `protocol`"):
        storage.get_store(cfg, "noproto")
    assert issubclass(storage.StoreError, DataJointError)


def test_memory_store_put_get_remove():
    cfg = dj.config.copy()
    cfg["stores"] = {"mem": {"protocol": "memory", "location": f"unit-{os.getpid()}"}}
    store = storage.get_store(cfg, "mem")
    meta = storage.put_hash(b"hello", "sch", cfg, "mem")
    assert meta["path"] == f"_hash/sch/{storage.content_hash(b'hello')}" and store.exists(meta["path"])
    assert storage.get_hash(meta, cfg) == b"hello"
    journal = storage.Journal()
    storage.put_hash(b"hello", "sch", cfg, "mem", journal)
    assert not journal  # deduplicated: nothing new was written
    other = storage.put_hash(b"other", "sch", cfg, "mem", journal)
    assert journal
    store.put("_schema/sch/t/k=1/f_token", b"private")
    journal.record(store, "_schema/sch/t/k=1/f_token")
    journal.undo()
    # a private (schema-addressed) object goes; a hash-addressed one may be shared: gc decides
    assert not store.exists("_schema/sch/t/k=1/f_token") and store.exists(other["path"])
    for path in (meta["path"], other["path"]):
        store.remove(path)


def test_large_incompressible_blobs_skip_zlib_when_asked():
    """With skip_incompressible (config blob.compression = "fast"), blobs of 256 KiB or more are
    compressed only when a sample shows it pays; both forms read in DataJoint (a blob without the
    ZL123 frame is valid in its format).  By default the bytes are DataJoint's (test_djapi.py)."""
    import warnings

    noise = np.random.default_rng(1).standard_normal(131072)
    packed = dj.blob.pack(noise, skip_incompressible=True)
    assert packed.startswith(b"mYm\0") and packed == dj.blob.pack(noise, compress=False)
    assert np.array_equal(dj.blob.unpack(packed), noise)
    smooth = np.repeat(np.arange(64.0), 2048)
    assert dj.blob.pack(smooth, skip_incompressible=True).startswith(b"ZL123\0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        djblob = pytest.importorskip("datajoint.blob")
    assert np.array_equal(djblob.unpack(packed), noise)
    assert np.array_equal(djblob.unpack(dj.blob.pack(smooth)), smooth)
