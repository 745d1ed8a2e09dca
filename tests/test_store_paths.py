"""Object paths never leave their store: ``<object@>``/``<npy@>`` metadata inserted as a dict,
rows already in the database (raw SQL, an older version), ``joinflow copy``, and ``<filepath@>``
symbolic links that point out of the store.  On SQLite, PostgreSQL and MySQL; local and S3 (moto)."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow import storage
from joinflow.codecs import storage_attribute
from joinflow.storage import StoreError, StorePathError, stored_path_problem

BUCKET = "joinflow-paths"

ESCAPES = [
    "../../secret/id_rsa",  # the example
    "_schema/../../../secret/id_rsa",
    "/etc/passwd",
    "..\\..\\secret\\id_rsa",
    "_schema\\..\\..\\secret",
    "s3://other-bucket/data/x.npy",
    "file:///etc/passwd",
    "file:/etc/passwd",
    "C:/Windows/win.ini",
    "%2e%2e/%2e%2e/secret/id_rsa",
    "%2E%2E%2F%2E%2E%2Fsecret%2Fid_rsa",
    "_schema/%252e%252e/%252e%252e/%252e%252e/secret",  # encoded twice
    "%2Fetc%2Fpasswd",
    "file%3A%2F%2F%2Fetc%2Fpasswd",
    "a//b",
    "./x",
    "x/",
    "",
    "a\0b",
]


def _s3_spec(endpoint: str) -> dict:
    return {"protocol": "s3", "endpoint": endpoint, "bucket": BUCKET, "location": f"lab-{uuid.uuid4().hex[:8]}",
            "access_key": "testing", "secret_key": "testing", "secure": False}


@pytest.fixture(params=["file", "s3"])
def store(request, connection, tmp_path):
    """The default store ``main`` (a folder ``tmp/store/lab``, or an S3 prefix); ``tmp/secret/id_rsa``
    lies outside it, two levels up from the folder."""
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "id_rsa").write_bytes(b"PRIVATE KEY")
    if request.param == "file":
        spec = {"protocol": "file", "location": str(tmp_path / "store" / "lab")}
    else:
        spec = _s3_spec(request.getfixturevalue("s3_endpoint"))
    connection.config["stores"] = {"default": "main", "main": spec}
    main = storage.get_store(connection.config, "main")
    if request.param == "s3" and not main.fs.exists(BUCKET):
        main.fs.mkdir(BUCKET)
    return main


def declare(schema):
    @schema
    class Item(dj.Manual):
        definition = """
        item_id : int32
        ---
        obj = null : <object@>
        arr = null : <npy@>
        """

    return Item


def _raw_set(table, item_id: int, attribute: str, meta: dict) -> None:
    """Write ``meta`` into the json column as raw SQL would (no codec, no check)."""
    conn = table.connection
    to_db = conn.backend.encoder(storage_attribute(table.heading[attribute]))
    tc = conn.backend.table_clause(table.database, table.table_name, ["item_id", attribute])
    conn.execute(sa.update(tc).where(tc.c.item_id == item_id).values(
        {attribute: to_db(meta) if to_db is not None else meta}))


def test_stored_path_rules():
    for path in ESCAPES:
        assert stored_path_problem(path) is not None, path
    assert stored_path_problem(None) is not None
    # paths joinflow itself writes pass, including key values that carry separators and dots
    for path in ["_schema/lab/session/session_id=1/raw_ab12cd34.dat", "_hash/lab/abcdefghijklmnopqrstuvwxyz",
                 "_schema/lab/t/name=a%2F..%2Fb/obj_x", "_schema/lab/t/url=http%3A%2F%2Fhost%2Fa/obj_x",
                 "_schema/lab/t/name=../obj_x", "raw/2024-01-01T10:00/file.dat", "~backup/x", "a..b/c"]:
        assert stored_path_problem(path) is None, path


@pytest.mark.backend
def test_object_metadata_leaving_the_store_is_refused_at_insert(schema, store, tmp_path):
    Item = declare(schema)
    Item.insert1({"item_id": 1, "obj": b"kept"})
    before = Item.to_dicts()
    for path in ESCAPES:
        for attribute in ("obj", "arr"):
            meta = {"path": path, "store": "main", "size": 11}
            if attribute == "arr":
                meta.update(dtype="uint8", shape=[11])
            with pytest.raises(StorePathError) as info:
                Item.insert1({"item_id": 2, attribute: meta})
            message = str(info.value)
            assert Item.full_table_name in message and f"`{attribute}`" in message and repr(path) in message
    # an unknown store is refused at insert, not at the first read
    with pytest.raises(StoreError, match="'nowhere'.*not configured"):
        Item.insert1({"item_id": 2, "obj": {"path": "_schema/x/y", "store": "nowhere"}})
    assert Item.to_dicts() == before  # nothing inserted
    # an object already stored is still accepted by reference: its ObjectRef, or its metadata
    ref = (Item & {"item_id": 1}).fetch1("obj")
    Item.insert([{"item_id": 3, "obj": ref}, {"item_id": 4, "obj": ref.to_json()}])
    assert [r.read() for r in Item.to_arrays("obj", order_by="item_id")] == [b"kept"] * 3
    # metadata without a store names the attribute's store (the default here)
    Item.insert1({"item_id": 5, "obj": {k: v for k, v in ref.to_json().items() if k != "store"}})
    assert (Item & {"item_id": 5}).fetch1("obj").store == "main"


@pytest.mark.backend
def test_a_stored_path_leaving_the_store_is_never_resolved(schema, store, tmp_path):
    Item = declare(schema)
    Item.insert([{"item_id": 1, "obj": b"one", "arr": np.arange(3)}, {"item_id": 2, "obj": b"two", "arr": None}])
    for path in ("../../secret/id_rsa", "/etc/passwd", "file:///etc/passwd", "%2e%2e/%2e%2e/secret/id_rsa",
                 "..\\..\\secret\\id_rsa"):
        _raw_set(Item, 2, "obj", {"path": path, "store": "main", "size": 11, "is_dir": False})
        _raw_set(Item, 1, "arr", {"path": path, "store": "main", "dtype": "uint8", "shape": [11]})
        for key, attribute in (({"item_id": 2}, "obj"), ({"item_id": 1}, "arr")):
            with pytest.raises(StorePathError) as info:
                (Item & key).fetch1(attribute)
            message = str(info.value)
            assert Item.full_table_name in message and f"`{attribute}`" in message and repr(path) in message
            assert "update1()" in message
    # the other attributes of those rows stay readable
    assert sorted(Item.to_arrays("item_id")) == [1, 2]


@pytest.mark.backend
def test_copy_refuses_a_row_whose_object_leaves_the_store(connection, schema, store, tmp_path):
    from joinflow.copy import CopyError, copy_schemas

    Item = declare(schema)
    Item.insert([{"item_id": 1, "obj": b"one"}, {"item_id": 2, "obj": b"two"}])
    _raw_set(Item, 2, "obj", {"path": "../../secret/id_rsa", "store": "main", "size": 11, "is_dir": False})
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    target_cfg = dj.config.copy()
    target_cfg["stores"] = {"default": "main", "main": {"protocol": "file", "location": str(tmp_path / "t" / "lab")}}
    with pytest.raises(CopyError) as info:
        copy_schemas({schema.database: "copied"}, connection, target_url, source_config=connection.config,
                     target_config=target_cfg, progress=False)
    assert "`obj`" in str(info.value) and "'../../secret/id_rsa'" in str(info.value)
    assert not (tmp_path / "secret" / "lab").exists() and not (tmp_path / "t" / "secret").exists()
    assert sorted(p.name for p in (tmp_path / "secret").iterdir()) == ["id_rsa"]  # nothing written beside it
    with dj.Connection(url=target_url, config=target_cfg) as conn:
        assert conn.backend.list_schemas(conn) == []  # the target is as it was


@pytest.mark.backend
def test_filepath_symlink_out_of_the_store_is_refused(connection, schema, tmp_path):
    root = tmp_path / "store"
    (root / "raw" / "inner").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "id_rsa").write_bytes(b"PRIVATE KEY")
    (root / "raw" / "data.bin").write_bytes(b"data")
    (root / "raw" / "inner" / "ok.bin").write_bytes(b"ok")
    os.symlink(tmp_path / "secret" / "id_rsa", root / "raw" / "key")  # a file link out of the store
    os.symlink(tmp_path / "secret", root / "outside")  # a folder link out of the store
    os.symlink(root / "raw" / "data.bin", root / "alias.bin")  # a link that stays inside: fine
    (root / "tree").mkdir()
    (root / "tree" / "a.txt").write_text("a")
    os.symlink(tmp_path / "secret", root / "tree" / "escape")  # a link out, inside a referenced folder
    connection.config["stores"] = {"default": "main", "main": {"protocol": "file", "location": str(root)}}

    @schema
    class Ref(dj.Manual):
        definition = """
        ref_id : int32
        ---
        file : <filepath@>
        """

    for i, path in enumerate(["raw/key", "outside/id_rsa", "tree"]):
        with pytest.raises(StorePathError, match="symbolic link") as info:
            Ref.insert1({"ref_id": i, "file": path})
        assert Ref.full_table_name in str(info.value) and "`file`" in str(info.value)
    assert len(Ref()) == 0
    Ref.insert([{"ref_id": 1, "file": "alias.bin"}, {"ref_id": 2, "file": "raw/data.bin"}])
    assert (Ref & {"ref_id": 1}).fetch1("file").read() == b"data"
    # a file that became a link out of the store after its row was inserted is not followed
    os.remove(root / "raw" / "data.bin")
    os.symlink(tmp_path / "secret" / "id_rsa", root / "raw" / "data.bin")
    ref = (Ref & {"ref_id": 2}).fetch1("file")
    for read in (ref.read, ref.open, ref.verify, lambda: ref.download(tmp_path / "dl"), lambda: ref.full_path):
        with pytest.raises(StorePathError, match="symbolic link"):
            read()
    assert not (tmp_path / "dl").exists()
