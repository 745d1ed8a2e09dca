#!/usr/bin/env python
"""Fetching many small objects from S3: ``<blob@lake>`` rows against the same blobs in the table.

Not part of the test suite.  A moto S3 server runs on 127.0.0.1 in a process of its own (no network).
On PostgreSQL, each library gets a table of ``--rows`` rows holding the same small array twice:
in the table (``<blob>``) and in the S3 store (``<blob@lake>``).  The script times fetching
all rows of each column (``to_dicts`` of a projection, best of ``--repeat``):

  joinflow   in-table, S3 (objects read in one concurrent request per fetch), S3 read one by one
             (the concurrent read switched off: what the fetch costs without it), and the same two
             against a simulated remote store that answers every request after LATENCY (20 ms),
             concurrently, as S3 does (moto answers one request at a time, so it measures moto)
  datajoint  in-table, S3 (DataJoint 2.3.5)

The target (user-pain P2): the S3 fetch at most 3x the in-table fetch.  moto answers in about
a millisecond; a real S3 request takes tens, which one-by-one reading pays per row.

Usage:  python benchmarks/bench_s3_fetch.py [--rows N] [--repeat K]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import uuid
import warnings

import numpy as np

PG = dict(host="127.0.0.1", port=5432, user="postgres", name="test")
BUCKET = "bench-s3-fetch"
DEFINITION = """
item_id : int32
---
inline : <blob>
remote : <blob@lake>
"""


class MotoProcess:
    """moto's S3 server in a process of its own (in this one it would compete for the GIL)."""

    def __init__(self):
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_moto() -> tuple[object, str]:
    server = MotoProcess()
    return server, f"127.0.0.1:{server.port}"


LATENCY = 0.02  # seconds per request of the simulated remote store (an S3 GET's time to first byte, roughly)


def latency_store_class():
    """An fsspec async filesystem kept in memory that waits LATENCY per request, as a remote
    object store does; requests issued together wait together (no server to queue on)."""
    import asyncio

    from fsspec.asyn import AsyncFileSystem

    class LatencyMemory(AsyncFileSystem):
        protocol = "latencymem"
        objects: dict = {}

        @classmethod
        def _strip_protocol(cls, path):
            path = path[len("latencymem://"):] if path.startswith("latencymem://") else path
            return "/" + path.strip("/")

        async def _cat_file(self, path, start=None, end=None, **kwargs):
            await asyncio.sleep(LATENCY)
            path = self._strip_protocol(path)
            if path not in self.objects:
                raise FileNotFoundError(path)
            return self.objects[path][start:end]

        async def _pipe_file(self, path, value, **kwargs):
            self.objects[self._strip_protocol(path)] = bytes(value)

        async def _info(self, path, **kwargs):
            path = self._strip_protocol(path)
            if path in self.objects:
                return {"name": path, "size": len(self.objects[path]), "type": "file"}
            if any(p.startswith(path.rstrip("/") + "/") for p in self.objects):
                return {"name": path, "size": 0, "type": "directory"}
            raise FileNotFoundError(path)

        async def _cp_file(self, path1, path2, **kwargs):
            self.objects[self._strip_protocol(path2)] = self.objects[self._strip_protocol(path1)]

        async def _rm_file(self, path, **kwargs):
            self.objects.pop(self._strip_protocol(path), None)

        async def _makedirs(self, path, exist_ok=False):
            pass

        async def _ls(self, path, detail=True, **kwargs):
            path = self._strip_protocol(path).rstrip("/") + "/"
            names = sorted(p for p in self.objects if p.startswith(path))
            return [await self._info(n) for n in names] if detail else names

    return LatencyMemory


def store_config(endpoint: str, location: str) -> dict:
    return {"default": "lake", "lake": {"protocol": "s3", "endpoint": endpoint, "bucket": BUCKET,
                                        "location": location, "access_key": "testing",
                                        "secret_key": "testing", "secure": False}}


def best(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    server, endpoint = start_moto()
    rows = [{"item_id": i, "inline": np.arange(64, dtype=float) * i, "remote": np.arange(64, dtype=float) * i}
            for i in range(args.rows)]
    results: dict[str, float] = {}
    try:
        import joinflow as jf
        from joinflow import storage

        cfg = jf.config.copy()
        cfg["stores"] = store_config(endpoint, f"jf-{uuid.uuid4().hex[:6]}")
        conn = jf.Connection(url=f"postgresql+psycopg://{PG['user']}@{PG['host']}:{PG['port']}/{PG['name']}",
                             config=cfg)
        lake = storage.get_store(cfg, "lake")
        if not lake.fs.exists(BUCKET):
            lake.fs.mkdir(BUCKET)
        schema = jf.Schema("bench_s3_jf", connection=conn)
        schema.drop(prompt=False)
        schema = jf.Schema("bench_s3_jf", connection=conn)
        Item = schema(type("Item", (jf.Manual,), {"definition": DEFINITION}))
        Item.insert(rows)
        results["joinflow in-table <blob>"] = best(args.repeat, lambda: Item.proj("inline").to_dicts())
        results["joinflow S3 <blob@lake>"] = best(args.repeat, lambda: Item.proj("remote").to_dicts())
        batched = storage.Store.get_many
        storage.Store.get_many = lambda self, paths: {}  # one request per object
        try:
            results["joinflow S3, one request per object"] = best(args.repeat, lambda: Item.proj("remote").to_dicts())
        finally:
            storage.Store.get_many = batched
        schema.drop(prompt=False)

        import fsspec

        fsspec.register_implementation("latencymem", latency_store_class(), clobber=True)
        cfg["stores"] = {"default": "lake", "lake": {"protocol": "latencymem", "location": "bench"}}
        schema = jf.Schema("bench_s3_jf", connection=conn)
        Item = schema(type("Item", (jf.Manual,), {"definition": DEFINITION}))
        Item.insert(rows)
        label = f"{int(LATENCY * 1000)} ms/request store"
        results[f"joinflow {label}"] = best(args.repeat, lambda: Item.proj("remote").to_dicts())
        storage.Store.get_many = lambda self, paths: {}
        try:
            results[f"joinflow {label}, one by one"] = best(1, lambda: Item.proj("remote").to_dicts())
        finally:
            storage.Store.get_many = batched
        schema.drop(prompt=False)
        conn.close()

        import datajoint as dj

        for key, value in {"database.backend": "postgresql", "database.host": PG["host"], "database.port": PG["port"],
                           "database.user": PG["user"], "database.password": "", "database.name": PG["name"],
                           "database.use_tls": False, "loglevel": "ERROR", "safemode": False}.items():
            dj.config[key] = value
        dj.config["stores"] = store_config(endpoint, f"dj-{uuid.uuid4().hex[:6]}")
        djs = dj.Schema("bench_s3_dj")
        try:
            DjItem = djs(type("Item", (dj.Manual,), {"definition": DEFINITION}))
            DjItem.insert(rows)
            results["datajoint in-table <blob>"] = best(args.repeat, lambda: DjItem.proj("inline").to_dicts())
            results["datajoint S3 <blob@lake>"] = best(args.repeat, lambda: DjItem.proj("remote").to_dicts())
        finally:
            djs.drop(prompt=False)
    finally:
        server.stop()
    base = results["joinflow in-table <blob>"]
    print(f"\n[postgresql + moto S3] fetch {args.rows} rows of one small array (best of {args.repeat})")
    print(f"{'case':<46}| {'s':>7} | vs joinflow in-table")
    print("-" * 46 + "+---------+---------------------")
    for name, seconds in results.items():
        print(f"{name:<46}| {seconds:7.3f} | {seconds / base:8.2f}x")
    ratio = results["joinflow S3 <blob@lake>"] / base
    print(f"\n  target S3 (moto) fetch <= 3x in-table: {'MET' if ratio <= 3 else 'MISSED'} ({ratio:.2f}x; moto serves "
          f"{args.rows / results['joinflow S3, one request per object']:.0f} requests/s one by one)")


if __name__ == "__main__":
    main()
