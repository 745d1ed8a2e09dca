"""The ``joinflow`` command line.

    joinflow populate MODULE[:Table] [--workers N] [--restrict SQL ...] [--max-calls N]
    joinflow status MODULE
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from .errors import DataJointError
from .pipeline import Pipeline


def _pipeline(target: str) -> tuple[Pipeline, str | None]:
    module_name, _, table = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"joinflow: cannot import {module_name!r}: {exc}. Is it on PYTHONPATH?") from None
    return Pipeline(module), (table or None)


def cmd_populate(args) -> int:
    pipeline, table = _pipeline(args.target)
    steps = [pipeline.step(table)] if table else pipeline.steps
    failed = 0
    for step in steps:
        result = step.table.populate(*args.restrict, reserve_jobs=True, suppress_errors=True,
                                     processes=args.workers, max_calls=args.max_calls,
                                     display_progress=args.progress)
        errors = result["error_list"]
        failed += len(errors)
        print(f"{step.cls.__name__}: {result['success_count']} computed, {len(errors)} errors, "
              f"{step.pending_count()} pending")
        for key, message in errors[:10]:
            print(f"  error {key}: {message}")
    return 1 if failed else 0


def cmd_status(args) -> int:
    pipeline, table = _pipeline(args.target)
    steps = [pipeline.step(table)] if table else pipeline.steps
    rows = [(s.cls.__name__, s.status()) for s in steps]
    if args.json:
        print(json.dumps({name: status for name, status in rows}, indent=2))
        return 0
    print(f"{'step':<24}{'done':>8}{'pending':>9}{'reserved':>10}{'error':>7}{'ignore':>8}")
    for name, st in rows:
        print(f"{name:<24}{st['done']:>8}{st['pending']:>9}{st['reserved']:>10}{st['error']:>7}{st['ignore']:>8}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="joinflow", description="Run and inspect joinflow pipelines.")
    sub = parser.add_subparsers(dest="command", required=True)
    pop = sub.add_parser("populate", help="compute pending keys until none is left")
    pop.add_argument("target", help="MODULE or MODULE:Table")
    pop.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    pop.add_argument("--restrict", action="append", default=[], help="SQL restriction on the key source")
    pop.add_argument("--max-calls", type=int, default=None)
    pop.add_argument("--progress", action="store_true", help="show a progress bar")
    pop.set_defaults(func=cmd_populate)
    st = sub.add_parser("status", help="done / pending / reserved / error counts per step")
    st.add_argument("target", help="MODULE or MODULE:Table")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DataJointError as exc:
        print(f"joinflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
