#!/usr/bin/env python
"""Iterating a large table: time and peak memory (RSS) of ``for row in table``.

Not part of the test suite.  One table ``big(big_id bigint, value double, label varchar(40))``
with ``--rows`` rows is filled once by the raw driver.  Each case then runs in a fresh Python
process, which reports its wall time and its peak resident memory (``ru_maxrss``) minus the
memory it had before the loop:

  raw        the driver's server-side cursor (psycopg named cursor / PyMySQL SSCursor), tuples
  joinflow   ``for row in Big()``            (dicts, streamed in batches)
  joinflow   ``for row in Big.to_dicts()``   (dicts, all fetched first)
  datajoint  ``for row in Big()``            (DataJoint 2.3.5)

Usage:  python benchmarks/bench_iter.py [--backend postgresql|mysql] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SCHEMA = "bench_iter"
URLS = {"postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "mysql": "mysql+pymysql://root@127.0.0.1:3306/"}

PRELUDE = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
backend, rows = sys.argv[1], int(sys.argv[2])
def rss_mb():  # this process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

CASES = {
    "raw driver, server-side cursor": """
if backend == "postgresql":
    import psycopg
    conn = psycopg.connect(host="127.0.0.1", user="postgres", dbname="test")
    cur = conn.cursor(name="bench")
    table = '"bench_iter"."big"'
else:
    import pymysql, pymysql.cursors
    conn = pymysql.connect(host="127.0.0.1", user="root", password="")
    cur = conn.cursor(pymysql.cursors.SSCursor)
    table = "`bench_iter`.`big`"
before = rss_mb(); t = time.perf_counter(); n = 0
cur.execute(f"SELECT big_id, value, label FROM {table}")
while True:
    batch = cur.fetchmany(5000)
    if not batch:
        break
    n += len(batch)
""",
    "joinflow: for row in Big()": """
import joinflow as dj
conn = dj.Connection(url=sys.argv[3])
Big = dj.virtual_schema("bench_iter", connection=conn).Big
before = rss_mb(); t = time.perf_counter(); n = 0
for row in Big():
    n += 1
""",
    "joinflow: for row in Big.to_dicts()": """
import joinflow as dj
conn = dj.Connection(url=sys.argv[3])
Big = dj.virtual_schema("bench_iter", connection=conn).Big
before = rss_mb(); t = time.perf_counter(); n = 0
for row in Big.to_dicts():
    n += 1
""",
    "datajoint: for row in Big()": """
import datajoint as dj
dj.config["database.backend"] = backend
dj.config["database.host"] = "127.0.0.1"
dj.config["database.port"] = 5432 if backend == "postgresql" else 3306
dj.config["database.user"] = "postgres" if backend == "postgresql" else "root"
dj.config["database.password"] = ""
dj.config["database.name"] = "test" if backend == "postgresql" else None
dj.config["database.use_tls"] = False
Big = dj.VirtualModule("bench", "bench_iter").Big
before = rss_mb(); t = time.perf_counter(); n = 0
for row in Big():
    n += 1
""",
}

EPILOGUE = """
elapsed = time.perf_counter() - t
assert n == rows, (n, rows)
print(json.dumps({"seconds": elapsed, "peak_mb": rss_mb(), "added_mb": rss_mb() - before}))
"""


def fill(backend: str, rows: int) -> None:
    import joinflow as dj

    conn = dj.Connection(url=URLS[backend])
    schema = dj.Schema(SCHEMA, connection=conn)
    schema.drop(prompt=False)
    schema = dj.Schema(SCHEMA, connection=conn)

    @schema
    class Big(dj.Manual):
        definition = """
        big_id : int64
        ---
        value : float64
        label : varchar(40)
        """

    chunk = 50_000
    for start in range(0, rows, chunk):
        Big.insert([(i, i / 3, f"label number {i}") for i in range(start, min(rows, start + chunk))])
    conn.close()


def drop(backend: str) -> None:
    import joinflow as dj

    with dj.Connection(url=URLS[backend]) as conn:
        dj.Schema(SCHEMA, connection=conn).drop(prompt=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(URLS), default="postgresql")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(f"filling {args.rows} rows on {args.backend} ...", flush=True)
    fill(args.backend, args.rows)
    try:
        print(f"\n[{args.backend}] iterate {args.rows} rows (fresh process per case)")
        print(f"{'case':<38}| {'s':>7} | {'peak RSS MB':>11} | {'added by the loop':>17}")
        print("-" * 38 + "+---------+-------------+------------------")
        for name, body in CASES.items():
            code = PRELUDE + body + EPILOGUE
            done = subprocess.run([sys.executable, "-c", code, args.backend, str(args.rows), URLS[args.backend]],
                                  capture_output=True, text=True)
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{name:<38}| failed: {last[:80]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name:<38}| {result['seconds']:7.2f} | {result['peak_mb']:11.1f} | {result['added_mb']:17.1f}",
                  flush=True)
    finally:
        drop(args.backend)


if __name__ == "__main__":
    main()
