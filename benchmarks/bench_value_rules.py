#!/usr/bin/env python
"""What the value rules (joinflow.validation.value_rule) cost an insert, on SQLite.

Not part of the test suite.  Table: id int32 | x float64 | small int16 | name varchar(20) |
kind enum('a','b') | at datetime; ``--rows`` rows (default 200,000).

1. per value: each column's encoder as the insert path used it before the rules
   (``backend.encoder``) and now (``validation.insert_encoder``), interleaved in one process,
   the minimum CPU time over ``--repeat`` runs (the development machine is shared);
2. end to end: ``T.insert(rows)`` of all rows, the best wall time of ``--repeat`` runs.

Usage:  python benchmarks/bench_value_rules.py [--rows N] [--repeat K]
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import tempfile
import time

import joinflow as dj
from joinflow.validation import insert_encoder

DEFINITION = """
id : int32
---
x : float64
small : int16
name : varchar(20)
kind : enum('a','b')
at : datetime
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    n = args.rows
    start = datetime.datetime(2024, 1, 1)
    rows = [{"id": i, "x": i * 0.5, "small": i % 30000, "name": f"n{i}", "kind": "ab"[i % 2],
             "at": start + datetime.timedelta(seconds=i)} for i in range(n)]
    folder = pathlib.Path(tempfile.mkdtemp())
    cfg = dj.config.copy()
    cfg["safemode"] = False
    conn = dj.Connection(url=f"sqlite:///{folder / 'bench.db'}", config=cfg)
    schema = dj.Schema("bench_values", connection=conn)
    table = type("Bench", (dj.Manual,), {"definition": DEFINITION})
    schema(table)

    total = {"before": 0.0, "after": 0.0}
    for name in rows[0]:
        attr = table.heading[name]
        encoders = {"before": conn.backend.encoder(attr), "after": insert_encoder(conn.backend, attr)}
        column = [row[name] for row in rows]
        best = {"before": float("inf"), "after": float("inf")}
        for _ in range(args.repeat):
            for which, encode in encoders.items():
                t0 = time.process_time()
                for value in column:
                    encode(value)
                best[which] = min(best[which], time.process_time() - t0)
        for which in total:
            total[which] += best[which]
        print(f"{name:6} {attr.type:14} before {best['before'] / n * 1e9:5.0f} ns/value   "
              f"after {best['after'] / n * 1e9:5.0f} ns/value")
    print(f"encoding {n} rows x {len(rows[0])} columns: before {total['before'] * 1e3:.0f} ms, "
          f"after {total['after'] * 1e3:.0f} ms")

    best_insert = float("inf")
    for _ in range(max(1, args.repeat // 5)):
        table.delete_quick()
        t0 = time.perf_counter()
        table.insert([dict(row) for row in rows])
        best_insert = min(best_insert, time.perf_counter() - t0)
    assert len(table()) == n
    print(f"insert of {n} rows (with the rules): {best_insert:.2f} s")
    conn.close()


if __name__ == "__main__":
    main()
