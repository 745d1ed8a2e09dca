"""Fixtures of the joinflow-airflow tests.

Every backend test runs on SQLite and PostgreSQL (``JOINFLOW_TEST_PG_URL``).  A server that
does not answer is skipped locally and fails the test under CI=true.  Airflow runs offline:
``dag.test()`` in-process against a SQLite metadata DB in a temporary AIRFLOW_HOME, migrated
once per session; each test writes its DAG file into that home's dags folder.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

# Airflow reads its configuration when first imported: set it up before anything imports it.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="jf-airflow-home-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("JOINFLOW_DATABASE_URL", None)

import joinflow as dj  # noqa: E402

PG_URL = os.environ.get("JOINFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def airflow_db():
    """Migrate the temporary metadata DB once (``airflow db migrate``, ~3 s)."""
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    subprocess.run(cmd + ["db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    yield AIRFLOW_HOME


def _server_problem(url: str) -> str | None:
    parsed = urlparse(url.replace("+psycopg", ""))
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5432
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as exc:
        return f"no database server at {host}:{port} ({exc})"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'joinflow.db'}"
    problem = _server_problem(PG_URL)
    if problem:
        message = f"postgresql tests need a server: {problem}. Set JOINFLOW_TEST_PG_URL."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return PG_URL


@pytest.fixture
def schema_name(db_url):
    """A unique schema name for this test, dropped afterwards."""
    name = f"jfa_{uuid.uuid4().hex[:10]}"
    yield name
    cfg = dj.config.copy()
    cfg["safemode"] = False
    conn = dj.Connection(url=db_url, config=cfg)
    try:
        if conn.backend.schema_exists(conn, name):
            conn.backend.drop_schema(conn, name)
    except Exception as exc:  # pragma: no cover - cleanup must not hide the test's result
        print(f"could not drop schema {name}: {exc}")
    finally:
        conn.close()


PIPELINE = '''
import os
import time
import joinflow as dj

connection = dj.Connection(url={url!r})
connection.config["safemode"] = False
schema = dj.Schema({schema!r}, connection=connection)
CALLS = {calls!r}
FLAGS = {flags!r}


def record(table, key):
    with open(CALLS, "a") as f:
        f.write(f"{{table}} {{key['animal']}} {{key['rec']}} {{os.getpid()}}\\n")


@schema
class Animal(dj.Manual):
    definition = """
    animal : int32
    """


@schema
class Recording(dj.Manual):
    definition = """
    -> Animal
    rec : int16
    ---
    signal : float64
    """


@schema
class Spikes(dj.Computed):
    definition = """
    -> Recording
    ---
    count : int32
    """

    class Unit(dj.Part):
        definition = """
        -> master
        unit : int16
        """

    def make(self, key):
        if key["animal"] == 13:
            raise RuntimeError("unlucky animal")
        flag = os.path.join(FLAGS, f"fail-once-{{key['animal']}}-{{key['rec']}}")
        if os.path.exists(flag):
            os.remove(flag)
            raise RuntimeError("transient failure")
        time.sleep(float(os.environ.get("JF_TEST_MAKE_DELAY", "0")))
        value = (Recording & key).fetch1("signal")
        self.insert1(dict(key, count=int(value)))
        self.Unit.insert([dict(key, unit=u) for u in range(2)])
        record("Spikes", key)


@schema
class Quality(dj.Computed):
    definition = """
    -> Recording
    ---
    ok : bool
    """

    def make(self, key):
        self.insert1(dict(key, ok=(Recording & key).fetch1("signal") >= 0))
        record("Quality", key)


@schema
class Summary(dj.Computed):
    definition = """
    -> Spikes
    ---
    units : int32
    """

    def make(self, key):
        self.insert1(dict(key, units=len(Spikes.Unit & key)))
        record("Summary", key)


@schema
class Report(dj.Computed):
    definition = """
    -> Summary
    -> Quality
    ---
    text : varchar(64)
    """

    def make(self, key):
        self.insert1(dict(key, text="ok"))
        record("Report", key)
'''

# step-level foreign-key graph of PIPELINE: table -> upstream computed tables
EXPECTED_UPSTREAM = {"Spikes": set(), "Quality": set(), "Summary": {"Spikes"}, "Report": {"Summary", "Quality"}}


class PipelineModule:
    """An importable pipeline module bound to one test's backend, with a side-effect counter."""

    def __init__(self, module, tmp_path):
        self.module = module
        self.tmp_path = tmp_path
        self.calls_file = tmp_path / "calls.txt"
        self.flags = tmp_path / "flags"

    def __getattr__(self, name):
        return getattr(self.module, name)

    @property
    def name(self) -> str:
        return self.module.__name__

    def _lines(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [line.split() for line in self.calls_file.read_text().splitlines() if line.strip()]

    def calls(self) -> collections.Counter:
        """How often make() completed, per "Table animal rec"."""
        return collections.Counter(" ".join(fields[:3]) for fields in self._lines())

    def pids(self) -> set[int]:
        """The processes that ran make()."""
        return {int(fields[3]) for fields in self._lines()}

    def add(self, animals, recs=range(3)):
        self.Animal.insert([{"animal": a} for a in animals])
        self.Recording.insert([{"animal": a, "rec": r, "signal": a * 10 + r} for a in animals for r in recs])

    def fail_once(self, animal, rec):
        self.flags.mkdir(exist_ok=True)
        (self.flags / f"fail-once-{animal}-{rec}").touch()

    @staticmethod
    def expected(animals, recs=range(3), tables=("Spikes", "Quality", "Summary", "Report")) -> set[str]:
        return {f"{t} {a} {r}" for t in tables for a in animals for r in recs}


@pytest.fixture
def pipeline_module(tmp_path, db_url, schema_name, monkeypatch):
    flags = tmp_path / "flags"
    flags.mkdir()
    code = PIPELINE.format(url=db_url, schema=schema_name, calls=str(tmp_path / "calls.txt"), flags=str(flags))
    name = f"jfa_pipe_{schema_name}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield PipelineModule(module, tmp_path)
    module.connection.close()
    sys.modules.pop(name, None)


DAG_FILE = """
import sys
sys.path.insert(0, {path!r})
import {module}
from joinflow_airflow import JoinflowDag

dag = JoinflowDag(dag_id={dag_id!r}, pipeline={module}, batch_size={batch_size}, conn_id=None, **{options!r})
"""


class AirflowRunner:
    """Writes a DAG file for the pipeline into the dags folder, loads it and runs ``dag.test()``."""

    def __init__(self, pipeline_module):
        self.pm = pipeline_module
        self.dag_id = f"jfa_{uuid.uuid4().hex[:8]}"
        self.path = DAGS_FOLDER / f"{self.dag_id}.py"

    def dag(self, batch_size: int = 4, **options):
        self.path.write_text(DAG_FILE.format(path=str(self.pm.tmp_path), module=self.pm.name,
                                             dag_id=self.dag_id, batch_size=batch_size, options=options))
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(self.path))
        assert not bag.import_errors, bag.import_errors
        return bag.get_dag(self.dag_id)

    def run(self, dag):
        return dag.test()

    def task_instances(self, run) -> list:
        from airflow.models import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            tis = session.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id,
                                                     TaskInstance.run_id == run.run_id).all()
            session.expunge_all()
        return tis

    def states(self, run) -> dict[tuple[str, int], str]:
        return {(ti.task_id, ti.map_index): str(ti.state) for ti in self.task_instances(run)}

    def close(self):
        self.path.unlink(missing_ok=True)


@pytest.fixture
def airflow_runner(pipeline_module):
    runner = AirflowRunner(pipeline_module)
    yield runner
    runner.close()
