"""S3 stores (s3fs) against a local moto server started here: no network beyond 127.0.0.1."""

from __future__ import annotations

import os
import socket
import uuid

import numpy as np
import pytest

import joinflow as dj
from joinflow import storage

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "joinflow-test"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """S3 is the same code for every database: two backends are enough."""
    return request.param


@pytest.fixture(scope="module")
def s3_endpoint():
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # never ask a metadata service for credentials
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store(connection, s3_endpoint):
    location = f"lab-{uuid.uuid4().hex[:8]}"
    connection.config["stores"] = {
        "default": "lake",
        "lake": {"protocol": "s3", "endpoint": s3_endpoint, "bucket": BUCKET, "location": location,
                 "access_key": "testing", "secret_key": "testing", "secure": False},
    }
    store = storage.get_store(connection.config, "lake")
    if not store.fs.exists(BUCKET):
        store.fs.mkdir(BUCKET)
    yield store


def stored_paths(store) -> list[str]:
    store.fs.invalidate_cache()
    root = store.full_path("").rstrip("/")
    return sorted(p[len(root) + 1:] for p in store.fs.find(root) if not p[len(root) + 1:].startswith("_joinflow/"))


@pytest.mark.backend
def test_s3_round_trip_and_gc(schema, connection, s3_store, tmp_path):
    @schema
    class Recording(dj.Manual):
        definition = """
        rec_id : int32
        ---
        raw = null : <hash@>
        trace = null : <blob@lake>
        samples = null : <npy@>
        item = null : <object@>
        """

    folder = tmp_path / "tree"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "b.txt").write_text("leaf")
    trace = np.linspace(0, 1, 1000)
    Recording.insert([
        {"rec_id": 1, "raw": b"raw bytes", "trace": trace, "samples": np.arange(6).reshape(2, 3),
         "item": ("json", b'{"a": 1}')},
        {"rec_id": 2, "raw": b"raw bytes", "trace": trace, "samples": np.ones(2), "item": str(folder)},
    ])
    row = (Recording & {"rec_id": 1}).fetch1()
    assert row["raw"] == b"raw bytes" and np.array_equal(row["trace"], trace)
    assert row["samples"].shape == (2, 3) and np.array_equal(row["samples"].load(), np.arange(6).reshape(2, 3))
    assert np.array_equal(row["samples"].load(mmap_mode="r"), np.arange(6).reshape(2, 3))  # via a local copy
    assert row["item"].read() == b'{"a": 1}' and row["item"].path.endswith(".json") and row["item"].verify()
    tree = (Recording & {"rec_id": 2}).fetch1("item")
    assert tree.is_dir and tree.listdir() == ["a"] and tree.open("a/b.txt").read() == b"leaf" and tree.verify()
    paths = stored_paths(s3_store)
    assert len([p for p in paths if p.startswith(f"_hash/{schema.database}/")]) == 2  # deduplicated
    assert len([p for p in paths if p.startswith(f"_schema/{schema.database}/recording/")]) == 5
    # a failed insert leaves nothing behind on S3 either: its private object is deleted at once,
    # its hash-addressed one (content may be shared) is collected by gc
    with pytest.raises(dj.errors.DuplicateError):
        Recording.insert1({"rec_id": 1, "raw": b"new content", "samples": np.zeros(9)})
    collector = dj.gc.GarbageCollector(schema, grace_period=0)
    report = collector.collect(dry_run=False)
    assert report["hash_paths_deleted"] == 1 and report["schema_paths_deleted"] == 0
    assert stored_paths(s3_store) == paths
    # garbage collection: the shared hash objects stay while a row refers to them
    (Recording & {"rec_id": 2}).delete()
    report = collector.collect(dry_run=False)
    assert report["hash_paths_deleted"] == 0 and report["schema_paths_deleted"] == 3  # npy, file, manifest
    assert (Recording & {"rec_id": 1}).fetch1("raw") == b"raw bytes"
    Recording.delete_quick()
    report = collector.collect(dry_run=False)
    assert report["hash_paths_deleted"] == 2 and report["schema_paths_deleted"] == 2 and report["errors"] == 0
    assert stored_paths(s3_store) == []
