#!/usr/bin/env python
"""Soak: gc in a loop beside 4 writers and a deleter; count the committed rows whose objects were lost.

Every row has a hash-addressed ``<blob@>`` (its content drawn from a small pool, so that content
whose rows were deleted is inserted again and its old object reused) and a schema-addressed
``<object@>`` (fresh bytes).  Writers insert batches of rows in transactions; a deleter deletes
random rows; ``GarbageCollector.collect(dry_run=False)`` runs in a loop with the store's grace
period (short here, ``--grace-period``, so that gc really deletes during the run).  At the end
every surviving row's objects are checked in the store, then a final gc with grace period 0
(nothing writes any more) must leave no orphan and lose nothing.

``--grace-period 0`` runs gc without the protection: the old behaviour, for comparison.

Usage:  python benchmarks/soak_gc.py [--backend postgresql] [--store s3|file] [--seconds 180]
                                     [--writers 4] [--grace-period 6]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import time
import uuid

from soak_common import report, scratch_schema

import joinflow as dj
from joinflow import storage

DEFINITION = """
item_id : int64
---
writer : int16
data : <blob@>
thing : <object@>
"""
POOL = 40  # distinct <blob@> contents: deleted content comes back and reuses its old object


def table(schema):
    return type("Item", (dj.Manual,), {"definition": DEFINITION, "__module__": __name__})


def connect(url: str, stores: dict, name: str):
    cfg = dj.config.copy()
    cfg.update({"safemode": False, "stores": stores})
    conn = dj.Connection(url=url, config=cfg)
    schema = dj.Schema(name, connection=conn)
    return conn, schema, schema(table(schema))


def writer(index: int, url: str, stores: dict, name: str, seconds: float, go, out) -> None:
    conn, _schema, Item = connect(url, stores, name)
    go[1].put(index)
    go[0].wait()  # every process is connected: start together
    stop_at = time.time() + seconds
    rng = random.Random(index)
    committed = failed = 0
    serial = 0
    while time.time() < stop_at:
        rows = []
        for _ in range(rng.randint(1, 4)):
            serial += 1
            rows.append({"item_id": index * 10_000_000 + serial, "writer": index,
                         "data": {"content": rng.randrange(POOL)},
                         "thing": ("bin", f"{index}:{serial}:{uuid.uuid4().hex}".encode())})
        try:
            with conn.transaction:
                for row in rows:  # one insert per row: the transaction spans several object writes
                    Item.insert1(row)
            committed += len(rows)
        except Exception as exc:  # reported, not hidden
            failed += 1
            print(f"writer {index}: {type(exc).__name__}: {exc}", flush=True)
    out.put({"writer": index, "committed": committed, "failed_batches": failed})
    conn.close()


def deleter(url: str, stores: dict, name: str, seconds: float, go, out) -> None:
    """Deletes random rows, about a third of what the writers commit; checks each row's objects
    just before deleting it (a lost object of a deleted row counts too)."""
    conn, schema, Item = connect(url, stores, name)
    go[1].put(0)
    go[0].wait()
    stop_at = time.time() + seconds
    rng = random.Random(99)
    deleted = 0
    lost = {"rows": 0, "rows_with_lost_objects": 0, "lost_blob": 0, "lost_object": 0}
    while time.time() < stop_at:
        keys = Item.keys()
        if len(keys) > 20:
            for key in rng.sample(keys, min(len(keys) // 10, 8)):
                found = check(schema, Item, key["item_id"])
                for k in lost:
                    lost[k] += found[k]
                deleted += (Item & key).delete_quick(get_count=True) or 0
        time.sleep(0.5)
    out.put({"deleted_rows": deleted, "checked_before_delete": lost["rows"],
             "lost_before_delete": lost["lost_blob"] + lost["lost_object"]})
    conn.close()


def collector_loop(url: str, stores: dict, name: str, seconds: float, go, out) -> None:
    conn, schema, _Item = connect(url, stores, name)
    collector = dj.gc.GarbageCollector(schema)  # the store's grace_period
    go[1].put(0)
    go[0].wait()
    stop_at = time.time() + seconds
    runs = deleted = kept = refreshed = errors = 0
    while time.time() < stop_at:
        try:
            result = collector.collect(dry_run=False)
        except Exception as exc:
            errors += 1
            print(f"gc: {type(exc).__name__}: {exc}", flush=True)
            continue
        runs += 1
        deleted += result["deleted"]
        kept += len(result["kept_paths"])
        refreshed += sum("refreshed" in why or "while gc ran" in why for why in result["kept_paths"].values())
        errors += result["errors"]
    out.put({"gc_runs": runs, "gc_deleted": deleted, "gc_kept_young": kept, "gc_kept_refreshed_or_rechecked":
             refreshed, "gc_errors": errors})
    conn.close()


def check(schema, Item, item_id: int | None = None) -> dict:
    """Rows (all, or the one ``item_id``) whose <blob@> or <object@> is missing from the store
    (asked of the store, not a cached listing)."""
    store = storage.get_store(schema.connection.config, None)
    lost_rows = lost_hash = lost_object = 0
    where = "" if item_id is None else f" WHERE item_id = {int(item_id)}"
    rows = list(Item.connection.query(f"SELECT item_id, data, thing FROM {Item.full_table_name}{where}"))
    listed = None
    if item_id is None:  # nothing writes any more: one fresh listing of the store answers for every row
        store.fs.invalidate_cache()
        root = store.full_path("").rstrip("/")
        listed = {p[len(root) + 1:] for p in store.fs.find(root)}

    def there(path: str) -> bool:
        return path in listed if listed is not None else store.exists(path)

    for _item, data, thing in rows:
        metas = []
        for value in (data, thing):
            if isinstance(value, (bytes, bytearray, memoryview)):
                value = bytes(value).decode()
            metas.append(json.loads(value) if isinstance(value, str) else value)
        missing_hash = not there(metas[0]["path"])
        missing_object = not there(metas[1]["path"])
        lost_hash += missing_hash
        lost_object += missing_object
        lost_rows += missing_hash or missing_object
    return {"rows": len(rows), "rows_with_lost_objects": lost_rows, "lost_blob": lost_hash,
            "lost_object": lost_object}


def start_moto() -> tuple[object, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="postgresql", choices=["sqlite", "postgresql", "mysql"])
    parser.add_argument("--store", default="s3", choices=["s3", "file"])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--grace-period", type=float, default=6.0,
                        help="the store's grace_period (seconds); 0 = gc without protection (the old behaviour)")
    args = parser.parse_args()
    try:
        figures = run(args, lambda s: server_box.append(s))
    finally:
        for server in server_box:  # its thread would keep the process alive after an error
            server.stop()
    ok = (figures["live_objects_lost"] == 0 and figures["live_objects_lost_after_final_gc"] == 0
          and figures["committed_rows"] > 0 and figures["gc_runs"] > 0 and not figures.get("failed_batches"))
    report(f"soak_gc[{args.backend}, {args.store}] {'OK' if ok else 'LOST OBJECTS'}", figures)
    if not ok:
        raise SystemExit(1)


server_box: list = []


def run(args, keep_server) -> dict:
    with scratch_schema(args.backend) as (schema, tmp_path):
        if args.store == "s3":
            server, endpoint = start_moto()
            keep_server(server)
            stores = {"default": "main", "main": {
                "protocol": "s3", "endpoint": endpoint, "bucket": "soak", "location": f"gc-{uuid.uuid4().hex[:8]}",
                "access_key": "testing", "secret_key": "testing", "secure": False,
                "grace_period": args.grace_period}}
            probe = storage.Store("probe", stores["main"])
            probe.fs.mkdir("soak")
        else:
            stores = {"default": "main", "main": {"protocol": "file", "location": str(tmp_path / "store"),
                                                  "grace_period": args.grace_period}}
        schema.connection.config["stores"] = stores
        Item = schema(table(schema))
        url = str(schema.connection.url.render_as_string(hide_password=False))
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        go, ready = ctx.Event(), ctx.Queue()
        common = (url, stores, schema.database, args.seconds, (go, ready), out)
        procs = [ctx.Process(target=writer, args=(i + 1, *common)) for i in range(args.writers)]
        procs.append(ctx.Process(target=deleter, args=common))
        procs.append(ctx.Process(target=collector_loop, args=common))
        for p in procs:
            p.start()
        for _ in procs:  # each process reports once it is connected, then waits for `go`
            ready.get(timeout=300)
        started = time.time()
        go.set()
        figures: dict = {"backend": args.backend, "store": args.store, "seconds": args.seconds,
                         "writers": args.writers, "grace_period": args.grace_period}
        committed = 0
        for _ in procs:
            result = out.get(timeout=args.seconds + 1800)  # a gc run that began before the end finishes
            committed += result.pop("committed", 0)
            result.pop("writer", None)
            for key, value in result.items():
                figures[key] = figures.get(key, 0) + value
        for p in procs:
            p.join(timeout=60)
        figures["committed_rows"] = committed
        during = check(schema, Item)
        figures["live_rows_at_end"] = during["rows"]
        figures["live_objects_lost"] = (during["lost_blob"] + during["lost_object"]
                                        + figures.get("lost_before_delete", 0))
        figures["rows_checked"] = during["rows"] + figures.get("checked_before_delete", 0)
        # nothing writes any more: a gc without grace period collects every orphan and loses nothing
        final = dj.gc.GarbageCollector(schema, grace_period=0).collect(dry_run=False)
        after = check(schema, Item)
        again = dj.gc.GarbageCollector(schema, grace_period=0).collect()
        figures["final_gc_deleted"] = final["deleted"]
        figures["live_objects_lost_after_final_gc"] = after["lost_blob"] + after["lost_object"]
        figures["orphans_left_after_final_gc"] = again["hash_paths_orphaned"] + again["schema_paths_orphaned"]
        figures["wall_seconds"] = round(time.time() - started, 1)
    return figures


if __name__ == "__main__":
    main()
