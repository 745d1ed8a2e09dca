#!/usr/bin/env python
"""Arrays and objects: joinflow vs DataJoint 2.3.5 vs the raw path, on PostgreSQL, in one run.

Not part of the test suite.  Three workloads, each timed for three implementations:

* ``blob``   -- insert + fetch of ``--count`` arrays of ``--mb`` MB each in a ``<blob>`` column
                (raw: ``ndarray.tobytes()`` into a ``bytea`` column with psycopg, fetched back with
                ``np.frombuffer``);
* ``npy``    -- insert of the same arrays into a ``<npy@store>`` column (raw: ``np.save`` to a
                file per array + one psycopg ``executemany`` of the paths);
* ``object`` -- insert of the same volume as ``bytes`` into an ``<object@store>`` column (raw:
                plain file writes + one psycopg ``executemany`` of the paths).

Every implementation writes to its own local folder store and its own schema.  The best of
``--repeat`` runs is kept; tables and stores are emptied between runs.  Ratios are printed
against the raw path and against DataJoint.  The data are standard-normal float64 noise
(measured signals do not compress well).

Usage:  python benchmarks/bench_objects.py [--count 100] [--mb 1] [--repeat 3]
            [--libs raw,joinflow,datajoint] [--workloads blob,npy,object]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_PARAMS = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")
SCHEMAS = {"raw": "bench_obj_raw", "joinflow": "bench_obj_jf", "datajoint": "bench_obj_dj"}
LIBS = ("raw", "joinflow", "datajoint")
WORKLOADS = ("blob", "npy", "object")

DEFINITIONS = {
    "blob": "item : int32\n---\ndata : <blob>\n",
    "npy": "item : int32\n---\ndata : <npy@bench>\n",
    "object": "item : int32\n---\ndata : <object@bench>\n",
}


def make_arrays(count: int, mb: float) -> list[np.ndarray]:
    rng = np.random.default_rng(2024)
    n = int(mb * 1024 * 1024 // 8)
    return [rng.standard_normal(n) for _ in range(count)]


def best_of(repeat: int, run, reset) -> float:
    best = float("inf")
    for _ in range(repeat):
        reset()
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# --------------------------------------------------------------------------------------------
# raw: numpy + psycopg + plain files
# --------------------------------------------------------------------------------------------
def bench_raw(workloads, arrays, payloads, store_dir: Path, repeat: int) -> dict:
    import psycopg

    schema = SCHEMAS["raw"]
    results = {}
    with psycopg.connect(**PG_PARAMS, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.blobs (item int PRIMARY KEY, data bytea NOT NULL)")
        conn.execute(f"CREATE TABLE {schema}.files (item int PRIMARY KEY, path text NOT NULL)")

        def reset():
            conn.execute(f"TRUNCATE {schema}.blobs, {schema}.files")
            shutil.rmtree(store_dir, ignore_errors=True)
            store_dir.mkdir(parents=True)

        def blob_round_trip():
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {schema}.blobs VALUES (%s, %s)",
                                [(i, a.tobytes()) for i, a in enumerate(arrays)])
            rows = conn.execute(f"SELECT item, data FROM {schema}.blobs").fetchall()
            fetched = [np.frombuffer(data, dtype=np.float64) for _, data in rows]
            assert len(fetched) == len(arrays)

        def npy_insert():
            paths = []
            for i, a in enumerate(arrays):
                path = store_dir / f"item={i}" / "data.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, a)
                paths.append((i, str(path)))
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {schema}.files VALUES (%s, %s)", paths)

        def object_insert():
            paths = []
            for i, data in enumerate(payloads):
                path = store_dir / f"item={i}" / "data"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                paths.append((i, str(path)))
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {schema}.files VALUES (%s, %s)", paths)

        runs = {"blob": blob_round_trip, "npy": npy_insert, "object": object_insert}
        for w in workloads:
            results[w] = best_of(repeat, runs[w], reset)
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return results


# --------------------------------------------------------------------------------------------
# joinflow and DataJoint: the same definitions, the same calls
# --------------------------------------------------------------------------------------------
def bench_library(lib, workloads, arrays, payloads, store_dir: Path, repeat: int) -> dict:
    name = SCHEMAS[lib]
    stores = {"bench": {"protocol": "file", "location": str(store_dir)}}
    if lib == "joinflow":
        import joinflow as mod

        config = mod.config.copy()
        config["safemode"] = False
        config["stores"] = dict(stores, default="bench")
        connection = mod.Connection(url=PG_URL, config=config)
        from joinflow import testing

        testing.drop_schemas(connection, [name])
        schema = mod.Schema(name, connection=connection)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import datajoint as mod

            for key, value in {"database.backend": "postgresql", "database.host": "127.0.0.1",
                               "database.port": 5432, "database.user": "postgres", "database.password": "",
                               "database.name": "test", "database.use_tls": False, "safemode": False}.items():
                mod.config[key] = value
            mod.config["stores"] = stores
            logging.getLogger("datajoint").setLevel(logging.WARNING)
            connection = mod.conn(reset=True)
            schema = mod.Schema(name, connection=connection)
            schema.drop(prompt=False)
            schema = mod.Schema(name, connection=connection)
    tables = {}
    for w in workloads:
        tables[w] = type(f"Bench{w.capitalize()}", (mod.Manual,), {"definition": DEFINITIONS[w]})
        schema(tables[w])
    results = {}

    for w in workloads:
        table = tables[w]

        def reset(table=table):
            # TRUNCATE as on the raw path (DELETE would leave 100 MB of dead TOAST rows behind)
            sql = f"TRUNCATE TABLE {table.full_table_name}"
            connection.execute(sql) if lib == "joinflow" else connection.query(sql)
            shutil.rmtree(store_dir, ignore_errors=True)
            store_dir.mkdir(parents=True)

        if w == "blob":
            def run(table=table):
                table.insert([{"item": i, "data": a} for i, a in enumerate(arrays)])
                fetched = table.to_dicts()
                assert len(fetched) == len(arrays) and fetched[0]["data"].shape == arrays[0].shape
        elif w == "npy":
            def run(table=table):
                table.insert([{"item": i, "data": a} for i, a in enumerate(arrays)])
        else:
            def run(table=table):
                table.insert([{"item": i, "data": p} for i, p in enumerate(payloads)])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[w] = best_of(repeat, run, reset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema.drop(prompt=False) if lib == "datajoint" else None
    if lib == "joinflow":
        from joinflow import testing

        testing.drop_schemas(connection, [name])
        connection.close()
    else:
        connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--libs", default=",".join(LIBS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args()
    libs = [lib for lib in args.libs.split(",") if lib]
    workloads = [w for w in args.workloads.split(",") if w]
    arrays = make_arrays(args.count, args.mb)
    payloads = [a.tobytes() for a in arrays]
    total_mb = sum(a.nbytes for a in arrays) / 2**20
    root = Path(tempfile.mkdtemp(prefix="jf-bench-objects-"))
    try:
        results = {}
        for lib in libs:
            store_dir = root / lib
            if lib == "raw":
                results[lib] = bench_raw(workloads, arrays, payloads, store_dir, args.repeat)
            else:
                results[lib] = bench_library(lib, workloads, arrays, payloads, store_dir, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.count} arrays x {args.mb:g} MB = {total_mb:.0f} MB, PostgreSQL, best of {args.repeat} "
          f"(cpus: {os.cpu_count()})")
    header = f"{'workload':<26}" + "".join(f"{lib:>12}" for lib in libs)
    if "raw" in libs and "joinflow" in libs:
        header += f"{'jf/raw':>9}"
    if "datajoint" in libs and "joinflow" in libs:
        header += f"{'jf/dj':>9}"
    print(header)
    labels = {"blob": "<blob> insert+fetch", "npy": "<npy@> insert", "object": "<object@> insert"}
    for w in workloads:
        line = f"{labels[w]:<26}" + "".join(f"{results[lib][w]:>11.3f}s" for lib in libs)
        if "raw" in libs and "joinflow" in libs:
            line += f"{results['joinflow'][w] / results['raw'][w]:>8.2f}x"
        if "datajoint" in libs and "joinflow" in libs:
            line += f"{results['joinflow'][w] / results['datajoint'][w]:>8.2f}x"
        print(line)


if __name__ == "__main__":
    main()
