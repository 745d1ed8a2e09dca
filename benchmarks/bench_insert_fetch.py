#!/usr/bin/env python
"""Side-by-side insert/fetch benchmark: raw driver vs joinflow vs DataJoint 2.x.

Not part of the test suite.  For each backend it creates one table of the shape

    id : int64 (primary key) | a : int32 | b : float64 | c : varchar(32) | d : datetime

in three separate schemas (``bench_raw``, ``bench_jf``, ``bench_dj``), then times

* insert   -- a list of ``--rows`` dicts (tuples for the raw driver) in one call / transaction
* to_dicts -- fetch everything as a list of dicts
* to_arrays-- fetch everything as a numpy structured array

taking the best of ``--repeat`` runs (the table is emptied between runs).  A second,
separate pass measures the peak Python memory of each fetch with tracemalloc, so the
tracing overhead does not distort the timings.  The schemas are dropped before and after.

Usage:  python benchmarks/bench_insert_fetch.py [--backend postgresql|mysql|both]
            [--rows N] [--repeat K] [--libs raw,joinflow,datajoint] [--profile]
            [--dj-chunk-size auto|0|N]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import logging
import pstats
import random
import time
import tracemalloc
import warnings

import numpy as np

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MY_URL = "mysql+pymysql://root@127.0.0.1:3306/"
PG_PARAMS = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")
MY_PARAMS = dict(host="127.0.0.1", port=3306, user="root", password="")

SCHEMAS = {"raw": "bench_raw", "joinflow": "bench_jf", "datajoint": "bench_dj"}
LIBS = ("raw", "joinflow", "datajoint")
OPS = ("insert", "to_dicts", "to_arrays")
FETCH_OPS = ("to_dicts", "to_arrays")

DEFINITION = """
# benchmark table
id : int64
---
a : int32
b : float64
c : varchar(32)
d : datetime
"""

COLUMNS = ("id", "a", "b", "c", "d")
# Structured dtype the raw path builds; string and datetime columns stay Python objects.
RAW_DTYPE = np.dtype([("id", "i8"), ("a", "i4"), ("b", "f8"), ("c", "O"), ("d", "O")])


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def make_rows(n: int, seed: int = 12345) -> list[dict]:
    """Deterministic rows; datetimes have whole seconds (MySQL DATETIME has no fraction)."""
    rng = random.Random(seed)
    start = dt.datetime(2020, 1, 1, 0, 0, 0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": i,
                "a": rng.randint(-(2**31), 2**31 - 1),
                "b": rng.uniform(-1e6, 1e6),
                "c": "".join(rng.choice(letters) for _ in range(rng.randint(4, 32))),
                "d": start + dt.timedelta(seconds=rng.randint(0, 10**8)),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# raw driver side
# --------------------------------------------------------------------------------------------
class RawPG:
    name = "postgresql"

    def __init__(self):
        import psycopg
        from psycopg.rows import dict_row, tuple_row

        self._dict_row, self._tuple_row = dict_row, tuple_row
        self.conn = psycopg.connect(**PG_PARAMS, sslmode="disable")
        self.conn.autocommit = True

    def drop_schema(self, schema: str) -> None:
        self.conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def create(self, schema: str) -> None:
        self.conn.execute(f'CREATE SCHEMA "{schema}"')
        self.conn.execute(
            f'CREATE TABLE "{schema}"."bench" ('
            "id bigint NOT NULL PRIMARY KEY, a integer NOT NULL, b double precision NOT NULL, "
            "c varchar(32) NOT NULL, d timestamp NOT NULL)"
        )
        self.table = f'"{schema}"."bench"'

    def clear(self) -> None:
        self.conn.execute(f"TRUNCATE {self.table}")

    def insert(self, tuples) -> None:
        sql = f"INSERT INTO {self.table} (id, a, b, c, d) VALUES (%s, %s, %s, %s, %s)"
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                cur.executemany(sql, tuples)

    def to_dicts(self):
        with self.conn.cursor(row_factory=self._dict_row) as cur:
            cur.execute(f"SELECT id, a, b, c, d FROM {self.table}")
            return cur.fetchall()

    def to_arrays(self):
        with self.conn.cursor(row_factory=self._tuple_row) as cur:
            cur.execute(f"SELECT id, a, b, c, d FROM {self.table}")
            rows = cur.fetchall()
        return np.array(rows, dtype=RAW_DTYPE)

    def close(self) -> None:
        self.conn.close()


class RawMySQL:
    name = "mysql"

    def __init__(self):
        import pymysql
        import pymysql.cursors

        self._dict_cursor = pymysql.cursors.DictCursor
        self._tuple_cursor = pymysql.cursors.Cursor
        self.conn = pymysql.connect(**MY_PARAMS, charset="utf8mb4", autocommit=True)

    def _run(self, sql: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql)

    def drop_schema(self, schema: str) -> None:
        self._run(f"DROP DATABASE IF EXISTS `{schema}`")

    def create(self, schema: str) -> None:
        self._run(f"CREATE DATABASE `{schema}`")
        self._run(
            f"CREATE TABLE `{schema}`.`bench` ("
            "id bigint NOT NULL, a int NOT NULL, b double NOT NULL, c varchar(32) NOT NULL, "
            "d datetime NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB"
        )
        self.table = f"`{schema}`.`bench`"

    def clear(self) -> None:
        self._run(f"TRUNCATE TABLE {self.table}")

    def insert(self, tuples) -> None:
        sql = f"INSERT INTO {self.table} (id, a, b, c, d) VALUES (%s, %s, %s, %s, %s)"
        self.conn.begin()
        try:
            with self.conn.cursor() as cur:
                cur.executemany(sql, tuples)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def _select(self, cursor_class):
        with self.conn.cursor(cursor_class) as cur:
            cur.execute(f"SELECT id, a, b, c, d FROM {self.table}")
            return cur.fetchall()

    def to_dicts(self):
        return list(self._select(self._dict_cursor))

    def to_arrays(self):
        rows = self._select(self._tuple_cursor)
        # pymysql returns a tuple of tuples; numpy would read the outer tuple as one record.
        return np.array(list(rows), dtype=RAW_DTYPE)

    def close(self) -> None:
        self.conn.close()


def raw_driver(backend: str):
    return RawPG() if backend == "postgresql" else RawMySQL()


# --------------------------------------------------------------------------------------------
# joinflow / datajoint side: the same class definition under either import
# --------------------------------------------------------------------------------------------
class LibRunner:
    """Declares ``Bench`` with library ``lib`` and exposes the timed operations."""

    def __init__(self, lib_name: str, backend: str, chunk_size: int | None = None):
        self.lib_name = lib_name
        self.chunk_size = chunk_size
        if lib_name == "joinflow":
            import joinflow as lib

            url = PG_URL if backend == "postgresql" else MY_URL
            connection = lib.Connection(url=url)
        else:
            import datajoint as lib

            if backend == "postgresql":
                settings = {"database.backend": "postgresql", "database.host": "127.0.0.1",
                            "database.port": 5432, "database.user": "postgres",
                            "database.password": "", "database.name": "test",
                            "database.use_tls": False}
            else:
                settings = {"database.backend": "mysql", "database.host": "127.0.0.1",
                            "database.port": 3306, "database.user": "root",
                            "database.password": "", "database.name": None,
                            "database.use_tls": False}
            for key, value in settings.items():
                lib.config[key] = value
            connection = lib.Connection(
                host=settings["database.host"], user=settings["database.user"], password="",
                port=settings["database.port"], use_tls=False,
                database_name=settings["database.name"], backend=backend,
            )
        self.lib = lib
        self.connection = connection
        self.schema = lib.Schema(SCHEMAS[lib_name], connection=connection)

        @self.schema
        class Bench(lib.Manual):
            definition = DEFINITION

        self.table = Bench

    def clear(self) -> None:
        self.table.delete_quick()

    def insert(self, rows) -> None:
        if self.chunk_size:
            self.table.insert(rows, chunk_size=self.chunk_size)
        else:
            self.table.insert(rows)

    def to_dicts(self):
        return self.table.to_dicts()

    def to_arrays(self):
        return self.table.to_arrays()

    def drop(self) -> None:
        self.schema.drop(prompt=False)

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------------
def timed(fn, *args):
    gc.collect()
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def peak_memory(fn) -> float:
    """Peak traced Python memory (MiB) while fn() runs, relative to the start."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    gc.collect()
    return (peak - base) / 2**20


def row_signature(obj) -> tuple:
    """Row count plus the normalized content of the row with the smallest id (sanity check)."""
    if isinstance(obj, np.ndarray):
        if not len(obj):
            return (0, None)
        rec = obj[int(np.argmin(obj["id"]))]
        first = tuple(rec[c].item() if isinstance(rec[c], np.generic) else rec[c] for c in COLUMNS)
        return (len(obj), first)
    if not obj:
        return (0, None)
    row = min(obj, key=lambda r: r["id"])
    return (len(obj), tuple(row[c] for c in COLUMNS))


def profile_call(label: str, fn, *args, top: int = 15) -> None:
    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    result = fn(*args)
    prof.disable()
    del result
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile: joinflow {label} (top {top} by tottime) ---")
    # Trim pstats' preamble down to the table itself.
    text = out.getvalue()
    start = text.find("   ncalls")
    print(text[start:] if start >= 0 else text)


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def fmt_ratio(num, den) -> str:
    if num is None or den is None or den == 0:
        return "-"
    return f"{num / den:.2f}x"


def fmt_value(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(title, unit, rows_by_op, digits) -> None:
    header = ("operation", f"raw {unit}", f"joinflow {unit}", f"datajoint {unit}",
              "joinflow/raw", "datajoint/joinflow")
    lines = []
    for op, vals in rows_by_op:
        raw, jf, djv = (vals.get(lib) for lib in LIBS)
        lines.append((op, fmt_value(raw, digits), fmt_value(jf, digits), fmt_value(djv, digits),
                      fmt_ratio(jf, raw), fmt_ratio(djv, jf)))
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    sep = "-+-".join("-" * w for w in widths)
    print(title)
    print(" | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print(sep)
    for line in lines:
        print(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))


def run_backend(backend: str, n_rows: int, repeat: int, libs: list[str], profile: bool,
                dj_chunk_size: str) -> None:
    print(f"\n=== backend: {backend}  rows: {n_rows}  repeat: {repeat} (best of) ===", flush=True)
    # DataJoint sends one multi-row INSERT per call (or per chunk).  On MySQL/MariaDB 200k rows
    # exceed max_allowed_packet (16 MiB by default), so by default it gets chunk_size=10000 there,
    # the same batch size joinflow uses by default (insert.batch_size).
    if dj_chunk_size == "auto":
        dj_chunk = 10_000 if backend == "mysql" else None
    else:
        dj_chunk = int(dj_chunk_size) or None
    if "datajoint" in libs:
        print(f"  datajoint insert chunk_size: {dj_chunk}", flush=True)
    dict_rows = make_rows(n_rows)
    tuple_rows = [tuple(r[c] for c in COLUMNS) for r in dict_rows]

    admin = raw_driver(backend)
    for schema in SCHEMAS.values():
        admin.drop_schema(schema)

    runners: dict[str, object] = {}
    try:
        if "raw" in libs:
            raw = raw_driver(backend)
            raw.create(SCHEMAS["raw"])
            runners["raw"] = raw
        for lib in ("joinflow", "datajoint"):
            if lib in libs:
                t0 = time.perf_counter()
                runners[lib] = LibRunner(lib, backend, dj_chunk if lib == "datajoint" else None)
                print(f"  {lib}: connect + declare {time.perf_counter() - t0:.3f} s", flush=True)

        best: dict[str, dict[str, float]] = {op: {} for op in OPS}
        signatures: dict[str, dict[str, tuple]] = {op: {} for op in FETCH_OPS}
        for rep in range(repeat):
            for lib in LIBS:
                if lib not in runners:
                    continue
                runner = runners[lib]
                runner.clear()
                payload = tuple_rows if lib == "raw" else dict_rows
                seconds, _ = timed(runner.insert, payload)
                best["insert"][lib] = min(seconds, best["insert"].get(lib, float("inf")))
                for op in FETCH_OPS:
                    seconds, result = timed(getattr(runner, op))
                    best[op][lib] = min(seconds, best[op].get(lib, float("inf")))
                    if rep == 0:
                        signatures[op][lib] = row_signature(result)
                    del result
                print(f"  repeat {rep + 1}/{repeat}: {lib} done "
                      f"(insert {best['insert'][lib]:.3f} s best so far)", flush=True)

        # Sanity check: every library returned every row, and the same first row.
        for op in FETCH_OPS:
            sigs = signatures[op]
            distinct = {repr(s) for s in sigs.values()}
            if len(distinct) > 1 or any(s[0] != n_rows for s in sigs.values()):
                print(f"  WARNING: {op} results differ between libraries:")
                for lib, sig in sigs.items():
                    print(f"    {lib}: {sig!r}")

        # Separate pass: peak traced Python memory of each fetch (table still holds n_rows rows).
        memory: dict[str, dict[str, float]] = {op: {} for op in FETCH_OPS}
        for lib, runner in runners.items():
            for op in FETCH_OPS:
                memory[op][lib] = peak_memory(getattr(runner, op))

        print()
        print_table(f"[{backend}] time (best of {repeat}, {n_rows} rows)", "s",
                    [(op, best[op]) for op in OPS], 3)
        print()
        print_table(f"[{backend}] peak Python memory of fetch (tracemalloc)", "MiB",
                    [(f"{op} peak", memory[op]) for op in FETCH_OPS], 1)

        if profile and "joinflow" in runners:
            jf = runners["joinflow"]
            jf.clear()
            profile_call("insert", jf.insert, dict_rows)
            profile_call("to_dicts", jf.to_dicts)
            profile_call("to_arrays", jf.to_arrays)
    finally:
        for lib, runner in runners.items():
            if lib != "raw":
                try:
                    runner.drop()
                except Exception as exc:  # fall back to the raw drop below
                    print(f"  note: {lib} schema.drop failed: {exc!r}")
            runner.close()
        for schema in SCHEMAS.values():
            admin.drop_schema(schema)
        admin.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgresql", "mysql", "both"), default="both")
    parser.add_argument("--rows", type=int, default=200_000, help="rows to insert (default 200000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per operation; best is kept (default 3)")
    parser.add_argument("--libs", default=",".join(LIBS),
                        help="comma-separated subset of raw,joinflow,datajoint (default: all)")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, cProfile the joinflow insert/to_dicts/to_arrays (top 15 by tottime)")
    parser.add_argument("--dj-chunk-size", default="auto",
                        help="chunk_size for DataJoint's insert: 'auto' (10000 on mysql, none on "
                             "postgresql), 0 for none, or a number")
    args = parser.parse_args(argv)
    libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    bad = [s for s in libs if s not in LIBS]
    if bad:
        parser.error(f"unknown --libs entries: {bad}")
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")

    warnings.simplefilter("ignore")  # DataJoint's "MariaDB not supported" / config-file warnings
    logging.getLogger("datajoint").setLevel(logging.ERROR)
    logging.getLogger("joinflow").setLevel(logging.ERROR)

    backends = ("postgresql", "mysql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        run_backend(backend, args.rows, args.repeat, libs, args.profile, args.dj_chunk_size)


if __name__ == "__main__":
    main()
