"""Fixtures of the prefect-joinflow tests.

Every backend test runs on SQLite and PostgreSQL (``JOINFLOW_TEST_PG_URL``).  A server that
does not answer is skipped locally and fails the test under CI=true.  Prefect runs against
an ephemeral local API (``prefect_test_harness``, one per session): no network needed.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import textwrap
import uuid
from urllib.parse import urlparse

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before prefect reads its settings
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

import joinflow as dj

PG_URL = os.environ.get("JOINFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=60):
        yield


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
    name = f"jfp_{uuid.uuid4().hex[:10]}"
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
    name = f"jfp_pipe_{schema_name}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    module = __import__(name)
    yield PipelineModule(module, tmp_path)
    module.connection.close()
    sys.modules.pop(name, None)
