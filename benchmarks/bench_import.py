#!/usr/bin/env python
"""Import time: ``import joinflow`` against ``import datajoint`` and the floor joinflow builds on.

Not part of the test suite.  Each import runs in a fresh interpreter (``python -c``), so
nothing is cached in memory; the time is measured inside that interpreter around the import
statement alone, and the median of ``--repeat`` runs is shown, the runs interleaved.  Bytecode
caches are written (one warm-up run first), as an installed package has them.

  floor      ``import sqlalchemy, numpy`` (what joinflow cannot do without)
  joinflow   ``import joinflow``
  datajoint  ``import datajoint`` (2.3.5, from PyPI)

Usage:  python benchmarks/bench_import.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CASES = {
    "floor (sqlalchemy, numpy)": "import sqlalchemy, numpy",
    "joinflow": "import joinflow",
    "datajoint": "import datajoint",
}

TIMER = ("import time, warnings\nwarnings.simplefilter('ignore')\nt = time.perf_counter()\n{stmt}\n"
         "print(time.perf_counter() - t)\n")


# bytecode is cached as after `pip install` (which compiles it): a PYTHONDONTWRITEBYTECODE in the
# environment would make the editable joinflow compile its sources on every import, and not DataJoint
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(stmt: str) -> float | None:
    done = subprocess.run([sys.executable, "-c", TIMER.format(stmt=stmt)], capture_output=True, text=True, env=ENV)
    if done.returncode:
        return None
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="fresh interpreters per case (default 15)")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for stmt in CASES.values():  # warm-up: writes the bytecode caches
        once(stmt)
    for _ in range(args.repeat):
        for name, stmt in CASES.items():
            value = once(stmt)
            if value is not None:
                times[name].append(value)
    jf = statistics.median(times["joinflow"]) if times["joinflow"] else None
    print(f"import time, median of {args.repeat} fresh interpreters")
    print(f"{'case':<28}| {'ms':>7} | vs joinflow")
    print("-" * 28 + "+---------+------------")
    for name, values in times.items():
        if not values:
            print(f"{name:<28}| {'failed':>7} |")
            continue
        median = statistics.median(values)
        print(f"{name:<28}| {median * 1000:7.1f} | {median / jf:9.2f}x" if jf else f"{name:<28}| {median * 1000:7.1f} |")
    if jf is not None:
        print(f"\n  target import joinflow < 300 ms: {'MET' if jf < 0.3 else 'MISSED'} ({jf * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
