"""Overhead of a prefect-joinflow flow run against calling populate directly.

A pipeline with one Manual source of N keys and one trivial Computed table (make inserts one
row) is populated three ways, each on a fresh schema, in the same process and database:

  direct     Step.run() of all keys through the job table (what `joinflow populate` does)
  populate   Table.populate(reserve_jobs=True) (the plain core call, for reference)
  batched    Step.run(batch) for each batch of B pending keys in a loop: the same core calls as
             the flow's tasks, without Prefect
  flow       joinflow_flow(module, batch_size=B)(): plan task + N/B mapped populate tasks

Prefect runs against an ephemeral local API (prefect_test_harness, started before timing).
Reported: wall seconds (best of --repeat), flow/direct ratio, the overhead per batch and per
key, the part between the table's plan task start and its last batch's end (the tasks), and
an empty Prefect flow (Prefect's own fixed cost: with heartbeats on, the default, a flow run
ends on a whole second after its start).  --profile prints the flow run's cProfile (main
thread only: the tasks run in worker threads).

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
import shutil
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

    from prefect import flow as prefect_flow

    @prefect_flow(name="empty")
    def empty_flow() -> int:  # Prefect's own fixed cost of a flow run (start, heartbeat, end)
        return 0

    results: dict[str, list[float]] = {"direct": [], "populate": [], "batched": [], "flow": [], "empty": [],
                                       "inflow": []}
    profile_text = ""
    with prefect_test_harness(server_startup_timeout=120):
        warm, warm_schema = make_module(work, url, 10)  # first flow run pays one-time imports
        joinflow_flow(warm, batch_size=args.batch)()
        drop(warm, warm_schema)
        for attempt in range(args.repeat):
            start = time.perf_counter()
            empty_flow()
            results["empty"].append(time.perf_counter() - start)
            for mode in ("direct", "populate", "batched", "flow"):
                module, schema = make_module(work, url, args.keys)
                step = Pipeline(module).step("Trivial")
                profiler = cProfile.Profile() if (args.profile and mode == "flow" and attempt == 0) else None
                start = time.perf_counter()
                if mode == "direct":
                    summary = step.run()
                    assert summary["rows_added"] == args.keys, summary
                elif mode == "populate":
                    module.Trivial.populate(reserve_jobs=True)
                elif mode == "batched":  # what every task does, one after the other, without Prefect
                    for batch in step.pending_keys(args.batch):
                        step.run(batch, count_pending=False)
                else:
                    flow = joinflow_flow(module, batch_size=args.batch)
                    if profiler:
                        profiler.enable()
                    out = flow()
                    if profiler:
                        profiler.disable()
                    assert sum(r["rows_added"] for r in out.values()) == args.keys, out
                    results["inflow"].append(sum(r["duration"] for r in out.values()))  # plan start -> last batch
                results[mode].append(time.perf_counter() - start)
                assert len(module.Trivial()) == args.keys
                if profiler:
                    buf = io.StringIO()
                    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(45)
                    profile_text = buf.getvalue()
                drop(module, schema)

    shutil.rmtree(work, ignore_errors=True)
    batches = -(-args.keys // args.batch)
    direct, populate, batched, flow, empty, inflow = (
        min(results[m]) for m in ("direct", "populate", "batched", "flow", "empty", "inflow"))
    print(f"{args.keys} trivial keys, batches of {args.batch} ({batches} tasks), {args.backend}, best of {args.repeat}")
    print(f"  Table.populate(reserve_jobs=True) {populate:8.3f} s")
    print(f"  Step.run() (direct)               {direct:8.3f} s")
    print(f"  Step.run(batch) x {batches:<4} in a loop {batched:8.3f} s   batched/direct = {batched / direct:.2f}x "
          f"(the core's cost of one populate() per batch: {(batched - direct) * 1000 / batches:.1f} ms per batch)")
    print(f"  joinflow_flow                     {flow:8.3f} s   flow/direct = {flow / direct:.2f}x, "
          f"flow/batched = {flow / batched:.2f}x")
    print(f"  ... of which plan -> last batch   {inflow:8.3f} s   tasks/direct = {inflow / direct:.2f}x, "
          f"{(inflow - direct) * 1000 / batches:.1f} ms per batch")
    print(f"  empty Prefect flow                {empty:8.3f} s   (Prefect's fixed cost per flow run: the flow-run "
          "heartbeat thread is joined in 1 s steps)")
    print(f"  overhead: {flow - direct:.2f} s = {(flow - direct) * 1000 / batches:.1f} ms per batch, "
          f"{(flow - direct) * 1e6 / args.keys:.0f} us per key; beyond the empty flow: "
          f"{(flow - direct - empty) * 1000 / batches:.1f} ms per batch")
    print("  all runs (s): " + ", ".join(f"{m}={[round(t, 2) for t in v]}" for m, v in results.items()))
    if profile_text:
        print(profile_text)


if __name__ == "__main__":
    main()
