#!/usr/bin/env python
"""Soak: many workers x many keys with random make durations and random failures.

Runs the scenario of tests/test_faults_concurrency.py (``run_load``) at full size and prints
the figures.  Every key must end exactly once as a row or as an error job, with no
duplicate make call, no lost key and no lease left behind (the script stops with an
AssertionError otherwise).

Usage:  python benchmarks/soak_populate.py [--backend postgresql] [--workers 8] [--keys 10000]
            [--fail-percent 7] [--max-sleep 0.003]
"""

from __future__ import annotations

import argparse

from soak_common import report, scratch_schema

from test_faults_concurrency import run_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="postgresql", choices=["sqlite", "postgresql", "mysql"])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--fail-percent", type=int, default=7)
    parser.add_argument("--max-sleep", type=float, default=0.003, help="make sleeps uniform(0, this) seconds")
    args = parser.parse_args()
    with scratch_schema(args.backend) as (schema, tmp_path):
        figures = run_load(schema, str(tmp_path / "calls.txt"), workers=args.workers, keys=args.keys,
                           fail_percent=args.fail_percent, max_sleep=args.max_sleep)
    report(f"soak_populate[{args.backend}] OK", figures)


if __name__ == "__main__":
    main()
