#!/usr/bin/env python
"""Soak: the hypothesis properties of tests/test_faults_input.py with many more examples.

Usage:  python benchmarks/soak_fuzz.py [--examples 2000] [--backend sqlite|postgresql|mysql|all]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--backend", default="all", choices=["sqlite", "postgresql", "mysql", "all"])
    args = parser.parse_args()
    env = dict(os.environ, JF_FUZZ_EXAMPLES=str(args.examples))
    command = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_faults_input.py"), "-q",
               "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    if args.backend != "all":
        command += ["-k", args.backend]
    raise SystemExit(subprocess.call(command, env=env, cwd=ROOT))


if __name__ == "__main__":
    main()
