"""Throughput of a joinflow DAG under a real Airflow 3 scheduler, against a direct populate().

Starts its own Airflow (api-server, scheduler, dag-processor; ``--executor LocalExecutor`` or
``CeleryExecutor`` with ``--celery-workers`` worker processes on the Redis broker ``--broker``) in
a temporary AIRFLOW_HOME, with a PostgreSQL metadata database created for the run, and a
joinflow pipeline in fresh schemas of the joinflow database (``--url``, default the test
PostgreSQL).  Scenarios (each a schema of its own, the DAG triggered once, timed from the DAG
run's start to its end in Airflow's metadata):

  The DAGs are built from manifests (``manifest=``), as recommended for production.

  trivial   ``--keys`` (5,000) keys whose make() inserts one row: the DAG in ``batches`` mode
            (batch 100) and in ``workers`` mode, against ``populate(reserve_jobs=True)`` in one
            process on the same database (target: workers <= 2x direct);
  sleepy    ``--sleepy-keys`` (100) keys whose make() sleeps 1 s, ``[core] parallelism`` 4,
            workers mode (target: <= 1.2x the ideal keys/4 s).

Every scenario checks that each key was computed exactly once (a row per key, no job-table
errors, make() counted through a side table).

    /work/main/.venv-airflow/bin/python integrations/airflow/benchmarks/bench_throughput.py \\
        [--scenarios trivial,sleepy] [--keys 5000] [--sleepy-keys 100] [--parallelism 4] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

PIPELINE = '''
import os, time
import joinflow as dj

schema = dj.Schema(os.environ["BENCH_SCHEMA_{tag}"])


@schema
class Source(dj.Manual):
    definition = """
    k : int32
    """


@schema
class Made(dj.Manual):          # one row per make() call: a key made twice would fail its insert
    definition = """
    k : int32
    """


@schema
class Result(dj.Computed):
    definition = """
    -> Source
    ---
    v : int32
    """

    def make(self, key):
        if {sleep}:
            time.sleep({sleep})
        Made.insert1(key)
        self.insert1(dict(key, v=key["k"] * 2))
'''

DAG = '''
import sys
sys.path.insert(0, {path!r})
from joinflow_airflow import JoinflowDag

dag = JoinflowDag(dag_id={dag_id!r}, manifest={manifest!r}, conn_id=None, schedule=None, {options})
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airflow:
    """A scheduler, dag-processor and api-server (and Celery workers) in a temporary home."""

    def __init__(self, home: Path, meta_url: str, executor: str, parallelism: int, env_extra: dict,
                 celery_workers: int = 0, broker: str | None = None):
        self.home, self.meta_url, self.procs = home, meta_url, []
        self.bin = str(Path(sys.executable).with_name("airflow"))
        port = free_port()
        self.env = dict(os.environ, **env_extra)
        self.env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(parallelism, 16)),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": meta_url,  # psycopg 3 is async too (no asyncpg)
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        })
        if executor == "CeleryExecutor":
            self.env["AIRFLOW__CELERY__BROKER_URL"] = broker
            self.env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + meta_url
            self.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = str(max(1, parallelism // max(1, celery_workers)))
        self.celery_workers = celery_workers
        self.port = port

    def cli(self, *args, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def start(self) -> None:
        self.cli("db", "migrate")
        logs = self.home / "logs"
        logs.mkdir(exist_ok=True)
        commands = [["api-server", "--port", str(self.port)], ["scheduler"], ["dag-processor"]]
        for i in range(self.celery_workers):
            commands.append(["celery", "worker", "--celery-hostname", f"bench{i}@%h", "--concurrency",
                             self.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"], "--skip-serve-logs",
                             "--pid", str(self.home / f"celery{i}.pid")])
        for cmd in commands:
            out = open(logs / f"{cmd[0]}{len(self.procs)}.log", "w")
            print("starting airflow", *cmd, flush=True)
            self.procs.append(subprocess.Popen([self.bin, *cmd], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"api-server did not listen on {self.port}; see {logs}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def wait_parsed(self, dag_id: str, timeout: float = 180) -> None:
        engine = sa.create_engine(self.meta_url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with engine.connect() as c:
                if c.execute(sa.text("select 1 from dag where dag_id = :d and not is_paused"), {"d": dag_id}).first():
                    return
                error = c.execute(sa.text("select stacktrace from import_error")).first()
                if error:
                    raise RuntimeError(f"a DAG file does not import: {error[0]}")
            time.sleep(0.5)
        raise RuntimeError(f"DAG {dag_id} was not parsed in {timeout} s; see {self.home / 'logs'}")

    def run(self, dag_id: str, timeout: float = 1200) -> dict:
        run_id = f"bench_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(self.meta_url)
        triggered = time.time()
        self.cli("dags", "trigger", dag_id, "--run-id", run_id)
        while time.time() < triggered + timeout:
            with engine.connect() as c:
                row = c.execute(sa.text("select state, start_date, end_date from dag_run where dag_id = :d and "
                                        "run_id = :r"), {"d": dag_id, "r": run_id}).first()
            if row and row.state in ("success", "failed"):
                ended = time.time()
                with engine.connect() as c:
                    tis = c.execute(sa.text("select task_id, queued_dttm, start_date, end_date from task_instance "
                                            "where dag_id = :d and run_id = :r"), {"d": dag_id, "r": run_id}).all()
                phases = {}  # per task: first queued / first start / last end, seconds after the run's start
                for ti in tis:
                    at = [(t - row.start_date).total_seconds() if t else None
                          for t in (ti.queued_dttm, ti.start_date, ti.end_date)]
                    p = phases.setdefault(ti.task_id, {"n": 0, "queued": at[0], "start": at[1], "end": at[2]})
                    p["n"] += 1
                    for i, k in enumerate(("queued", "start")):
                        if at[i] is not None and (p[k] is None or at[i] < p[k]):
                            p[k] = round(at[i], 2)
                    if at[2] is not None and (p["end"] is None or at[2] > p["end"]):
                        p["end"] = round(at[2], 2)
                return {"state": row.state, "run_seconds": (row.end_date - row.start_date).total_seconds(),
                        "wall_seconds": round(ended - triggered, 2), "task_instances": len(tis), "tasks": phases}
            time.sleep(0.2)
        raise RuntimeError(f"DAG run {dag_id}/{run_id} did not finish in {timeout} s")


def make_pipeline(folder: Path, tag: str, sleep: float) -> str:
    module = f"bench_tp_{tag}"
    (folder / f"{module}.py").write_text(PIPELINE.format(tag=tag, sleep=sleep))
    return module


def fill(url: str, folder: Path, module: str, keys: int) -> None:
    code = textwrap.dedent(f"""
        import sys, joinflow as dj
        dj.config["database.url"] = {url!r}
        sys.path.insert(0, {str(folder)!r})
        import {module} as m
        m.Source.insert([{{"k": i}} for i in range({keys})])
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


def direct_populate(url: str, folder: Path, module: str) -> float:
    code = textwrap.dedent(f"""
        import sys, time, joinflow as dj
        dj.config["database.url"] = {url!r}
        sys.path.insert(0, {str(folder)!r})
        import {module} as m
        m.Result()  # declared before timing
        t = time.perf_counter()
        m.Result.populate(reserve_jobs=True)
        print(time.perf_counter() - t)
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy(), capture_output=True,
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


def check_once(url: str, folder: Path, module: str, keys: int) -> dict:
    code = textwrap.dedent(f"""
        import json, sys, joinflow as dj
        dj.config["database.url"] = {url!r}
        sys.path.insert(0, {str(folder)!r})
        import {module} as m
        print(json.dumps({{"rows": len(m.Result()), "made": len(m.Made()), "errors": len(m.Result.jobs.errors)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy(), capture_output=True,
                         text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["every_key_once"] = result["rows"] == result["made"] == keys and result["errors"] == 0
    return result


def drop_schemas(url: str, names: list[str]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as c:
        for name in names:
            c.execute(sa.text(f'drop schema if exists "{name}" cascade'))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("JOINFLOW_TEST_PG_URL", PG_ADMIN), help="joinflow database")
    ap.add_argument("--meta-admin", default=PG_ADMIN, help="PostgreSQL where the metadata database is created")
    ap.add_argument("--scenarios", default="trivial,sleepy")
    ap.add_argument("--keys", type=int, default=5000)
    ap.add_argument("--sleepy-keys", type=int, default=100)
    ap.add_argument("--parallelism", type=int, default=4)
    ap.add_argument("--trivial-workers", type=int, default=None, help="workers per table (default: parallelism)")
    ap.add_argument("--executor", default="LocalExecutor", choices=("LocalExecutor", "CeleryExecutor"))
    ap.add_argument("--celery-workers", type=int, default=2)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--extra-path", default="", help="prepended to PYTHONPATH of the Airflow processes "
                    "(e.g. where apache-airflow-providers-celery and celery[redis] are installed)")
    ap.add_argument("--keep", action="store_true", help="keep AIRFLOW_HOME and its logs")
    args = ap.parse_args(argv)
    scenarios = args.scenarios.split(",")

    home = Path(tempfile.mkdtemp(prefix="jf-bench-airflow-"))
    (home / "dags").mkdir()
    code_dir = home / "code"
    code_dir.mkdir()
    meta_db = f"jf_bench_meta_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.meta_admin, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'create database "{meta_db}"'))
    meta_url = args.meta_admin.rsplit("/", 1)[0] + f"/{meta_db}"

    # the DAGs and their pipelines; DAG files go into the dags folder, pipelines into code/
    # this checkout's joinflow and joinflow_airflow first (over an editable install elsewhere)
    here = Path(__file__).resolve()
    path = os.pathsep.join(p for p in [str(code_dir), str(here.parents[1]), str(here.parents[3] / "core"),
                                       args.extra_path, os.environ.get("PYTHONPATH", "")] if p)
    os.environ["PYTHONPATH"] = path
    runs, env_extra, schemas = [], {"JOINFLOW_DATABASE_URL": args.url, "PYTHONPATH": path}, []
    workers = args.trivial_workers or args.parallelism

    def add(tag, sleep, keys, options, direct=False):
        schema = f"jfbench_{tag}_{uuid.uuid4().hex[:6]}"
        schemas.append(schema)
        env_extra[f"BENCH_SCHEMA_{tag}"] = schema
        os.environ[f"BENCH_SCHEMA_{tag}"] = schema
        module = make_pipeline(code_dir, tag, sleep)
        fill(args.url, code_dir, module, keys)
        if options is not None:
            dag_id = f"bench_{tag}"
            manifest = home / "dags" / f"{dag_id}.json"  # as in production: parsing imports no pipeline
            subprocess.run([sys.executable, "-m", "joinflow.pipeline", "manifest", module, "-o", str(manifest),
                            "--url", args.url, "--path", str(code_dir)], check=True, env=os.environ.copy())
            (home / "dags" / f"{dag_id}.py").write_text(DAG.format(path=str(code_dir), dag_id=dag_id,
                                                                   manifest=manifest.name, options=options))
            runs.append((tag, dag_id, module, keys))
        return module

    direct = {}
    if "trivial" in scenarios:
        module = add("direct", 0, args.keys, None)
        direct["seconds"] = direct_populate(args.url, code_dir, module)
        direct["check"] = check_once(args.url, code_dir, module, args.keys)
        add("batches", 0, args.keys, "batch_size=100")
        add("workers", 0, args.keys, f'mode="workers", workers={workers}')
    if "sleepy" in scenarios:
        add("sleepy", 1, args.sleepy_keys, 'mode="workers"')
    if "example" in scenarios:
        add("example", 0, args.keys, 'batch_size=100')

    airflow = Airflow(home, meta_url, args.executor, args.parallelism, env_extra, celery_workers=(
        args.celery_workers if args.executor == "CeleryExecutor" else 0), broker=args.broker)
    results = {"executor": args.executor, "parallelism": args.parallelism, "keys": args.keys,
               "load_average_before": os.getloadavg()[0], "direct_populate": direct}
    try:
        airflow.start()
        for tag, dag_id, module, keys in runs:
            airflow.wait_parsed(dag_id)
        for tag, dag_id, module, keys in runs:
            result = airflow.run(dag_id)
            result["check"] = check_once(args.url, code_dir, module, keys)
            results[tag] = result
            print(tag, json.dumps(result), flush=True)
    finally:
        airflow.stop()
        results["load_average_after"] = os.getloadavg()[0]
        drop_schemas(args.url, schemas)
        with admin.connect() as c:
            c.execute(sa.text(f'drop database if exists "{meta_db}" with (force)'))
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print("AIRFLOW_HOME kept:", home)
    if direct:
        for tag in ("batches", "workers"):
            if tag in results:
                results[tag]["x_direct"] = round(results[tag]["run_seconds"] / direct["seconds"], 2)
    if "sleepy" in results:
        ideal = args.sleepy_keys / args.parallelism
        results["sleepy"]["x_ideal"] = round(results["sleepy"]["run_seconds"] / ideal, 2)
    print(json.dumps(results, indent=2, default=str))
    ok = all(r.get("check", {}).get("every_key_once", True) and r.get("state", "success") == "success"
             for r in results.values() if isinstance(r, dict))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
