#!/usr/bin/env python
"""Query benchmark (issue 3): SQL compile time of a deep expression, and a 3-table join + fetch.

Not part of the test suite.  For each backend it runs two measurements.

(a) compile -- a table ``Item(id | grp, b, c)`` gets ``--depth`` chained operators, cycling
    through a dict restriction ``& {"grp": 7}``, a string restriction ``& "b > N"`` and a
    projection that either duplicates ``b`` (``.proj(..., xN="(b)")``) or renames ``c``
    back and forth (``.proj(..., c2="c")`` / ``.proj(..., c="c2")``).  In one run it reports,
    for joinflow and DataJoint (median microseconds): building the expression; ``make_sql()``
    of an expression built (untimed) just before; the same with joinflow's SQL cache emptied
    first (a shape never seen before); build + ``make_sql()``; build + ``len()`` (one COUNT
    on the server); and build + ``len()`` of ``--depth`` chained restrictions only (a chain
    DataJoint's SQL also runs on PostgreSQL).

(b) join -- ``Subject`` (``--subjects``) <- ``Session`` (x ``--sessions-per``) <- ``Trial``
    (x ``--trials-per``), each with a few secondary attributes, and times
    ``(Subject * Session * Trial).to_dicts()`` for joinflow and DataJoint.  The raw driver
    (psycopg 3 with ``dict_row`` / pymysql with ``DictCursor``) runs the equivalent
    hand-written SQL on joinflow's tables.  The libraries take turns (``--repeat`` rounds)
    and the best run of each is kept.

Each library gets its own schema (``bench_q_jf``, ``bench_q_dj``).  The script drops them
before it starts and again when it finishes.

Usage:  python benchmarks/bench_query.py [--backend postgresql|mysql|both] [--reps N]
            [--depth D] [--subjects N] [--sessions-per N] [--trials-per N] [--repeat K]
            [--smoke] [--profile]
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
import statistics
import time
import warnings

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MY_URL = "mysql+pymysql://root@127.0.0.1:3306/"
PG_PARAMS = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")
MY_PARAMS = dict(host="127.0.0.1", port=3306, user="root", password="")

SCHEMAS = {"joinflow": "bench_q_jf", "datajoint": "bench_q_dj"}

ITEM_ROWS = 1000  # rows of Item; only used to check that the deep query returns the right rows

ITEM_DEFINITION = """
# compile-benchmark table
id : int64
---
grp : int32
b : int32
c : varchar(16)
"""

SUBJECT_DEFINITION = """
# subject
subject_id : int32
---
species : varchar(16)
weight : float64
"""

SESSION_DEFINITION = """
# session of a subject
-> Subject
session_id : int16
---
session_date : date
rig : varchar(16)
"""

TRIAL_DEFINITION = """
# trial of a session
-> Session
trial_id : int16
---
response : int32
rt : float64
"""

JOIN_COLUMNS = ("subject_id", "session_id", "trial_id", "species", "weight", "session_date", "rig",
                "response", "rt")
KEY_COLUMNS = ("subject_id", "session_id", "trial_id")


# --------------------------------------------------------------------------------------------
# connections
# --------------------------------------------------------------------------------------------
def connect_library(lib_name: str, backend: str):
    """(module, connection) for joinflow or DataJoint on ``backend``."""
    if lib_name == "joinflow":
        import joinflow as lib

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


class RawDriver:
    """psycopg 3 or pymysql, autocommit, with a dict cursor for the join query."""

    def __init__(self, backend: str):
        self.backend = backend
        if backend == "postgresql":
            import psycopg
            from psycopg.rows import dict_row

            self._dict_row = dict_row
            self.conn = psycopg.connect(**PG_PARAMS, sslmode="disable")
            self.conn.autocommit = True
        else:
            import pymysql
            import pymysql.cursors

            self._dict_cursor = pymysql.cursors.DictCursor
            self.conn = pymysql.connect(**MY_PARAMS, charset="utf8mb4", autocommit=True)

    def run(self, sql: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql)

    def drop_schema(self, schema: str) -> None:
        if self.backend == "postgresql":
            self.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        else:
            self.run(f"DROP DATABASE IF EXISTS `{schema}`")

    def fetch_dicts(self, sql: str) -> list[dict]:
        if self.backend == "postgresql":
            with self.conn.cursor(row_factory=self._dict_row) as cur:
                cur.execute(sql)
                return cur.fetchall()
        with self.conn.cursor(self._dict_cursor) as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def close(self) -> None:
        self.conn.close()


def quote(backend: str, name: str) -> str:
    return f'"{name}"' if backend == "postgresql" else f"`{name}`"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def item_rows() -> list[dict]:
    return [{"id": i, "grp": i % 10, "b": i, "c": f"c{i}"} for i in range(ITEM_ROWS)]


def join_rows(n_subjects: int, sessions_per: int, trials_per: int, seed: int = 7):
    rng = random.Random(seed)
    species = ("mouse", "rat", "macaque", "zebrafish")
    rigs = ("rig-a", "rig-b", "rig-c")
    start = dt.date(2021, 1, 1)
    subjects, sessions, trials = [], [], []
    for s in range(n_subjects):
        subjects.append({"subject_id": s, "species": rng.choice(species),
                         "weight": rng.uniform(10, 500)})
        for j in range(sessions_per):
            sessions.append({"subject_id": s, "session_id": j,
                             "session_date": start + dt.timedelta(days=rng.randint(0, 1000)),
                             "rig": rng.choice(rigs)})
            for t in range(trials_per):
                trials.append({"subject_id": s, "session_id": j, "trial_id": t,
                               "response": rng.randint(-1000, 1000), "rt": rng.uniform(0.1, 2.0)})
    return subjects, sessions, trials


# --------------------------------------------------------------------------------------------
# the deep expression
# --------------------------------------------------------------------------------------------
def build_deep(table, depth: int, restrictions_only: bool = False):
    """``depth`` chained operators: dict restriction, string restriction, projection, repeat.

    With ``restrictions_only``, the projections are left out (a chain DataJoint can also run
    on PostgreSQL)."""
    query = table
    c_name = "c"
    for i in range(depth):
        step = i % 3 if not restrictions_only else i % 2
        if step == 0:
            query = query & {"grp": 7}
        elif step == 1:
            query = query & f"b > {i * 10}"
        elif (i // 3) % 2 == 0:
            query = query.proj(..., **{f"x{i}": "(b)"})  # duplicate b under a new name
        else:
            new_name = "c2" if c_name == "c" else "c"
            query = query.proj(..., **{new_name: c_name})  # rename c <-> c2
            c_name = new_name
    return query


def expected_deep_ids(depth: int) -> list[int]:
    bounds = [i * 10 for i in range(depth) if i % 3 == 1]
    need_grp = any(i % 3 == 0 for i in range(depth))
    low = max(bounds) if bounds else None
    return [r["id"] for r in item_rows()
            if (not need_grp or r["grp"] == 7) and (low is None or r["b"] > low)]


# --------------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------------
def median_us(fn, reps: int, warmup: int = 20, setup=None) -> float:
    """Median microseconds of ``fn()``, or of ``fn(setup())`` with ``setup`` outside the timing."""
    for _ in range(warmup):
        fn() if setup is None else fn(setup())
    samples = []
    clock = time.perf_counter_ns
    for _ in range(reps):
        if setup is None:
            t0 = clock()
            fn()
        else:
            arg = setup()
            t0 = clock()
            fn(arg)
        samples.append(clock() - t0)
    return statistics.median(samples) / 1000.0


def clear_joinflow_sql_cache() -> None:
    """Forget joinflow's compiled statements, so the next make_sql() compiles from scratch."""
    from joinflow import expression

    expression.clear_sql_cache()


def best_seconds(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


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


def normalize(value):
    """Make one value comparable across drivers and libraries."""
    if isinstance(value, dt.datetime):
        return value.date() if value.time() == dt.time() else value
    if isinstance(value, float):
        return round(value, 9)
    if hasattr(value, "item"):  # numpy scalar
        return normalize(value.item())
    return value


def join_signature(rows) -> tuple:
    """Row count plus the normalized first row in key order."""
    if not rows:
        return (0, None)
    first = min(rows, key=lambda r: tuple(r[k] for k in KEY_COLUMNS))
    return (len(rows), tuple(normalize(first[c]) for c in JOIN_COLUMNS))


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


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


# --------------------------------------------------------------------------------------------
# per-library setup
# --------------------------------------------------------------------------------------------
class LibSide:
    """One library's schema, tables and data."""

    def __init__(self, lib_name: str, backend: str, data):
        self.lib_name = lib_name
        self.lib, self.connection = connect_library(lib_name, backend)
        lib = self.lib
        self.schema = lib.Schema(SCHEMAS[lib_name], connection=self.connection)

        @self.schema
        class Item(lib.Manual):
            definition = ITEM_DEFINITION

        @self.schema
        class Subject(lib.Manual):
            definition = SUBJECT_DEFINITION

        @self.schema
        class Session(lib.Manual):
            definition = SESSION_DEFINITION

        @self.schema
        class Trial(lib.Manual):
            definition = TRIAL_DEFINITION

        self.Item, self.Subject, self.Session, self.Trial = Item, Subject, Session, Trial
        subjects, sessions, trials = data
        chunk = 10_000  # DataJoint sends one INSERT per call; keep it under max_allowed_packet
        Item.insert(item_rows())
        for table, rows in ((Subject, subjects), (Session, sessions), (Trial, trials)):
            for start in range(0, len(rows), chunk):
                table.insert(rows[start:start + chunk])

    def join_fetch(self):
        return (self.Subject * self.Session * self.Trial).to_dicts()

    def drop(self) -> None:
        self.schema.drop(prompt=False)

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


def raw_join_sql(backend: str, schema: str) -> str:
    q = lambda name: quote(backend, name)  # noqa: E731
    subject, session, trial = (f"{q(schema)}.{q(t)}" for t in ("subject", "session", "trial"))
    return (
        "SELECT t.subject_id, t.session_id, t.trial_id, s.species, s.weight, "
        "se.session_date, se.rig, t.response, t.rt "
        f"FROM {subject} AS s "
        f"JOIN {session} AS se ON se.subject_id = s.subject_id "
        f"JOIN {trial} AS t ON t.subject_id = se.subject_id AND t.session_id = se.session_id"
    )


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def run_backend(backend: str, args) -> None:
    n_trials = args.subjects * args.sessions_per * args.trials_per
    print(f"\n=== backend: {backend}  depth: {args.depth}  compile reps: {args.reps}  "
          f"join rows: {n_trials}  repeat: {args.repeat} (best of) ===", flush=True)
    data = join_rows(args.subjects, args.sessions_per, args.trials_per)
    admin = RawDriver(backend)
    for schema in SCHEMAS.values():
        admin.drop_schema(schema)
    sides: dict[str, LibSide] = {}
    raw = None
    try:
        for lib_name in ("joinflow", "datajoint"):
            t0 = time.perf_counter()
            sides[lib_name] = LibSide(lib_name, backend, data)
            print(f"  {lib_name}: connect + declare + load {time.perf_counter() - t0:.1f} s",
                  flush=True)
        raw = RawDriver(backend)

        # ---- (a) compile time ------------------------------------------------------------
        # build: the 30 operators; make_sql: on an expression built (untimed) just before;
        # cold: joinflow's statement cache cleared first (DataJoint has none);
        # len: build + len(), one COUNT round trip to the server.
        ops = ("build", "make_sql", "make_sql_cold", "build_sql", "build_len", "build_len_r")
        compile_us: dict[str, dict[str, float]] = {op: {} for op in ops}
        sql_len: dict[str, int] = {}
        few = max(1, args.reps // 4)
        for lib_name, side in sides.items():
            table = side.Item

            def build(table=table):
                return build_deep(table(), args.depth)

            def cold_sql(expr, lib_name=lib_name):
                if lib_name == "joinflow":
                    clear_joinflow_sql_cache()
                return expr.make_sql()

            sql_len[lib_name] = len(build().make_sql())
            times = {
                "build": median_us(build, args.reps),
                "make_sql": median_us(lambda expr: expr.make_sql(), args.reps, setup=build),
                "make_sql_cold": median_us(cold_sql, few, setup=build),
                "build_sql": median_us(lambda: build().make_sql(), args.reps),
                "build_len": None,
                "build_len_r": median_us(lambda: len(build_deep(table(), args.depth, True)), few),
            }
            try:
                times["build_len"] = median_us(lambda: len(build()), few)
            except Exception as exc:
                print(f"  {lib_name}: build + len() fails on {backend}: {type(exc).__name__}", flush=True)
            for op, value in times.items():
                compile_us[op][lib_name] = value
            print(f"  {lib_name}: " + ", ".join(f"{op} {fmt(v, 1)} us" for op, v in times.items()), flush=True)

        # Check that the deep query means the same thing in both libraries.
        expected = expected_deep_ids(args.depth)
        checks = []
        for lib_name, side in sides.items():
            try:
                got = sorted(r["id"] for r in build_deep(side.Item(), args.depth).to_dicts())
                status = "ok" if got == expected else "WRONG"
                checks.append(f"{lib_name}: {status} ({len(got)} rows)")
            except Exception as exc:
                message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
                checks.append(f"{lib_name}: its SQL fails on {backend}: {type(exc).__name__}: "
                              f"{(message.splitlines() or [''])[0][:100]}")

        # ---- (b) join + fetch ---------------------------------------------------------------
        join_s: dict[str, float] = {}
        signatures: dict[str, tuple] = {}
        sql = raw_join_sql(backend, SCHEMAS["joinflow"])
        runners = {"raw": lambda: raw.fetch_dicts(sql),
                   "joinflow": sides["joinflow"].join_fetch,
                   "datajoint": sides["datajoint"].join_fetch}
        # Interleaved (raw, joinflow, datajoint, raw, ...), so that a busy spell on the shared
        # machine hits every library alike; the best run of each is kept.
        for _ in range(args.repeat):
            for lib_name, fn in runners.items():
                seconds, rows = best_seconds(fn, 1)
                join_s[lib_name] = min(seconds, join_s.get(lib_name, seconds))
                signatures[lib_name] = join_signature(rows)
                del rows
        for lib_name, seconds in join_s.items():
            print(f"  {lib_name}: join fetch best {seconds:.3f} s", flush=True)
        distinct = {repr(s) for s in signatures.values()}
        if len(distinct) > 1 or any(s[0] != n_trials for s in signatures.values()):
            print("  WARNING: join results differ:")
            for lib_name, sig in signatures.items():
                print(f"    {lib_name}: {sig!r}")

        # ---- report ---------------------------------------------------------------------------
        labels = {"build": "build only",
                  "make_sql": "make_sql() (fresh expression)",
                  "make_sql_cold": "make_sql() (fresh, empty SQL cache)",
                  "build_sql": "build + make_sql()",
                  "build_len": "build + len() (executes)",
                  "build_len_r": f"build + len(), {args.depth} restrictions"}
        print()
        print_table(
            f"[{backend}] (a) a {args.depth}-deep expression (median of {args.reps}; "
            f"cold and len: median of {few})",
            ("operation", "joinflow us", "datajoint us", "datajoint/joinflow"),
            [(labels[op], fmt(compile_us[op]["joinflow"], 1), fmt(compile_us[op]["datajoint"], 1),
              ratio(compile_us[op]["datajoint"], compile_us[op]["joinflow"])) for op in ops],
        )
        print(f"  SQL length: joinflow {sql_len['joinflow']} chars, "
              f"datajoint {sql_len['datajoint']} chars")
        print(f"  result check: {'; '.join(checks)}")
        for op in ("make_sql", "build_sql"):
            jf, djv = compile_us[op]["joinflow"], compile_us[op]["datajoint"]
            print(f"  target joinflow >= 5x faster than datajoint ({labels[op]}): "
                  f"{verdict(djv >= 5 * jf)} ({djv / jf:.2f}x)")
        print()
        print_table(
            f"[{backend}] (b) (Subject * Session * Trial).to_dicts(), {n_trials} rows "
            f"(best of {args.repeat})",
            ("operation", "raw s", "joinflow s", "datajoint s", "joinflow/raw",
             "datajoint/joinflow"),
            [("join + to_dicts", fmt(join_s["raw"], 3), fmt(join_s["joinflow"], 3),
              fmt(join_s["datajoint"], 3), ratio(join_s["joinflow"], join_s["raw"]),
              ratio(join_s["datajoint"], join_s["joinflow"]))],
        )
        print(f"  target joinflow within 1.3x of raw: "
              f"{verdict(join_s['joinflow'] <= 1.3 * join_s['raw'])} "
              f"({join_s['joinflow'] / join_s['raw']:.2f}x)")

        if args.profile:
            jf_side = sides["joinflow"]
            def many_compiles():
                for _ in range(200):
                    build_deep(jf_side.Item(), args.depth).make_sql()

            profile_call("build + make_sql() x200", many_compiles)
            profile_call("join + to_dicts", jf_side.join_fetch)
    finally:
        if raw is not None:
            raw.close()
        for lib_name, side in sides.items():
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
    parser.add_argument("--backend", choices=("postgresql", "mysql", "both"), default="both")
    parser.add_argument("--reps", type=int, default=2000,
                        help="timed calls per library and operation (default 2000; "
                             "the cold make_sql() and the len() rows use N/4)")
    parser.add_argument("--depth", type=int, default=30, help="chained operators (default 30)")
    parser.add_argument("--subjects", type=int, default=1000, help="Subject rows (default 1000)")
    parser.add_argument("--sessions-per", type=int, default=10,
                        help="sessions per subject (default 10)")
    parser.add_argument("--trials-per", type=int, default=5, help="trials per session (default 5)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="join fetches per library; best is kept (default 5)")
    parser.add_argument("--smoke", action="store_true",
                        help="quick check: 100 reps, 50 subjects, repeat 1")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile joinflow's make_sql() and join fetch (top 15 by tottime)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.reps, args.subjects, args.repeat = 100, 50, 1
    counts = (args.reps, args.depth, args.subjects, args.sessions_per, args.trials_per, args.repeat)
    if min(counts) < 1:
        parser.error("all counts must be positive")

    warnings.simplefilter("ignore")  # DataJoint's "MariaDB not supported" / config-file warnings
    logging.getLogger("datajoint").setLevel(logging.ERROR)
    logging.getLogger("joinflow").setLevel(logging.ERROR)

    backends = ("postgresql", "mysql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        run_backend(backend, args)


if __name__ == "__main__":
    main()
