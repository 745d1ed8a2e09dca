"""Parse time of a generated 200-table joinflow pipeline DAG file, and its database round trips.

Airflow's DAG processor parses every DAG file again and again, each time in a fresh process
forked from a parent that has Airflow (not joinflow) imported.  This benchmark reproduces
that: for each variant, a fresh interpreter imports Airflow first (not timed), then times
``DagBag(dag_folder=<file>)`` (cold: includes importing joinflow_airflow and joinflow), then
parses the same file a second time (warm).  Every SQLAlchemy connect/statement against any
database other than Airflow's own metadata DB is counted during both parses.

Variants:
  module    JoinflowDag(pipeline="bench_pipe")   imports the pipeline (declares 200 tables
            on the joinflow database) and loads the foreign-key graph at parse time;
  manifest  JoinflowDag(manifest="bench_pipe.json") with JOINFLOW_DATABASE_URL pointing at an
            unreachable server (127.0.0.1:1): parsing must work with no round trip at all.

    /work/main/.venv-airflow/bin/python integrations/airflow/benchmarks/bench_parse.py [--tables 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"


def pipeline_code(n_tables: int, seed: int = 7) -> str:
    """A module with 10 % Manual source tables and the rest Computed, each with 1-3 parents."""
    rng = random.Random(seed)
    n_sources = max(1, n_tables // 10)
    out = ["import joinflow as dj", "", 'schema = dj.Schema("bench_parse")', ""]
    for i in range(n_tables):
        name = f"T{i:03d}"
        if i < n_sources:
            out += ["@schema", f"class {name}(dj.Manual):", f'    definition = """', f"    k{i} : int32",
                    '    """', ""]
            continue
        parents = sorted(rng.sample(range(i), k=min(i, rng.choice((1, 1, 2, 3)))))
        refs = "\n".join(f"    -> T{p:03d}" for p in parents)
        out += ["@schema", f"class {name}(dj.Computed):", '    definition = """', refs, "    ---",
                "    v : int32", '    """', "", "    def make(self, key):",
                "        self.insert1(dict(key, v=1))", ""]
    return "\n".join(out) + "\n"


DAG_MODULE = """
from datetime import datetime
from joinflow_airflow import JoinflowDag
dag = JoinflowDag(dag_id="bench_parse", pipeline="bench_pipe", conn_id=None, start_date=datetime(2026, 1, 1))
"""
DAG_MANIFEST = """
from datetime import datetime
from joinflow_airflow import JoinflowDag
dag = JoinflowDag(dag_id="bench_parse", manifest="bench_pipe.json", conn_id=None, start_date=datetime(2026, 1, 1))
"""

PROBE = textwrap.dedent("""
    import json, os, sys, time
    import sqlalchemy
    import airflow.sdk                      # the DAG processor has Airflow imported already
    from airflow.dag_processing.dagbag import DagBag
    home = os.environ["AIRFLOW_HOME"]
    touched = []
    def seen(conn, *args):
        url = str(conn.engine.url)
        if home not in url:
            touched.append(url)
    for name in ("engine_connect", "before_cursor_execute"):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, name, seen)
    times, counts = [], []
    for attempt in range(2):               # cold (joinflow not imported yet), then warm
        before = len(touched)
        t = time.perf_counter()
        bag = DagBag(dag_folder=sys.argv[1])
        times.append(time.perf_counter() - t)
        counts.append(len(touched) - before)
        assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("bench_parse")
    print(json.dumps({"cold": times[0], "warm": times[1], "round_trips_cold": counts[0],
                      "round_trips_warm": counts[1], "tasks": len(dag.task_dict),
                      "groups": len(dag.task_group.children)}))
""")


def run_probe(python: str, dag_file: Path, env: dict) -> dict:
    proc = subprocess.run([python, "-c", PROBE, str(dag_file)], env=env, cwd=dag_file.parent,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"probe failed for {dag_file.name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per variant (median reported)")
    args = parser.parse_args()
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="jf-bench-parse-"))
    home = work / "airflow_home"
    home.mkdir()
    (work / "bench_pipe.py").write_text(pipeline_code(args.tables))
    db_url = f"sqlite:///{work / 'joinflow.db'}"
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(work), PYTHONPATH=str(work), JOINFLOW_DATABASE_URL=db_url)
    env.pop("AIRFLOW_CONN_JOINFLOW_DEFAULT", None)
    airflow = Path(python).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True)
    # declare the tables and write the manifest (what a deployment step would do once)
    subprocess.run([python, "-m", "joinflow.pipeline", "manifest", "bench_pipe", "-o", str(work / "bench_pipe.json")],
                   env=env, cwd=work, check=True, capture_output=True)
    manifest = json.loads((work / "bench_pipe.json").read_text())
    (work / "dag_module.py").write_text(DAG_MODULE)
    (work / "dag_manifest.py").write_text(DAG_MANIFEST)

    variants = {
        "module (pipeline=, reachable DB)": (work / "dag_module.py", env),
        "manifest (manifest=, DB unreachable)": (work / "dag_manifest.py", dict(env, JOINFLOW_DATABASE_URL=UNREACHABLE)),
    }
    print(f"{len(manifest['tables'])} tables, {len(manifest['steps'])} computed steps "
          f"(Airflow {subprocess.run([python, '-c', 'import airflow; print(airflow.__version__)'], capture_output=True, text=True).stdout.strip()}); "
          f"median of {args.repeat} fresh processes\n")
    print(f"{'variant':<40}{'tasks':>7}{'cold s':>9}{'warm s':>9}{'DB round trips (cold/warm)':>29}")
    for label, (dag_file, variant_env) in variants.items():
        runs = [run_probe(python, dag_file, variant_env) for _ in range(args.repeat)]
        cold = statistics.median(r["cold"] for r in runs)
        warm = statistics.median(r["warm"] for r in runs)
        trips = f"{max(r['round_trips_cold'] for r in runs)}/{max(r['round_trips_warm'] for r in runs)}"
        print(f"{label:<40}{runs[0]['tasks']:>7}{cold:>9.3f}{warm:>9.3f}{trips:>29}")
    shutil.rmtree(work, ignore_errors=True)
    print("\ncold = first parse in a fresh process (imports joinflow_airflow; the module form also joinflow and the "
          "pipeline); warm = re-parse in the same process. Round trips: SQLAlchemy connects + statements "
          "on any database but Airflow's metadata DB.")


if __name__ == "__main__":
    main()
