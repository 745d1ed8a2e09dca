"""gc never deletes an object that a committed row refers to: not after `joinflow copy` into another
database that shares the store, not when two store names mean one location, not with overlapping
sections, not after another process's listing went stale, and not while inserts run beside it.

Each scenario runs on SQLite, PostgreSQL and MySQL, with a local store and an S3 store (a local
moto server, as in test_s3.py)."""

from __future__ import annotations

import datetime
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import joinflow as dj
from joinflow import storage, testing
from joinflow.errors import DataJointError
from joinflow.storage import StoreError

BUCKET = "joinflow-gc-test"


def store_spec(kind: str, tmp_path: Path, request, **extra) -> dict:
    """A store of ``kind`` ("file" or "s3") at a fresh location."""
    if kind == "file":
        return {"protocol": "file", "location": str(tmp_path / "store"), **extra}
    endpoint = request.getfixturevalue("s3_endpoint")
    spec = {"protocol": "s3", "endpoint": endpoint, "bucket": BUCKET, "location": f"lab-{uuid.uuid4().hex[:8]}",
            "access_key": "testing", "secret_key": "testing", "secure": False, **extra}
    store = storage.Store("probe", spec)
    if not store.fs.exists(BUCKET):
        store.fs.mkdir(BUCKET)
    return spec


def make_old(store: storage.Store, path: str, seconds: float = 7200) -> None:
    """Give the object ``path`` a modification time ``seconds`` in the past (as if written then)."""
    if store.is_local:
        then = time.time() - seconds
        os.utime(store.full_path(path), (then, then))
        return
    from moto.s3.models import s3_backends  # the moto server runs in this process: set its clock back

    bucket, _, key = store.full_path(path).partition("/")
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(seconds=seconds)
    found = False
    for regions in s3_backends.values():
        for backend in regions.values():
            if bucket in getattr(backend, "buckets", {}):
                backend.buckets[bucket].keys[key].last_modified = past
                found = True
    assert found, f"moto has no object {bucket}/{key}"
    store.fs.invalidate_cache()
    assert time.time() - store.fresh_info(path)["mtime"] > seconds - 60


@pytest.fixture(params=["file", "s3"])
def where(request) -> str:
    return request.param


@pytest.fixture
def one_store(connection, tmp_path, request, where):
    connection.config["stores"] = {"default": "main", "main": store_spec(where, tmp_path, request)}
    return storage.get_store(connection.config, "main")


def declare_item(schema, store: str = ""):
    @schema
    class Item(dj.Manual):
        definition = f"""
        item : int32
        ---
        data = null : <blob@{store}>
        thing = null : <object@{store}>
        """

    return Item


# -- 1. copy into another database, then gc ------------------------------------------------------------
@pytest.mark.backend
def test_gc_refuses_while_a_copied_database_uses_the_same_objects(backend, connection, tmp_path):
    """`joinflow copy` SQLite -> <backend> with the same stores copies no object (both databases now
    refer to the same files). gc on the source used to delete the target's objects once the source
    rows were deleted."""
    from joinflow.copy import copy_schemas

    stores = {"default": "main", "main": {"protocol": "file", "location": str(tmp_path / "shared")}}
    cfg = dj.config.copy()
    cfg.update({"safemode": False, "stores": stores})
    name = testing.unique_schema_name("gccopy")
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source = dj.Connection(url=source_url, config=cfg)
    target_cfg = connection.config
    target_cfg["stores"] = stores
    try:
        Item = declare_item(dj.Schema(name, connection=source))
        Item.insert([{"item": 1, "data": np.arange(5), "thing": ("txt", b"one")},
                     {"item": 2, "data": "two", "thing": ("txt", b"two")}])
        report = copy_schemas([name], source, connection, source_config=cfg, target_config=target_cfg,
                              progress=False)
        assert report.objects_copied == 0  # shared, not copied
        target_schema = dj.Schema(name, connection=connection, create_schema=False)
        TargetItem = declare_item(target_schema)
        Item.delete_quick()  # the source no longer refers to anything
        collector = dj.gc.GarbageCollector(dj.Schema(name, connection=source, create_schema=False), grace_period=0)
        dry = collector.collect()
        assert dry["other_databases"] and any(connection.backend.name in o for o in dry["other_databases"])
        with pytest.raises(DataJointError, match="other databases use the same schemas") as refused:
            collector.collect(dry_run=False)
        assert name in str(refused.value) and "Pass a Schema of each database" in str(refused.value)
        rows = TargetItem.to_dicts(order_by="item")
        assert np.array_equal(rows[0]["data"], np.arange(5)) and rows[1]["data"] == "two"
        assert [r["thing"].read() for r in rows] == [b"one", b"two"]
        # given both databases, gc reads both: nothing the target uses is deleted
        both = dj.gc.GarbageCollector(dj.Schema(name, connection=source, create_schema=False), target_schema,
                                      grace_period=0)
        report = both.collect(dry_run=False)
        assert report["deleted"] == 0 and report["other_databases"] == []
        assert [r["thing"].read() for r in TargetItem.to_dicts(order_by="item")] == [b"one", b"two"]
        (TargetItem & {"item": 2}).delete_quick()
        report = both.collect(dry_run=False)
        assert report["hash_paths_deleted"] == 1 and report["schema_paths_deleted"] == 1
        assert (TargetItem & {"item": 1}).fetch1("thing").read() == b"one"
    finally:
        testing.drop_schemas(source, [name])
        testing.drop_schemas(connection, [name])
        source.close()


# -- 2. two store names, one location ------------------------------------------------------------------
@pytest.mark.backend
def test_gc_treats_two_store_names_of_one_location_as_one_store(schema, connection, tmp_path, request, where):
    spec = store_spec(where, tmp_path, request)
    connection.config["stores"] = {"default": "main", "main": spec, "lake": dict(spec)}
    Item = declare_item(schema, "lake")
    Item.insert([{"item": 1, "data": np.ones(3), "thing": ("bin", b"\x00\x01")},
                 {"item": 2, "data": "orphan", "thing": ("bin", b"orphan")}])
    (Item & {"item": 2}).delete_quick()
    report = dj.gc.GarbageCollector(schema, store="main", grace_period=0).collect(dry_run=False)
    assert report["hash_paths_referenced"] == 1 and report["schema_paths_referenced"] == 1
    assert report["hash_paths_deleted"] == 1 and report["schema_paths_deleted"] == 1  # only item 2's objects
    row = Item.fetch1()
    assert np.array_equal(row["data"], np.ones(3)) and row["thing"].read() == b"\x00\x01"
    assert dj.gc.GarbageCollector(schema, store="lake", grace_period=0).collect(dry_run=False)["deleted"] == 0
    assert Item.fetch1("thing").read() == b"\x00\x01"


# -- 3. overlapping sections ----------------------------------------------------------------------------
@pytest.mark.backend
@pytest.mark.parametrize("prefixes", [("data", "data"), ("data", "data/objects"), ("objects/hash", "objects"),
                                      ("", "_schema")])
def test_overlapping_hash_and_schema_prefixes_are_refused(schema, connection, tmp_path, prefixes):
    hash_prefix, schema_prefix = prefixes
    connection.config["stores"] = {
        "default": "main", "main": {"protocol": "file", "location": str(tmp_path / "ok")},
        "bad": {"protocol": "file", "location": str(tmp_path / "bad"), "hash_prefix": hash_prefix,
                "schema_prefix": schema_prefix}}
    Item = declare_item(schema, "bad")
    with pytest.raises(StoreError, match="Store 'bad'.*(overlap|empty)"):
        Item.insert1({"item": 1, "data": "x"})
    assert len(Item()) == 0 and not (tmp_path / "bad").exists()
    with pytest.raises(DataJointError, match="Store 'bad'"):
        dj.gc.GarbageCollector(schema, store="bad")


def test_a_store_inside_another_stores_section_is_refused(tmp_path):
    cfg = dj.config.copy()
    cfg["stores"] = {"main": {"protocol": "file", "location": str(tmp_path)},
                     "inner": {"protocol": "file", "location": str(tmp_path / "_hash" / "s")}}

    class FakeSchema:
        database = "s"
        connection = None

    for name in ("main", "inner"):
        with pytest.raises(DataJointError, match="overlap"):
            dj.gc.GarbageCollector(FakeSchema(), store=name, config=cfg)


# -- 4. a stale S3 listing never decides whether to write ---------------------------------------------------
@pytest.mark.backend
def test_insert_uploads_again_after_another_process_collected_the_object(schema, connection, tmp_path, request):
    spec = store_spec("s3", tmp_path, request)
    connection.config["stores"] = {"default": "main", "main": spec}
    Item = declare_item(schema)
    Item.insert1({"item": 1, "data": "same content"})
    store = storage.get_store(connection.config, "main")
    assert len(store.fs.find(store.full_path(f"_hash/{schema.database}"))) == 1  # this process lists (and caches)
    (Item & {"item": 1}).delete_quick()
    # another process (its own S3 client, no shared cache) collects the orphan
    other = storage.Store("main", spec)
    other.fs = type(store.fs)(skip_instance_cache=True, key="testing", secret="testing",
                              client_kwargs={"endpoint_url": f"http://{spec['endpoint']}"})
    orphan = other.fs.find(other.full_path(f"_hash/{schema.database}"))
    assert len(orphan) == 1
    other.fs.rm(orphan[0])
    Item.insert1({"item": 2, "data": "same content"})  # identical content: must be uploaded again
    assert (Item & {"item": 2}).fetch1("data") == "same content"


# -- 5. gc beside inserts ---------------------------------------------------------------------------------
@pytest.mark.backend
def test_gc_keeps_the_objects_of_an_insert_that_has_not_committed(schema, connection, one_store, monkeypatch):
    """gc runs after the insert wrote its objects and before its row exists (what gc from cron sees while
    a pipeline runs): it keeps them, they are younger than the grace period, and names them in its report."""
    Item = declare_item(schema)
    collector = dj.gc.GarbageCollector(schema)
    reports = []
    real_put = storage.Store.put

    def put_then_collect(self, path, data):
        real_put(self, path, data)
        if path.startswith(("_hash/", "_schema/")):
            reports.append(collector.collect(dry_run=False))

    monkeypatch.setattr(storage.Store, "put", put_then_collect)
    Item.insert1({"item": 1, "data": np.arange(4), "thing": ("txt", b"in flight")})
    monkeypatch.undo()
    assert len(reports) == 2 and all(r["deleted"] == 0 for r in reports)
    assert any(p.startswith("_schema/") for p in reports[-1]["kept_paths"])
    assert all("grace_period" in why for why in reports[-1]["kept_paths"].values())
    row = Item.fetch1()
    assert np.array_equal(row["data"], np.arange(4)) and row["thing"].read() == b"in flight"


@pytest.mark.backend
def test_gc_keeps_a_hash_object_an_insert_reuses_after_gc_listed_it(schema, connection, one_store, monkeypatch):
    """An orphan older than the grace period is listed by gc; before gc deletes it, an insert of the same
    content reuses it and commits. The insert refreshes the old object, gc checks its age again on the
    store before deleting: the committed row keeps its object."""
    Item = declare_item(schema)
    Item.insert1({"item": 1, "data": "reused content"})
    path = storage.put_hash(dj.blob.pack("reused content"), schema.database, connection.config, None)["path"]
    (Item & {"item": 1}).delete_quick()
    make_old(one_store, path)
    collector = dj.gc.GarbageCollector(schema)
    assert collector.collect()["orphaned_hash_paths"] == [path]  # old and unreferenced: would be deleted
    real_list = collector.list_hash_paths

    def list_then_insert(schema_name):
        listed = real_list(schema_name)
        Item.insert1({"item": 2, "data": "reused content"})  # commits between gc's listing and its deletion
        return listed

    monkeypatch.setattr(collector, "list_hash_paths", list_then_insert)
    report = collector.collect(dry_run=False)
    assert report["hash_paths_deleted"] == 0 and "refreshed" in report["kept_paths"][path]
    assert (Item & {"item": 2}).fetch1("data") == "reused content"


@pytest.mark.backend
def test_gc_deletes_orphans_older_than_the_grace_period_only(schema, connection, one_store):
    Item = declare_item(schema)
    Item.insert([{"item": 1, "data": "old", "thing": ("txt", b"old")},
                 {"item": 2, "data": "new", "thing": ("txt", b"new")}])
    old_paths = [(Item & {"item": 1}).fetch1("thing").path,
                 storage.put_hash(dj.blob.pack("old"), schema.database, connection.config, None)["path"]]
    Item.delete_quick()
    for path in old_paths:
        make_old(one_store, path)
    report = dj.gc.GarbageCollector(schema).collect(dry_run=False)
    assert report["hash_paths_deleted"] == 1 and report["schema_paths_deleted"] == 1
    assert report["grace_period"] == 3600 and len(report["kept_paths"]) == 2  # item 2's, named with the reason
    assert all("within grace_period" in why for why in report["kept_paths"].values())
    assert not any(one_store.exists(path) for path in old_paths)
    assert all(one_store.exists(path) for path in report["kept_paths"])
    with pytest.raises(DataJointError, match="grace_period"):
        dj.gc.GarbageCollector(schema, grace_period=-1)
