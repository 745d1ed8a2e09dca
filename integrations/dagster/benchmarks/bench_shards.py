"""Benchmark: parallel work inside one table (shards) and the cost of Dagster around populate.

    python integrations/dagster/benchmarks/bench_shards.py                 # both parts, SQLite in a temp dir
    python integrations/dagster/benchmarks/bench_shards.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test

Part 1 (``--keys 100 --sleep 1 --shards 4``): a computed table whose make() sleeps 1 s per key,
materialized by the multiprocess executor (forkserver, ``max_concurrent`` = shards) with
``DagsterJoinflowTranslator(shards={"Slow": 4})``.  Ideal: keys * sleep / shards = 25 s.
Part 2 (``--trivial 5000``): 5,000 trivial keys, one unsharded in-process materialization
vs a direct ``Step.run()`` (populate through the job table) on a fresh schema of the same shape.

Not a test: prints the figures (quoted in integrations/dagster/README.md).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

MODULE = '''
import time
import joinflow as dj

connection = dj.Connection(url={url!r})
connection.config["safemode"] = False
schema = dj.Schema({schema!r}, connection=connection)
SLEEP = {sleep!r}


@schema
class Item(dj.Manual):
    definition = """
    item : int32
    """


@schema
class Slow(dj.Computed):
    definition = """
    -> Item
    ---
    value : int64
    pid : int32
    """

    def make(self, key):
        if SLEEP:
            time.sleep(SLEEP)
        import os
        self.insert1(dict(key, value=key["item"] * 2, pid=os.getpid()))
'''

DEFS = '''
import sys
sys.path.insert(0, {moddir!r})
import dagster as dg
from dagster_joinflow import DagsterJoinflowTranslator, JoinflowResource, build_joinflow_assets

module = __import__({module!r})
assets = build_joinflow_assets(module, DagsterJoinflowTranslator(shards={{"Slow": {shards}}}))
job = dg.Definitions(
    assets=assets,
    jobs=[dg.define_asset_job("slow", selection=[dg.AssetKey([{schema!r}, "Slow"])])],
    resources={{"joinflow": JoinflowResource(database_url={url!r})}},
    executor=dg.multiprocess_executor.configured(
        {{"max_concurrent": {shards}, "start_method": {{"forkserver": {{"preload_modules": ["dagster_joinflow"]}}}}}}),
).resolve_job_def("slow")
'''


def write_module(workdir: Path, url: str, schema: str, sleep: float):
    name = f"bench_{schema}"
    (workdir / f"{name}.py").write_text(MODULE.format(url=url, schema=schema, sleep=sleep))
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    module = __import__(name)
    return name, module


def part_sharded(workdir: Path, url: str, keys: int, sleep: float, shards: int) -> None:
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableJob
    from joinflow import testing

    schema = testing.unique_schema_name("jfbench")
    try:
        name, module = write_module(workdir, url, schema, sleep)
        module.Item.insert([{"item": i} for i in range(keys)])
        defs = workdir / f"defs_{schema}.py"
        defs.write_text(DEFS.format(moddir=str(workdir), module=name, schema=schema, url=url, shards=shards))
        ideal = keys * sleep / shards
        with dg.instance_for_test() as instance:
            start, launched = time.perf_counter(), time.time()
            with dg.execute_job(ReconstructableJob.for_file(str(defs), "job"), instance=instance) as result:
                ok = result.success
                shard_md = [e.materialization.metadata["shards"].value for e in result.get_asset_materialization_events()]
                logs = [r for r in instance.all_logs(result.run_id) if r.dagster_event is not None]
                steps = {r.step_key: r.timestamp for r in logs if r.dagster_event.event_type_value == "STEP_START"}
                ends = {r.step_key: r.timestamp for r in logs if r.dagster_event.event_type_value == "STEP_SUCCESS"}
                run_start = min(r.timestamp for r in logs)
            wall = time.perf_counter() - start
        print(f"  run events start {run_start - launched:.1f} s after execute_job was called")
        for step_key in sorted(steps, key=steps.get):
            t0 = run_start
            print(f"  {step_key.rpartition('__')[2]:>16}: start +{steps[step_key] - t0:5.1f} s, "
                  f"end +{ends.get(step_key, float('nan')) - t0:5.1f} s")
        for shard in (shard_md[0] if shard_md else []):
            print(f"  shard {shard['shard']}: {shard['rows_added']} keys ({shard['of_other_shards']} of other shards) "
                  f"in {shard['duration_s']} s, pid {shard['pid']}")
        rows = len(module.Slow())
        pids = len({row["pid"] for row in module.Slow().to_dicts()})
        print(f"sharded: {keys} keys x {sleep} s, shards={shards}: {wall:.1f} s wall (ideal {ideal:.1f} s, "
              f"{wall / ideal:.2f}x), success={ok}, rows={rows}, make processes={pids}")
        module.connection.close()
    finally:
        testing.drop_schemas(url, [schema])


def part_trivial(workdir: Path, url: str, keys: int) -> None:
    import dagster as dg
    from joinflow import testing
    from joinflow.pipeline import Pipeline

    from dagster_joinflow import JoinflowResource, build_joinflow_assets

    direct_schema, dagster_schema = testing.unique_schema_name("jfbench"), testing.unique_schema_name("jfbench")
    try:
        _, direct = write_module(workdir, url, direct_schema, 0)
        direct.Item.insert([{"item": i} for i in range(keys)])
        step = Pipeline(direct).step("Slow")
        start = time.perf_counter()
        summary = step.run()
        t_direct = time.perf_counter() - start
        assert summary["rows_added"] == keys, summary

        _, viadg = write_module(workdir, url, dagster_schema, 0)
        viadg.Item.insert([{"item": i} for i in range(keys)])
        assets = build_joinflow_assets(viadg)
        with dg.instance_for_test() as instance:
            start = time.perf_counter()
            result = dg.materialize(assets, instance=instance, resources={"joinflow": JoinflowResource(database_url=url)})
            t_dagster = time.perf_counter() - start
        assert result.success and len(viadg.Slow()) == keys
        print(f"trivial: {keys} keys: direct Step.run {t_direct:.2f} s, in-process materialize {t_dagster:.2f} s "
              f"({t_dagster / t_direct:.2f}x)")
        direct.connection.close()
        viadg.connection.close()
    finally:
        testing.drop_schemas(url, [direct_schema, dagster_schema])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--trivial", type=int, default=5000, help="keys of part 2 (0: skip)")
    parser.add_argument("--skip-sharded", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = args.url or f"sqlite:///{workdir / 'bench.db'}"
        os.environ.setdefault("DAGSTER_HOME", tmp)
        if not args.skip_sharded:
            part_sharded(workdir, url, args.keys, args.sleep, args.shards)
        if args.trivial:
            part_trivial(workdir, url, args.trivial)
    return 0


if __name__ == "__main__":
    sys.exit(main())
