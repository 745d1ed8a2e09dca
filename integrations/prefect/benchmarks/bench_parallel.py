"""Parallel make() calls in a prefect-joinflow flow run: task threads and Dask worker processes.

Three cases, each on a fresh schema (PostgreSQL unless --backend sqlite), against an ephemeral
Prefect API (prefect_test_harness):

  threads   --keys 100 keys whose make() sleeps --sleep 1 s, ThreadPoolTaskRunner(max_workers=4),
            batches of --batch 5: ideal keys*sleep/4 = 25 s, target <= 1.2x
  dask      the same on a Dask LocalCluster of 2 processes x 2 threads (DaskTaskRunner): ideal 25 s
  trivial   --trivial 5000 keys whose make() inserts one row: the flow (default thread runner,
            batches of 100) against a direct Step.run() of all keys; target <= 1.5x

    /work/main/.venv-prefect/bin/python integrations/prefect/benchmarks/bench_parallel.py \\
        [--cases threads,dask,trivial] [--keys 100] [--sleep 1] [--trivial 5000] [--repeat 3]

Reported: wall seconds of the whole flow call (Dask: including the cluster's start), and of its
tasks alone (the first plan's start to the last batch's end, from the flow's summary).
On SQLite a make() holds the write lock for its transaction, so sleeping makes do not overlap
there (use make_fetch/make_compute for work outside the transaction).
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    import time
    import joinflow as dj
    config = dj.config.copy()
    config["safemode"] = False
    connection = dj.Connection(url={url!r}, config=config)
    schema = dj.Schema({schema!r}, connection=connection)
    SLEEP = {sleep!r}

    @schema
    class Source(dj.Manual):
        definition = """
        k : int32
        """

    @schema
    class Work(dj.Computed):
        definition = """
        -> Source
        ---
        v : int32
        """

        def make(self, key):
            if SLEEP:
                time.sleep(SLEEP)
            self.insert1(dict(key, v=key["k"]))
''')


def make_module(work: Path, url: str, n_keys: int, sleep: float):
    schema = f"bench_pp_{uuid.uuid4().hex[:8]}"
    name = f"bench_pp_{schema[-8:]}"
    (work / f"{name}.py").write_text(MODULE.format(url=url, schema=schema, sleep=sleep))
    module = importlib.import_module(name)
    module.Source.insert([{"k": i} for i in range(n_keys)])
    return module, name, schema


def drop(module, schema):
    try:
        module.schema.drop(prompt=False)
    except Exception as exc:  # pragma: no cover - cleanup must not hide the figures
        print(f"could not drop {schema}: {exc}")
    module.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="threads,dask,trivial")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--trivial", type=int, default=5000)
    parser.add_argument("--trivial-batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the trivial case (best of)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="postgresql")
    args = parser.parse_args()
    cases = args.cases.split(",")

    work = Path(tempfile.mkdtemp(prefix="jf-bench-pp-"))
    sys.path.insert(0, str(work))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")])  # Dask workers
    url = (f"sqlite:///{work / 'bench.db'}" if args.backend == "sqlite"
           else os.environ.get("JOINFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))

    from joinflow.pipeline import Pipeline
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect.testing.utilities import prefect_test_harness
    from prefect_joinflow import joinflow_flow

    lines = []
    with prefect_test_harness(server_startup_timeout=120):
        warm, _, warm_schema = make_module(work, url, 10, 0)  # first flow run pays one-time imports
        joinflow_flow(warm, batch_size=5)()
        drop(warm, warm_schema)
        ideal = args.keys * args.sleep / 4
        for case in ("threads", "dask"):
            if case not in cases:
                continue
            module, name, schema = make_module(work, url, args.keys, args.sleep)
            if case == "threads":
                runner = ThreadPoolTaskRunner(max_workers=4)
                label = "ThreadPoolTaskRunner(max_workers=4)"
            else:
                from prefect_dask import DaskTaskRunner

                runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "processes": True, "threads_per_worker": 2,
                                                        "dashboard_address": None})
                label = "Dask LocalCluster 2 processes x 2 threads"
            flow = joinflow_flow(name, batch_size=args.batch, task_runner=runner)
            start = time.perf_counter()
            out = flow()
            wall = time.perf_counter() - start
            tasks = sum(r["duration"] for r in out.values())
            assert sum(r["rows_added"] for r in out.values()) == args.keys, out
            assert len(module.Work()) == args.keys
            lines.append(f"  {args.keys} keys x {args.sleep:g} s sleep, batches of {args.batch}, {label}: "
                         f"{wall:6.2f} s = {wall / ideal:.2f}x the ideal {ideal:g} s (tasks {tasks:.2f} s = "
                         f"{tasks / ideal:.2f}x)")
            drop(module, schema)
        if "trivial" in cases:
            direct_runs, flow_runs, task_runs = [], [], []
            for _ in range(args.repeat):
                module, name, schema = make_module(work, url, args.trivial, 0)
                step = Pipeline(module).step("Work")
                start = time.perf_counter()
                assert step.run()["rows_added"] == args.trivial
                direct_runs.append(time.perf_counter() - start)
                drop(module, schema)
                module, name, schema = make_module(work, url, args.trivial, 0)
                flow = joinflow_flow(module, batch_size=args.trivial_batch)
                start = time.perf_counter()
                out = flow()
                flow_runs.append(time.perf_counter() - start)
                task_runs.append(sum(r["duration"] for r in out.values()))
                assert len(module.Work()) == args.trivial
                drop(module, schema)
            direct, flow_t, tasks = min(direct_runs), min(flow_runs), min(task_runs)
            lines.append(f"  {args.trivial} trivial keys, batches of {args.trivial_batch}, default thread runner: "
                         f"direct Step.run() {direct:.2f} s, flow {flow_t:.2f} s = {flow_t / direct:.2f}x "
                         f"(tasks {tasks:.2f} s = {tasks / direct:.2f}x); runs: direct "
                         f"{[round(t, 2) for t in direct_runs]}, flow {[round(t, 2) for t in flow_runs]}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"{args.backend}:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
