#!/usr/bin/env python
"""Soak: SIGKILL populate workers at random points, many times, then check nothing was lost.

Runs the scenario of tests/test_faults_crash.py (``run_crashes``) with ``--kills`` kills
spread over the kill points (before reserve, during make, between master and part inserts,
during an object upload, before and after COMMIT, and at random moments from outside).

Usage:  python benchmarks/soak_crash.py [--backend postgresql] [--kills 50] [--keys 400] [--seed 1]
"""

from __future__ import annotations

import argparse
import random

from soak_common import report, scratch_schema

from test_faults_crash import run_crashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="postgresql", choices=["sqlite", "postgresql", "mysql"])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with scratch_schema(args.backend) as (schema, tmp_path):
        figures = run_crashes(schema, tmp_path, kills=args.kills, keys=args.keys, rng=random.Random(args.seed))
    report(f"soak_crash[{args.backend}] OK", figures)


if __name__ == "__main__":
    main()
