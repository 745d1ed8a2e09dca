"""Overhead of a prefect-joinflow flow run against calling populate directly.

A pipeline with one Manual source of N keys and one trivial Computed table (make inserts one
row) is populated three ways, each on a fresh schema, in the same process and database:

  direct     Step.run() of all keys through the job table (what `joinflow populate` does)
  populate   Table.populate(reserve_jobs=True) (the plain core call, for reference)
  flow       joinflow_flow(module, batch_size=B)(): plan task + N/B mapped populate tasks

Prefect runs against an ephemeral local API (prefect_test_harness, started before timing).
Reported: wall seconds (best of --repeat), flow/direct ratio, and the overhead per batch and
per key; --profile prints the flow run's cProfile (top functions by cumulative time).

    /work/main/.venv-prefect/bin/python integrations/prefect/benchmarks/bench_overhead.py \\
        [--keys 5000] [--batch 100] [--backend sqlite|postgresql] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import os
import pstats
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

MODULE = textwrap.dedent('''
    import joinflow as dj
    config = dj.config.copy()
    config["safemode"] = False
    connection = dj.Connection(url={url!r}, config=config)
    schema = dj.Schema({schema!r}, connection=connection)

    @schema
    class Source(dj.Manual):
        definition = """
        k : int32
        """

    @schema
    class Trivial(dj.Computed):
        definition = """
        -> Source
        ---
        v : int32
        """

        def make(self, key):
            self.insert1(dict(key, v=key["k"]))
''')


def make_module(work: Path, url: str, n_keys: int):
    schema = f"bench_pf_{uuid.uuid4().hex[:8]}"
    name = f"bench_pf_{schema[-8:]}"
    (work / f"{name}.py").write_text(MODULE.format(url=url, schema=schema))
    module = importlib.import_module(name)
    module.Source.insert([{"k": i} for i in range(n_keys)])
    return module, schema


def drop(module, schema):
    try:
        module.schema.drop(prompt=False)
    except Exception as exc:  # pragma: no cover - cleanup must not hide the figures
        print(f"could not drop {schema}: {exc}")
    module.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jf-bench-prefect-"))
    sys.path.insert(0, str(work))
    url = (f"sqlite:///{work / 'bench.db'}" if args.backend == "sqlite"
           else os.environ.get("JOINFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))

    from joinflow.pipeline import Pipeline
    from prefect.testing.utilities import prefect_test_harness
    from prefect_joinflow import joinflow_flow

    results: dict[str, list[float]] = {"direct": [], "populate": [], "flow": []}
    profile_text = ""
    with prefect_test_harness(server_startup_timeout=120):
        warm, warm_schema = make_module(work, url, 10)  # first flow run pays one-time imports
        joinflow_flow(warm, batch_size=args.batch)()
        drop(warm, warm_schema)
        for attempt in range(args.repeat):
            for mode in ("direct", "populate", "flow"):
                module, schema = make_module(work, url, args.keys)
                step = Pipeline(module).step("Trivial")
                profiler = cProfile.Profile() if (args.profile and mode == "flow" and attempt == 0) else None
                start = time.perf_counter()
                if mode == "direct":
                    summary = step.run()
                    assert summary["rows_added"] == args.keys, summary
                elif mode == "populate":
                    module.Trivial.populate(reserve_jobs=True)
                else:
                    flow = joinflow_flow(module, batch_size=args.batch)
                    if profiler:
                        profiler.enable()
                    out = flow()
                    if profiler:
                        profiler.disable()
                    assert sum(r["rows_added"] for r in out.values()) == args.keys, out
                results[mode].append(time.perf_counter() - start)
                assert len(module.Trivial()) == args.keys
                if profiler:
                    buf = io.StringIO()
                    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(45)
                    profile_text = buf.getvalue()
                drop(module, schema)

    batches = -(-args.keys // args.batch)
    direct, populate, flow = (min(results[m]) for m in ("direct", "populate", "flow"))
    print(f"{args.keys} trivial keys, batches of {args.batch} ({batches} tasks), {args.backend}, best of {args.repeat}")
    print(f"  Table.populate(reserve_jobs=True) {populate:8.3f} s")
    print(f"  Step.run() (direct)               {direct:8.3f} s")
    print(f"  joinflow_flow                     {flow:8.3f} s   flow/direct = {flow / direct:.2f}x")
    print(f"  overhead: {(flow - direct) * 1000 / batches:.1f} ms per batch, "
          f"{(flow - direct) * 1e6 / args.keys:.0f} us per key")
    print("  all runs (s): " + ", ".join(f"{m}={[round(t, 2) for t in v]}" for m, v in results.items()))
    if profile_text:
        print(profile_text)


if __name__ == "__main__":
    main()
