#!/usr/bin/env python
"""populate() benchmark (issue 5): per-key overhead of populate(), and the speed of progress().

Not part of the test suite.  For each backend:

populate -- ``Source(src_id | value)`` holds ``--keys`` rows, and ``Result`` is a Computed
    table below it whose ``make()`` does almost nothing: it fetches one value with
    ``fetch1`` and inserts one row with ``insert1``.  The script times these runs, best of
    ``--repeat`` (interleaved), with ``Result`` (and its job table) emptied before each run:

      joinflow   populate()   populate(reserve_jobs=True)   populate(reserve_jobs=True, processes=2)
      datajoint  populate()   populate(reserve_jobs=True)   populate(reserve_jobs=True, processes=2)
      raw        one transaction per key: SELECT the value, INSERT the row, COMMIT

    The raw floor (psycopg 3 / pymysql, own schema) first finds the pending keys with one
    anti-join, like populate() does.  It reports wall-clock milliseconds per key; with
    processes=2 that is the wall time of two workers divided by the number of keys.

progress -- ``Upstream`` holds ``--progress-keys`` rows and the Computed table
    ``Downstream`` holds ``--progress-done`` of them (inserted directly, make() never
    runs).  It times ``Downstream.progress()`` (median of ``--progress-repeat``) for
    joinflow and DataJoint, and the two hand-written COUNT queries on the raw driver.

Each library gets its own schema (``bench_pop_raw``, ``bench_pop_jf``, ``bench_pop_dj``).
The script drops them before it starts and again when it finishes.

Usage:  python benchmarks/bench_populate.py [--backend postgresql|mysql|both] [--keys N]
            [--repeat K] [--progress-keys N] [--progress-done F] [--progress-repeat K]
            [--libs raw,joinflow,datajoint] [--no-processes] [--smoke] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import shutil
import sqlite3
import tempfile
import gc
import io
import logging
import multiprocessing
import os
import pstats
import signal
import statistics
import threading
import time
import warnings

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SQLITE_DIR = tempfile.mkdtemp(prefix="bench_populate_")  # sqlite: one file per side, removed at exit
SQLITE_FILES = {"joinflow": os.path.join(SQLITE_DIR, "joinflow.db"), "raw": os.path.join(SQLITE_DIR, "raw.db")}
MY_URL = "mysql+pymysql://root@127.0.0.1:3306/"
PG_PARAMS = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")
MY_PARAMS = dict(host="127.0.0.1", port=3306, user="root", password="")

SCHEMAS = {"raw": "bench_pop_raw", "joinflow": "bench_pop_jf", "datajoint": "bench_pop_dj"}
LIBS = ("raw", "joinflow", "datajoint")
INSERT_CHUNK = 10_000  # DataJoint sends one INSERT per call; keep it under max_allowed_packet

SOURCE_DEFINITION = """
# upstream of the populate benchmark
src_id : int64
---
value : float64
"""

RESULT_DEFINITION = """
# trivial computation: twice the upstream value
-> Source
---
doubled : float64
"""

UPSTREAM_DEFINITION = """
# upstream of the progress benchmark
up_id : int64
---
value : float64
"""

DOWNSTREAM_DEFINITION = """
# mostly populated computed table (rows inserted directly)
-> Upstream
---
doubled : float64
"""

# (label, populate keyword arguments)
MODES = (
    ("populate()", {}),
    ("populate(reserve_jobs=True)", {"reserve_jobs": True}),
    ("populate(reserve_jobs=True, processes=2)", {"reserve_jobs": True, "processes": 2}),
)


# --------------------------------------------------------------------------------------------
# connections
# --------------------------------------------------------------------------------------------
def connect_library(lib_name: str, backend: str):
    """(module, connection) for joinflow or DataJoint on ``backend``."""
    if lib_name == "joinflow":
        import joinflow as lib

        if backend == "sqlite":
            return lib, lib.Connection(url=f"sqlite:///{SQLITE_FILES['joinflow']}")
        return lib, lib.Connection(url=PG_URL if backend == "postgresql" else MY_URL)
    import datajoint as lib

    if backend == "postgresql":
        host, port, user, name = "127.0.0.1", 5432, "postgres", "test"
    else:
        host, port, user, name = "127.0.0.1", 3306, "root", None
    for key, value in {"database.backend": backend, "database.host": host, "database.port": port,
                       "database.user": user, "database.password": "", "database.name": name,
                       "database.use_tls": False, "loglevel": "ERROR"}.items():
        lib.config[key] = value  # loglevel: DataJoint resets its logger's level when imported
    connection = lib.Connection(host=host, user=user, password="", port=port, use_tls=False,
                                database_name=name, backend=backend)
    return lib, connection


# --------------------------------------------------------------------------------------------
# raw driver side
# --------------------------------------------------------------------------------------------
class RawSide:
    """The floor: the same two tables, driven by hand with one transaction per key."""

    def __init__(self, backend: str, schema: str | None = None):
        self.backend = backend
        self.ph = "?" if backend == "sqlite" else "%s"
        if backend == "sqlite":  # the raw side has its own file; the admin reads joinflow's
            path = SQLITE_FILES["raw" if schema == SCHEMAS["raw"] else "joinflow"]
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
            for pragma in ("foreign_keys = ON", "busy_timeout = 60000", "journal_mode = WAL",
                           "synchronous = NORMAL"):  # as joinflow sets them
                self.conn.execute(f"PRAGMA {pragma}")
            self.q = lambda name: f'"{name}"'
        elif backend == "postgresql":
            import psycopg

            self.conn = psycopg.connect(**PG_PARAMS, sslmode="disable")
            self.q = lambda name: f'"{name}"'
        else:
            import pymysql

            self.conn = pymysql.connect(**MY_PARAMS, charset="utf8mb4")
            self.q = lambda name: f"`{name}`"
        self._set_autocommit(True)  # DDL and setup; populate() turns it off for its transactions
        self.schema = schema

    def _name(self, table: str, schema: str | None = None) -> str:
        schema = schema or self.schema
        if self.backend == "sqlite":  # joinflow's layout: one file, tables named "schema.table"
            return self.q(f"{schema}.{table}")
        return f"{self.q(schema)}.{self.q(table)}"

    def cursor(self):
        return contextlib.closing(self.conn.cursor()) if self.backend == "sqlite" else self.conn.cursor()

    def run(self, sql: str, params=None) -> None:
        with self.cursor() as cur:
            cur.execute(sql, params or ())

    def scalar(self, sql: str):
        with self.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]

    def drop_schema(self, schema: str) -> None:
        if self.backend == "sqlite":
            names = [r[0] for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?", (schema + ".%",))]
            self.run("PRAGMA foreign_keys = OFF")
            for name in names:
                self.run(f"DROP TABLE IF EXISTS {self.q(name)}")
            self.run("PRAGMA foreign_keys = ON")
        elif self.backend == "postgresql":
            self.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        else:
            self.run(f"DROP DATABASE IF EXISTS `{schema}`")

    def create(self, source_rows: list[dict]) -> None:
        source, result = self._name("source"), self._name("result")
        if self.backend == "sqlite":
            self.run(f"CREATE TABLE {source} (src_id INTEGER NOT NULL PRIMARY KEY, value REAL NOT NULL)")
            self.run(f"CREATE TABLE {result} (src_id INTEGER NOT NULL PRIMARY KEY "
                     f"REFERENCES {source} (src_id), doubled REAL NOT NULL)")
        elif self.backend == "postgresql":
            self.run(f"CREATE SCHEMA {self.q(self.schema)}")
            self.run(f"CREATE TABLE {source} (src_id bigint PRIMARY KEY, "
                     "value double precision NOT NULL)")
            self.run(f"CREATE TABLE {result} (src_id bigint PRIMARY KEY "
                     f"REFERENCES {source} (src_id), doubled double precision NOT NULL)")
        else:
            self.run(f"CREATE DATABASE {self.q(self.schema)}")
            self.run(f"CREATE TABLE {source} (src_id bigint NOT NULL PRIMARY KEY, "
                     "value double NOT NULL) ENGINE=InnoDB")
            self.run(f"CREATE TABLE {result} (src_id bigint NOT NULL PRIMARY KEY, "
                     f"doubled double NOT NULL, FOREIGN KEY (src_id) REFERENCES {source} (src_id)) "
                     "ENGINE=InnoDB")
        with self.cursor() as cur:
            cur.executemany(f"INSERT INTO {source} (src_id, value) VALUES ({self.ph}, {self.ph})",
                            [(r["src_id"], r["value"]) for r in source_rows])

    def clear(self) -> None:
        self.run(f"DELETE FROM {self._name('result')}")

    def count(self) -> int:
        return self.scalar(f"SELECT count(*) FROM {self._name('result')}")

    def _set_autocommit(self, on: bool) -> None:
        if self.backend == "sqlite":
            return  # sqlite3 with isolation_level=None: populate() sends BEGIN itself
        if self.backend == "postgresql":
            self.conn.autocommit = on
        else:
            self.conn.autocommit(on)

    def populate(self) -> int:
        """Pending keys by one anti-join, then SELECT + INSERT + COMMIT per key.

        Returns the number of keys done.
        """
        source, result = self._name("source"), self._name("result")
        pending_sql = (f"SELECT s.src_id FROM {source} AS s WHERE NOT EXISTS "
                       f"(SELECT 1 FROM {result} AS r WHERE r.src_id = s.src_id)")
        select_sql = f"SELECT value FROM {source} WHERE src_id = {self.ph}"
        insert_sql = f"INSERT INTO {result} (src_id, doubled) VALUES ({self.ph}, {self.ph})"
        begin = self.backend == "sqlite"  # the other drivers begin implicitly (psycopg: one BEGIN)
        self._set_autocommit(False)
        try:
            conn = self.conn
            with self.cursor() as cur:
                cur.execute(pending_sql)
                keys = [row[0] for row in cur.fetchall()]
                if not begin:
                    conn.commit()
                for key in keys:
                    if begin:
                        cur.execute("BEGIN IMMEDIATE")
                    cur.execute(select_sql, (key,))
                    value = cur.fetchone()[0]
                    cur.execute(insert_sql, (key, 2 * value))
                    conn.commit()
        finally:
            self._set_autocommit(True)
        return len(keys)

    def count_rows(self, schema: str, table: str) -> int:
        return self.scalar(f"SELECT count(*) FROM {self._name(table, schema)}")

    def progress_sql(self, schema: str, upstream: str, downstream: str) -> tuple[int, int]:
        """The two counts progress() reports, as hand-written SQL over a library's tables."""
        up = self._name(upstream, schema)
        down = self._name(downstream, schema)
        total = self.scalar(f"SELECT count(*) FROM {up}")
        remaining = self.scalar(f"SELECT count(*) FROM {up} AS u WHERE NOT EXISTS "
                                f"(SELECT 1 FROM {down} AS d WHERE d.up_id = u.up_id)")
        return remaining, total

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# joinflow / datajoint side: the same class definitions under either import
# --------------------------------------------------------------------------------------------
class LibSide:
    def __init__(self, lib_name: str, backend: str, source_rows, up_rows, down_rows):
        self.lib_name = lib_name
        self.lib, self.connection = connect_library(lib_name, backend)
        lib = self.lib
        self.schema = lib.Schema(SCHEMAS[lib_name], connection=self.connection)

        @self.schema
        class Source(lib.Manual):
            definition = SOURCE_DEFINITION

        @self.schema
        class Result(lib.Computed):
            definition = RESULT_DEFINITION

            def make(self, key):
                value = (Source & key).fetch1("value")
                self.insert1(dict(key, doubled=2 * value))

        @self.schema
        class Upstream(lib.Manual):
            definition = UPSTREAM_DEFINITION

        @self.schema
        class Downstream(lib.Computed):
            definition = DOWNSTREAM_DEFINITION

            def make(self, key):  # never called: rows are inserted directly
                raise RuntimeError("not expected to run")

        self.Source, self.Result = Source, Result
        self.Upstream, self.Downstream = Upstream, Downstream
        for table, rows, direct in ((Source, source_rows, False), (Upstream, up_rows, False),
                                    (Downstream, down_rows, True)):
            for start in range(0, len(rows), INSERT_CHUNK):
                chunk = rows[start:start + INSERT_CHUNK]
                if direct:
                    table.insert(chunk, allow_direct_insert=True)
                else:
                    table.insert(chunk)

    def clear(self) -> None:
        self.Result.delete_quick()
        try:
            self.Result.jobs.delete_quick()
        except Exception:  # job table not created yet
            pass

    def count(self) -> int:
        return len(self.Result())

    def populate(self, **kwargs) -> int:
        return self.Result.populate(**kwargs)["success_count"]

    def progress(self):
        return self.Downstream.progress()

    def drop(self) -> None:
        self.schema.drop(prompt=False)

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# a guard for multi-process runs
# --------------------------------------------------------------------------------------------
def child_pids() -> list[int]:
    """Process ids of this process's children (they were started by this script)."""
    path = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    try:
        with open(path) as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:  # not Linux
        return [child.pid for child in multiprocessing.active_children()]


class PoolWatchdog:
    """Ends a multi-process populate() whose worker pool never shuts down.

    DataJoint's pool workers inherit its SIGTERM handler, which raises SystemExit.  When the
    pool terminates them, a worker can die holding the pool's queue lock; the other worker then
    blocks forever and populate() never returns.  The watchdog counts the target's rows on its
    own connection.  Once every row is there, if populate() has not returned ``grace`` seconds
    later, it kills this process's remaining children (the pool workers) so the run can end.
    The run is then timed until the moment the last row appeared.
    """

    def __init__(self, backend: str, schema: str, table: str, n_keys: int, grace: float = 30.0):
        self.backend, self.schema, self.table = backend, schema, table
        self.n_keys, self.grace = n_keys, grace
        self.start = self.done_at = None
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-watchdog")

    def __enter__(self) -> "PoolWatchdog":
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raw = RawSide(self.backend)
        try:
            while not self._stop.wait(0.5):
                now = time.perf_counter()
                if self.done_at is None:
                    if raw.count_rows(self.schema, self.table) >= self.n_keys:
                        self.done_at = now
                elif now - self.done_at > self.grace:
                    for pid in child_pids():
                        try:
                            os.kill(pid, signal.SIGKILL)
                            self.killed.append(pid)
                        except OSError:
                            pass
                    if self.killed:
                        return
        finally:
            raw.close()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, *args, **kwargs):
    """(wall seconds, client CPU seconds, result) of one call."""
    gc.collect()
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, cpu_seconds() - c0, result


def reconnect(side) -> None:
    try:
        side.connection.connect()
    except Exception:
        pass


def median_ms(fn, repeat: int):
    fn()  # warm-up: heading and dependency caches, server-side plan
    samples, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000, result


def profile_call(label: str, fn, top: int = 15) -> None:
    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    start = text.find("   ncalls")
    print(f"\n--- cProfile: joinflow {label} (top {top} by tottime) ---")
    print(text[start:] if start >= 0 else text)


def fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(num, den) -> str:
    if num is None or den is None or den == 0:
        return "-"
    return f"{num / den:.2f}x"


def print_table(title: str, header: tuple, lines: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    print(title)
    print(format_row(header, widths))
    print("-+-".join("-" * w for w in widths))
    for row in lines:
        print(format_row(row, widths))


def format_row(cells, widths) -> str:
    """First column left-aligned, the others right-aligned."""
    return " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                      for i, (c, w) in enumerate(zip(cells, widths)))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def run_backend(backend: str, args, libs: list[str]) -> None:
    n_keys, n_up = args.keys, args.progress_keys
    n_done = int(round(n_up * args.progress_done))
    print(f"\n=== backend: {backend}  populate keys: {n_keys}  progress keys: {n_up} "
          f"({n_done} done) ===", flush=True)
    source_rows = [{"src_id": i, "value": float(i) / 3} for i in range(n_keys)]
    up_rows = [{"up_id": i, "value": float(i)} for i in range(n_up)]
    down_rows = [{"up_id": i, "doubled": 2.0 * i} for i in range(n_done)]
    modes = [m for m in MODES if not (args.no_processes and "processes" in m[1])]
    if backend == "sqlite" and "datajoint" in libs:
        print("  (DataJoint 2.3.5 has no SQLite backend: raw and joinflow only)")
        libs = [lib_name for lib_name in libs if lib_name != "datajoint"]

    admin = RawSide(backend)
    for schema in SCHEMAS.values():
        admin.drop_schema(schema)
    sides: dict[str, object] = {}
    try:
        if "raw" in libs:
            raw = RawSide(backend, SCHEMAS["raw"])
            raw.create(source_rows)
            sides["raw"] = raw
        for lib_name in ("joinflow", "datajoint"):
            if lib_name in libs:
                t0 = time.perf_counter()
                sides[lib_name] = LibSide(lib_name, backend, source_rows, up_rows, down_rows)
                print(f"  {lib_name}: connect + declare + load "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)

        # ---- populate ------------------------------------------------------------------------
        # Runs are interleaved (raw, every joinflow mode, every DataJoint mode, then again) and
        # the best of --repeat is kept, so a burst of load elsewhere hits one run, not one
        # library.  Client CPU (this process plus its reaped worker processes) is kept too: it
        # is what the library itself costs, whatever the database server is doing.
        wall: dict[tuple[str, str], float | None] = {}
        cpu: dict[tuple[str, str], float] = {}
        notes: list[str] = []
        runs = [("raw", "floor", {})] if "raw" in sides else []
        runs += [(lib_name, label, kwargs) for lib_name in ("joinflow", "datajoint")
                 if lib_name in sides for label, kwargs in modes]
        for rep in range(args.repeat):
            for lib_name, label, kwargs in runs:
                run = (lib_name, label)
                if run in wall and wall[run] is None:
                    continue  # failed before
                side = sides[lib_name]
                side.clear()
                watchdog = None
                try:
                    if kwargs.get("processes", 1) > 1:
                        watchdog = PoolWatchdog(backend, SCHEMAS[lib_name],
                                                side.Result.table_name, n_keys)
                        with watchdog:
                            elapsed, used, made = timed(side.populate, **kwargs)
                    else:
                        elapsed, used, made = timed(side.populate, **kwargs)
                except Exception as exc:
                    if watchdog is None or not watchdog.killed:
                        wall[run] = None
                        first_line = str(exc).splitlines()[0][:120] if str(exc) else ""
                        notes.append(f"{lib_name} {label} failed: {type(exc).__name__}: "
                                     f"{first_line}")
                        print(f"  {lib_name} {label}: FAILED ({type(exc).__name__})", flush=True)
                        reconnect(side)  # a failed multi-process run may leave it disconnected
                        continue
                    elapsed, used, made = None, None, None  # the watchdog ended it: see below
                if watchdog is not None and watchdog.killed:
                    elapsed = watchdog.done_at - watchdog.start
                    made = n_keys if made is None else made
                    notes.append(f"{lib_name} {label} (repeat {rep + 1}): all rows were written, "
                                 f"but populate() did not return for {watchdog.grace:.0f} s (pool "
                                 f"shutdown hung); killed worker pid(s) {watchdog.killed}; timed "
                                 f"until the last row appeared")
                    print(f"  repeat {rep + 1}/{args.repeat}: {lib_name} {label}: pool shutdown "
                          f"HUNG, workers killed", flush=True)
                    reconnect(side)
                wall[run] = min(elapsed, wall.get(run) or float("inf"))
                if used is not None:
                    cpu[run] = min(used, cpu.get(run, float("inf")))
                rows = side.count()
                if made != n_keys or rows != n_keys:
                    notes.append(f"{lib_name} {label}: made {made}, table has {rows} "
                                 f"(expected {n_keys})")
                print(f"  repeat {rep + 1}/{args.repeat}: {lib_name} {label}: {elapsed:.2f} s",
                      flush=True)

        # ---- progress ------------------------------------------------------------------------
        progress_ms: dict[str, float] = {}
        progress_out: dict[str, tuple] = {}
        for lib_name in ("joinflow", "datajoint"):
            if lib_name in sides:
                progress_ms[lib_name], progress_out[lib_name] = median_ms(
                    sides[lib_name].progress, args.progress_repeat)
        if "joinflow" in sides:  # hand-written SQL over joinflow's tables, as a reference
            jf_side = sides["joinflow"]
            progress_ms["raw"], progress_out["raw"] = median_ms(
                lambda: admin.progress_sql(SCHEMAS["joinflow"], jf_side.Upstream.table_name,
                                           jf_side.Downstream.table_name), args.progress_repeat)
        expected = (n_up - n_done, n_up)
        for lib_name, out in progress_out.items():
            if tuple(out) != expected:
                notes.append(f"{lib_name} progress() returned {tuple(out)}, expected {expected}")

        # ---- report ----------------------------------------------------------------------------
        per_key = {run: (None if s is None else s * 1000 / n_keys) for run, s in wall.items()}
        cpu_key = {run: s * 1000 / n_keys for run, s in cpu.items()}
        floor = per_key.get(("raw", "floor"))
        lines = []
        for run in [("raw", "floor")] + [(lib_name, label) for lib_name in ("joinflow", "datajoint")
                                         for label, _ in modes]:
            if run not in wall:
                continue
            lib_name, label = run
            name = "raw: 1 transaction per key" if lib_name == "raw" else f"{lib_name} {label}"
            mine = per_key[run]
            vs_jf = "-"
            if lib_name == "datajoint":
                vs_jf = ratio(mine, per_key.get(("joinflow", label)))
            lines.append((name, fmt(wall[run], 2), fmt(mine, 3), ratio(mine, floor), vs_jf,
                          fmt(cpu_key.get(run), 3)))
        print()
        print_table(f"[{backend}] populate {n_keys} keys, trivial make() "
                    f"(best of {args.repeat}; wall clock)",
                    ("run", "total s", "ms/key", "vs raw floor", "datajoint/joinflow",
                     "client CPU ms/key"), lines)
        print()
        print_table(f"[{backend}] progress() with {n_up} upstream keys, {n_done} done "
                    f"(median of {args.progress_repeat})",
                    ("library", "ms", "vs joinflow"),
                    [(name, fmt(progress_ms[name], 1),
                      ratio(progress_ms[name], progress_ms.get("joinflow")))
                     for name in ("raw", "joinflow", "datajoint") if name in progress_ms])
        for note in notes:
            print(f"  NOTE: {note}")

        reserve = "populate(reserve_jobs=True)"
        jf_res, dj_res = per_key.get(("joinflow", reserve)), per_key.get(("datajoint", reserve))
        jf_prog = progress_ms.get("joinflow")
        print()
        print(f"  target joinflow reserve_jobs <= 2x raw floor per key: "
              f"{verdict(jf_res <= 2 * floor if jf_res and floor else None)}"
              + (f" ({jf_res / floor:.2f}x)" if jf_res and floor else ""))
        print(f"  target joinflow reserve_jobs >= 3x less than datajoint: "
              f"{verdict(dj_res >= 3 * jf_res if jf_res and dj_res else None)}"
              + (f" ({dj_res / jf_res:.2f}x)" if jf_res and dj_res else ""))
        print(f"  target joinflow progress() < 100 ms: "
              f"{verdict(jf_prog < 100 if jf_prog is not None else None)}"
              + (f" ({jf_prog:.1f} ms)" if jf_prog is not None else ""))

        if args.profile and "joinflow" in sides:
            side = sides["joinflow"]
            side.clear()
            profile_call(f"populate(reserve_jobs=True), {n_keys} keys",
                         lambda: side.populate(reserve_jobs=True))
            profile_call("progress()", side.progress)
    finally:
        for lib_name, side in sides.items():
            if lib_name != "raw":
                try:
                    side.drop()
                except Exception as exc:  # the raw drop below cleans up
                    print(f"  note: {lib_name} schema.drop failed: {exc!r}")
            side.close()
        for schema in SCHEMAS.values():
            admin.drop_schema(schema)
        admin.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgresql", "mysql", "sqlite", "both", "all"), default="both",
                        help="both = postgresql and mysql; all = also sqlite (no DataJoint there)")
    parser.add_argument("--no-sync-commit", action="store_true",
                        help="PostgreSQL: every connection of this run (raw, joinflow, DataJoint, workers) "
                             "uses synchronous_commit=off (PGOPTIONS), so COMMIT does not wait for the "
                             "WAL flush and the figures show client and protocol cost, not the disk")
    parser.add_argument("--keys", type=int, default=5000,
                        help="upstream keys to populate (default 5000)")
    parser.add_argument("--progress-keys", type=int, default=100_000,
                        help="upstream keys for the progress() test (default 100000)")
    parser.add_argument("--progress-done", type=float, default=0.9,
                        help="fraction of them already populated (default 0.9)")
    parser.add_argument("--progress-repeat", type=int, default=5,
                        help="progress() calls per library; the median is kept (default 5)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="populate runs per mode, interleaved; the best is kept (default 1)")
    parser.add_argument("--libs", default=",".join(LIBS),
                        help="comma-separated subset of raw,joinflow,datajoint (default: all)")
    parser.add_argument("--no-processes", action="store_true", help="skip the processes=2 runs")
    parser.add_argument("--smoke", action="store_true",
                        help="quick check: 200 keys, 5000 progress keys, progress repeat 2")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile joinflow's populate(reserve_jobs=True) and progress() "
                             "(top 15 by tottime)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.keys, args.progress_keys, args.progress_repeat, args.repeat = 200, 5000, 2, 1
    libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    bad = [s for s in libs if s not in LIBS]
    if bad:
        parser.error(f"unknown --libs entries: {bad}")
    counts = (args.keys, args.progress_keys, args.progress_repeat, args.repeat)
    if min(counts) < 1 or not 0 <= args.progress_done <= 1:
        parser.error("--keys, --progress-keys, --progress-repeat and --repeat must be positive; "
                     "--progress-done must be in [0, 1]")

    warnings.simplefilter("ignore")  # DataJoint's "MariaDB not supported" / config-file warnings
    logging.getLogger("datajoint").setLevel(logging.ERROR)
    logging.getLogger("joinflow").setLevel(logging.ERROR)

    if args.no_sync_commit:
        os.environ["PGOPTIONS"] = (os.environ.get("PGOPTIONS", "") + " -c synchronous_commit=off").strip()
    backends = {"both": ("postgresql", "mysql"), "all": ("postgresql", "mysql", "sqlite")}.get(
        args.backend, (args.backend,))
    try:
        for backend in backends:
            run_backend(backend, args, libs)
    finally:
        shutil.rmtree(SQLITE_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
