"""Schema-addressed objects: the layout and its path safety, <object@>, <npy@>, <filepath@>,
and their integrity with the rows (failed inserts and makes, deletes)."""

from __future__ import annotations

import datetime
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import joinflow as dj
from joinflow import storage
from joinflow.errors import DataJointError, DataTypeError, MissingExternalFile
from joinflow.objectref import IntegrityError


def files_under(root: Path) -> list[Path]:
    """The objects in a local store (joinflow's list of the databases using it, `_joinflow/`, left out)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "_joinflow" not in p.relative_to(root).parts) \
        if root.exists() else []


def local_store(tmp_path, **extra) -> storage.Store:
    return storage.Store("main", {"protocol": "file", "location": str(tmp_path / "store"), **extra})


# --------------------------------------------------------------------------------------------
# the layout: _schema/{schema}/{table}/{pk}={v}/.../{field}_{token}{ext}
# --------------------------------------------------------------------------------------------
def test_schema_addressed_layout(tmp_path):
    store = local_store(tmp_path)
    path = storage.build_object_path(store, "lab", "session", "video", {"subject": 7, "session": 2}, ".mp4")
    assert re.fullmatch(r"_schema/lab/session/subject=7/session=2/video_[A-Za-z0-9_-]{8}\.mp4", path)
    assert storage.build_object_path(store, "lab", "t", "f", {"k": 1}, "npy").endswith(".npy")
    assert re.fullmatch(r"_schema/lab/t/f_[A-Za-z0-9_-]{8}", storage.build_object_path(store, "lab", "t", "f", {}))
    # the token length is configurable and clamped to 4..16, like DataJoint
    for asked, got in ((12, 12), (2, 4), (40, 16)):
        path = storage.build_object_path(local_store(tmp_path, token_length=asked), "s", "t", "f", {"k": 1})
        assert len(path.split("/f_", 1)[1]) == got
    # prefix and partition pattern of the store
    store = local_store(tmp_path, schema_prefix="objects", partition_pattern="{subject}")
    path = storage.build_object_path(store, "lab", "t", "f", {"subject": 3, "trial": 1})
    assert path.startswith("objects/subject=3/lab/t/trial=1/f_")
    # primary-key values rendered as DataJoint renders them
    render = storage.encode_pk_value
    assert render(5) == "5" and render(2.5) == "2.5" and render("mouse_1") == "mouse_1"
    assert render(np.int64(4)) == "4"
    assert render(datetime.datetime(2024, 5, 6, 7, 8, 9, 123)) == "2024-05-06T07-08-09"
    assert render(datetime.date(2024, 5, 6)) == "2024-05-06"
    assert render("a:b") == "a%3Ab"


@pytest.mark.parametrize("value, expected", [
    ("../../etc", "..%2F..%2Fetc"),          # traversal: the separator is quoted
    ("..", ".."),                            # stays inside its `attr=..` component
    ("a/b", "a%2Fb"),
    ("/etc/passwd", "%2Fetc%2Fpasswd"),      # absolute path
    ("C:\\Windows", "C%3A%5CWindows"),       # drive and backslash
    ("bad\0name", "bad%00name"),             # NUL
    ("tab\tnew\nline", "tab%09new%0Aline"),  # control characters
])
def test_primary_key_values_never_escape_the_store(tmp_path, value, expected):
    store = local_store(tmp_path)
    assert storage.encode_pk_value(value) == expected
    path = storage.build_object_path(store, "lab", "t", "f", {"id": 1, "name": value}, ".bin")
    parts = path.split("/")
    assert parts[:4] == ["_schema", "lab", "t", "id=1"] and parts[4] == f"name={expected}" and len(parts) == 6
    full = Path(store.full_path(path))
    assert os.path.realpath(full).startswith(os.path.realpath(tmp_path / "store") + os.sep)
    store.put(path, b"x")  # writable: a valid single file name on this file system
    assert full.read_bytes() == b"x"


def test_very_long_primary_key_values(tmp_path):
    store = local_store(tmp_path)
    long_text = "x" * 500
    rendered = storage.encode_pk_value(long_text)
    assert rendered == "x" * 50 + "_" + __import__("hashlib").md5(long_text.encode()).hexdigest()[:8]  # DataJoint's
    assert storage.encode_pk_value("x" * 499) != rendered  # distinct values stay distinct
    for value in ("é" * 100, "日" * 100, "/" * 300, "\0" * 200):  # within 100 characters but many bytes
        rendered = storage.encode_pk_value(value)
        assert len(rendered.encode()) <= 200 and "/" not in rendered and "\0" not in rendered
        path = storage.build_object_path(store, "s", "t", "f", {"k": value})
        store.put(path, b"ok")
        assert Path(store.full_path(path)).read_bytes() == b"ok"


def test_relative_paths_and_extensions_are_checked():
    for bad in ("../x", "a/../../x", "/abs", "a//b", "./a", "a\0b", "C:\\x", "s3://bucket/x", ""):
        with pytest.raises(ValueError):
            storage.check_relative_path(bad)
    assert storage.check_relative_path("a/b.c") == "a/b.c"
    for bad in ("../x", "/x", ".a/b", "a b", "x" * 40, "..", "."):
        with pytest.raises(ValueError, match="plain suffix"):
            storage.normalize_ext(bad)
    assert storage.normalize_ext("zarr") == ".zarr" and storage.normalize_ext(".tar.gz") == ".tar.gz"
    assert storage.normalize_ext(None) is None


# --------------------------------------------------------------------------------------------
# <object@>, <npy@>, <filepath@> on every backend
# --------------------------------------------------------------------------------------------
@pytest.fixture
def stores(connection, tmp_path):
    root = tmp_path / "store"
    connection.config["stores"] = {
        "default": "main",
        "filepath_default": "raw",
        "main": {"protocol": "file", "location": str(root)},
        "raw": {"protocol": "file", "location": str(tmp_path / "raw")},
        "scratch": {"protocol": "memory", "location": f"jf-obj-{os.getpid()}-{tmp_path.name}"},
    }
    connection.config["download_path"] = str(tmp_path / "downloads")
    yield root
    scratch = storage.get_store(connection.config, "scratch")
    if scratch.fs.exists(scratch.root):
        scratch.fs.rm(scratch.root, recursive=True)


@pytest.mark.backend
def test_object_round_trip(schema, connection, stores, tmp_path):
    @schema
    class Recording(dj.Manual):
        definition = """
        rec_id : int32
        name : varchar(64)
        ---
        raw = null : <object@>
        copy = null : <object@scratch>
        """

    single = tmp_path / "trace.h5"
    single.write_bytes(b"HDF5 bytes")
    folder = tmp_path / "data.zarr"
    (folder / "0").mkdir(parents=True)
    (folder / ".zarray").write_text('{"shape": [4]}')
    (folder / "0" / "0").write_bytes(b"\x01\x02\x03")
    Recording.insert([
        {"rec_id": 1, "name": "bytes", "raw": b"plain bytes", "copy": ("bin", io.BytesIO(b"stream"))},
        {"rec_id": 2, "name": "file", "raw": single, "copy": (".txt", b"text")},
        {"rec_id": 3, "name": "../../escape", "raw": str(folder), "copy": None},
    ])
    by_name = {r["name"]: r for r in Recording.to_dicts()}
    ref = by_name["bytes"]["raw"]
    assert isinstance(ref, dj.ObjectRef) and not ref.is_dir and ref.size == 11 and ref.store == "main"
    assert re.fullmatch(rf"_schema/{schema.database}/recording/rec_id=1/name=bytes/raw_[\w-]{{8}}", ref.path)
    assert ref.read() == b"plain bytes" and ref.exists() and ref.verify()
    assert Path(ref.full_path) == stores / ref.path
    with ref.open() as f:
        assert f.read(5) == b"plain"
    copy = by_name["bytes"]["copy"]
    assert copy.read() == b"stream" and copy.ext == ".bin" and copy.store == "scratch"
    assert by_name["file"]["copy"].read() == b"text" and by_name["file"]["copy"].path.endswith(".txt")
    file_ref = by_name["file"]["raw"]
    assert file_ref.ext == ".h5" and file_ref.path.endswith(".h5") and file_ref.read() == b"HDF5 bytes"
    assert file_ref.download(tmp_path / "dl").read_bytes() == b"HDF5 bytes"
    # a folder: listed, walked, opened file by file, downloaded whole
    zarr = by_name["../../escape"]["raw"]
    assert zarr.is_dir and zarr.item_count == 2 and zarr.size == len('{"shape": [4]}') + 3
    assert "/name=..%2F..%2Fescape/raw_" in zarr.path  # the key value cannot leave the store
    assert zarr.listdir() == [".zarray", "0"] and zarr.listdir("0") == ["0"]
    assert {root: files for root, _, files in zarr.walk()} == {"": [".zarray"], "0": ["0"]}
    with zarr.open("0/0") as f:
        assert f.read() == b"\x01\x02\x03"
    assert zarr.exists("0/0") and not zarr.exists("missing") and zarr.verify()
    assert (zarr.download(tmp_path / "copy") / "0" / "0").read_bytes() == b"\x01\x02\x03"
    assert json.loads((stores / (zarr.path + ".manifest.json")).read_text())["item_count"] == 2
    with pytest.raises(DataJointError, match="is a folder"):
        zarr.read()
    with pytest.raises(ValueError, match=r"'\.\.'"):
        zarr.open("../../../etc/passwd")
    with pytest.raises(DataJointError, match="is a file"):
        ref.listdir()
    # the stored JSON is DataJoint's
    raw = connection.execute(f"SELECT raw FROM {Recording.full_table_name} WHERE rec_id = 2").scalar()
    meta = raw if isinstance(raw, dict) else json.loads(raw)
    assert set(meta) == {"path", "store", "size", "ext", "is_dir", "item_count", "timestamp"}
    assert meta["is_dir"] is False and meta["size"] == 10 and meta["item_count"] is None
    # an ObjectRef inserted elsewhere refers to the same object (no copy)
    Recording.insert1({"rec_id": 4, "name": "again", "raw": file_ref, "copy": None})
    assert (Recording & {"rec_id": 4}).fetch1("raw").path == file_ref.path
    # integrity problems are reported
    (stores / ref.path).write_bytes(b"short")
    with pytest.raises(IntegrityError, match="11"):
        ref.verify()
    (stores / ref.path).unlink()
    with pytest.raises(MissingExternalFile):
        ref.read()
    # bad values: a clear error naming the attribute, and nothing written
    before = files_under(stores)
    with pytest.raises(DataTypeError, match=r"`raw` \(<object@>\).*expects bytes"):
        Recording.insert1({"rec_id": 9, "name": "x", "raw": 3.5})
    with pytest.raises(DataTypeError, match=r"`raw`.*does not exist"):
        Recording.insert1({"rec_id": 9, "name": "x", "raw": tmp_path / "nope.bin"})
    with pytest.raises(DataTypeError, match=r"`raw`.*plain suffix"):
        Recording.insert1({"rec_id": 9, "name": "x", "raw": ("/../../x", b"data")})
    assert files_under(stores) == before and len(Recording & {"rec_id": 9}) == 0


@pytest.mark.backend
def test_npy_round_trip(schema, connection, stores):
    @schema
    class Trace(dj.Manual):
        definition = """
        trace_id : int32
        ---
        samples : <npy@>
        """

    signal = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    fortran = np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4))
    Trace.insert([{"trace_id": 1, "samples": signal}, {"trace_id": 2, "samples": fortran},
                  {"trace_id": 3, "samples": np.array(7.5)}])
    ref = (Trace & {"trace_id": 1}).fetch1("samples")
    assert isinstance(ref, dj.NpyRef) and not ref.is_loaded
    assert ref.shape == (50, 3) and ref.dtype == np.float32 and len(ref) == 50 and ref.nbytes == signal.nbytes
    assert ref.path.endswith(".npy") and ref.path.startswith(f"_schema/{schema.database}/trace/trace_id=1/samples_")
    mapped = ref.load(mmap_mode="r")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, signal)
    assert np.array_equal(np.asarray(ref), signal) and ref.is_loaded and np.array_equal(ref[2:4], signal[2:4])
    assert np.load(stores / ref.path).dtype == np.float32  # a plain .npy file any tool reads
    two = (Trace & {"trace_id": 2}).fetch1("samples").load()
    assert np.array_equal(two, fortran) and two.dtype == np.int16
    assert float((Trace & {"trace_id": 3}).fetch1("samples").load()) == 7.5
    # shape and dtype come from the row: no I/O (works even with the file gone)
    raw = connection.execute(f"SELECT samples FROM {Trace.full_table_name} WHERE trace_id = 1").scalar()
    meta = raw if isinstance(raw, dict) else json.loads(raw)
    assert meta == {"path": ref.path, "store": "main", "dtype": "float32", "shape": [50, 3]}
    (stores / ref.path).unlink()
    lazy = (Trace & {"trace_id": 1}).fetch1("samples")
    assert lazy.shape == (50, 3)
    with pytest.raises(MissingExternalFile):
        lazy.load()
    with pytest.raises(DataTypeError, match=r"`samples` \(<npy@>\).*numpy arrays"):
        Trace.insert1({"trace_id": 4, "samples": [1, 2, 3]})
    with pytest.raises(DataTypeError, match="dtype object"):
        Trace.insert1({"trace_id": 4, "samples": np.array([{}, []], dtype=object)})


@pytest.mark.backend
def test_filepath(schema, connection, stores, tmp_path):
    raw = tmp_path / "raw"
    (raw / "sessions" / "s1").mkdir(parents=True)
    (raw / "sessions" / "s1" / "video.avi").write_bytes(b"frames")
    (stores / "_hash").mkdir(parents=True)
    (stores / "_hash" / "managed").write_bytes(b"x")

    @schema
    class Video(dj.Manual):
        definition = """
        video_id : int32
        ---
        file : <filepath@>        # stores.filepath_default
        elsewhere = null : <filepath@main>
        """

    Video.insert1({"video_id": 1, "file": "sessions/s1/video.avi"})
    Video.insert1({"video_id": 2, "file": "/sessions/s1"})  # a folder; leading '/' means the store root
    ref = (Video & {"video_id": 1}).fetch1("file")
    assert isinstance(ref, dj.ObjectRef) and ref.read() == b"frames" and ref.store == "raw" and ref.size == 6
    folder = (Video & {"video_id": 2}).fetch1("file")
    assert folder.is_dir and folder.listdir() == ["video.avi"] and folder.path == "sessions/s1"
    for bad, message in (("missing.avi", "does not exist"), ("../outside.txt", r"'\.\.'"),
                         ("sessions/../../x", r"'\.\.'"), ("a\0b", "NUL")):
        with pytest.raises(DataTypeError, match=message):
            Video.insert1({"video_id": 3, "file": bad})
    with pytest.raises(DataTypeError, match="section '_hash/'"):
        Video.insert1({"video_id": 3, "file": "sessions/s1/video.avi", "elsewhere": "_hash/managed"})
    with pytest.raises(DataTypeError, match="expects a path"):
        Video.insert1({"video_id": 3, "file": 42})
    assert len(Video()) == 2


@pytest.mark.backend
def test_filepath_with_only_filepath_default(schema, connection, tmp_path):
    """A store set up only for <filepath@> (no stores.default) is enough to declare and use it."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "scan.raw").write_bytes(b"ions")
    connection.config["stores"] = {"filepath_default": "raw",
                                   "raw": {"protocol": "file", "location": str(tmp_path / "raw")}}

    @schema
    class RawFile(dj.Manual):
        definition = """
        raw_id : int32
        ---
        file : <filepath@>
        """

    RawFile.insert1({"raw_id": 1, "file": "scan.raw"})
    assert (RawFile & {"raw_id": 1}).fetch1("file").read() == b"ions"


# --------------------------------------------------------------------------------------------
# integrity: failed inserts and makes leave nothing; deletes leave objects to garbage collection
# --------------------------------------------------------------------------------------------
@pytest.mark.backend
def test_failed_insert_and_make_leave_no_objects(schema, connection, stores, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("a")

    @schema
    class Source(dj.Manual):
        definition = """
        source_id : int32
        ---
        blob_data = null : <blob@>
        """

    @schema
    class Result(dj.Computed):
        definition = """
        -> Source
        ---
        array : <npy@>
        tree : <object@>
        """

        def make(self, key):
            self.insert1(dict(key, array=np.arange(key["source_id"] + 1), tree=str(folder)))
            if key["source_id"] == 2:
                raise RuntimeError("make failed after writing its objects")

    Source.insert([{"source_id": 1, "blob_data": None}, {"source_id": 2, "blob_data": np.arange(3)}])
    kept = files_under(stores)
    # a duplicate key: the insert fails in the database after the objects were written
    Result.insert1({"source_id": 1, "array": np.zeros(2), "tree": b"x"}, allow_direct_insert=True)
    kept = files_under(stores)
    with pytest.raises(dj.errors.DuplicateError):
        Result.insert([{"source_id": 2, "array": np.ones(3), "tree": str(folder)},
                       {"source_id": 1, "array": np.ones(3), "tree": b"again"}], allow_direct_insert=True)
    assert files_under(stores) == kept and len(Result()) == 1
    # a failing make: its transaction is rolled back and the objects it wrote are deleted
    (Result & {"source_id": 1}).delete()
    kept = files_under(stores)
    Result.populate(suppress_errors=True)
    assert [k["source_id"] for k in Result.keys()] == [1]
    written = [p for p in files_under(stores) if p not in kept]
    assert len(written) == 3 and all("source_id=1" in str(p) for p in written)  # npy, tree file, manifest
    assert not [p for p in files_under(stores) if ".tmp-" in p.name]
    # deleting rows removes the rows; their schema-addressed objects wait for garbage collection
    (Source & {"source_id": 1}).delete()
    assert len(Result()) == 0 and all(p.exists() for p in written)
    report = dj.gc.GarbageCollector(schema, grace_period=0).collect(dry_run=False)
    # this row's npy, file and manifest, and the npy and bytes of the row deleted before
    assert report["schema_paths_deleted"] == 3 + 2 and report["hash_paths_deleted"] == 0
    assert not [p for p in files_under(stores) if "_schema" in p.parts]
    assert np.array_equal((Source & {"source_id": 2}).fetch1("blob_data"), np.arange(3))


# --------------------------------------------------------------------------------------------
# interoperability: DataJoint 2.3.5 reads our objects and we read its objects (PostgreSQL)
# --------------------------------------------------------------------------------------------
@pytest.mark.backend
@pytest.mark.parametrize("backend", ["postgresql"])
def test_objects_interoperate_with_datajoint(schema, connection, tmp_path, request):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        djd = pytest.importorskip("datajoint")
    dj_conn = request.getfixturevalue("dj_conn")
    stores_config = {"main": {"protocol": "file", "location": str(tmp_path / "store")}}
    connection.config["stores"] = dict(stores_config, default="main")
    saved = djd.config["stores"]
    djd.config["stores"] = stores_config
    try:
        @schema
        class Shared(dj.Manual):
            definition = """
            item : int32
            ---
            obj = null : <object@main>
            arr = null : <npy@main>
            data = null : <blob@main>
            """

        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "f.txt").write_text("in a folder")
        Shared.insert([{"item": 1, "obj": ("dat", b"ours"), "arr": np.arange(5.0), "data": {"a": [1, 2]}},
                       {"item": 2, "obj": str(folder), "arr": None, "data": None}])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = djd.VirtualModule("theirs", schema.database, connection=dj_conn)
            row = (theirs.Shared & {"item": 1}).fetch1()
            assert row["obj"].read() == b"ours" and row["obj"].path.endswith(".dat")
            assert np.array_equal(row["arr"].load(), np.arange(5.0)) and row["arr"].shape == (5,)
            assert row["data"] == {"a": [1, 2]}
            assert (theirs.Shared & {"item": 2}).fetch1("obj").verify()  # reads our manifest
            theirs.Shared.insert1({"item": 3, "obj": b"theirs", "arr": np.eye(2, dtype=np.int8), "data": [3]})
        ref = (Shared & {"item": 3}).fetch1("obj")
        assert isinstance(ref, dj.ObjectRef) and ref.read() == b"theirs" and ref.store == "main"
        assert re.fullmatch(rf"_schema/{schema.database}/shared/item=3/obj_[\w-]{{8}}", ref.path)
        arr = (Shared & {"item": 3}).fetch1("arr")
        assert arr.dtype == np.int8 and np.array_equal(arr.load(), np.eye(2, dtype=np.int8))
        assert (Shared & {"item": 3}).fetch1("data") == [3]
        report = dj.gc.GarbageCollector(schema, grace_period=0).collect()
        assert report["schema_paths_orphaned"] == 0 and report["hash_paths_orphaned"] == 0
        assert report["schema_paths_referenced"] == 5 and report["hash_paths_referenced"] == 2
    finally:
        djd.config["stores"] = saved


try:  # DataJoint's connection fixture, shared with the interoperability tests
    from test_datajoint_interop import dj_conn  # noqa: F401,E402
except BaseException:  # pragma: no cover - datajoint not installed (importorskip raises Skipped)
    pass
