"""Building blocks for test suites of joinflow and its orchestrator adapters.

Backend URLs come from ``JOINFLOW_TEST_PG_URL`` / ``JOINFLOW_TEST_MYSQL_URL``; a server that
does not answer is skipped locally and fails the test under ``CI=true``.  ``EXAMPLE_PIPELINE``
is a small importable pipeline (two source tables, four computed steps, a part table, a key
that always fails, keys that fail once on demand) written to a temporary module by
:func:`import_pipeline_module`; :class:`PipelineModule` counts its make() calls.
pytest is imported only by the functions that skip or fail.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import sys
import textwrap
import uuid
from urllib.parse import urlparse

import joinflow as dj

PG_URL = os.environ.get("JOINFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("JOINFLOW_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_problems: dict[str, str | None] = {}


def server_problem(url: str) -> str | None:
    """Why the server of ``url`` cannot be reached, or None (cached per URL)."""
    if url not in _problems:
        parsed = urlparse(url.replace("+psycopg", "").replace("+pymysql", ""))
        host, port = parsed.hostname or "127.0.0.1", parsed.port
        try:
            with socket.create_connection((host, port), timeout=3):
                _problems[url] = None
        except OSError as exc:
            _problems[url] = f"no database server at {host}:{port} ({exc})"
    return _problems[url]


def database_url(backend: str, tmp_path) -> str:
    """The URL to test ``backend`` against; skips (locally) or fails (CI) when absent."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'joinflow.db'}"
    url, var = (PG_URL, "JOINFLOW_TEST_PG_URL") if backend == "postgresql" else (MYSQL_URL, "JOINFLOW_TEST_MYSQL_URL")
    problem = server_problem(url)
    if problem:
        import pytest

        message = f"{backend} tests need a server: {problem}. Set {var}."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


def unique_schema_name(prefix: str = "jf") -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    return f"{prefix}_{worker}_{uuid.uuid4().hex[:8]}"


def drop_schemas(url_or_connection, names) -> None:
    """Drop the named schemas if they exist (never raises: cleanup must not hide a result)."""
    own = not isinstance(url_or_connection, dj.Connection)
    conn = dj.Connection(url=url_or_connection, config=dj.config.copy()) if own else url_or_connection
    try:
        if conn.in_transaction:
            conn.cancel_transaction()
        for name in names:
            try:
                if conn.backend.schema_exists(conn, name):
                    conn.backend.drop_schema(conn, name)
            except Exception as exc:  # pragma: no cover
                print(f"could not drop schema {name}: {exc}")
    finally:
        if own:
            conn.close()


EXAMPLE_PIPELINE = '''
import os
import time
import joinflow as dj

config = dj.config.copy()
config["safemode"] = False
connection = dj.Connection(url={url!r}, config=config)
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

    def close(self) -> None:
        self.module.connection.close()
        sys.modules.pop(self.module.__name__, None)

    @staticmethod
    def expected(animals, recs=range(3), tables=("Spikes", "Quality", "Summary", "Report")) -> set[str]:
        return {f"{t} {a} {r}" for t in tables for a in animals for r in recs}


def import_pipeline_module(tmp_path, url: str, schema_name: str, monkeypatch, prefix: str = "jf_pipe"):
    """Write EXAMPLE_PIPELINE bound to ``url``/``schema_name`` as a module and import it.

    The module's folder is put on ``sys.path`` and ``PYTHONPATH`` (for worker processes).
    Call :meth:`PipelineModule.close` afterwards.
    """
    flags = tmp_path / "flags"
    flags.mkdir(exist_ok=True)
    code = EXAMPLE_PIPELINE.format(url=url, schema=schema_name, calls=str(tmp_path / "calls.txt"), flags=str(flags))
    name = f"{prefix}_{schema_name}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return PipelineModule(__import__(name), tmp_path)


# -- a worker with no database configuration (issue 17: never the wrong database, silently) ---------
def _default_connection_code(url: str, schema_name: str, tmp_path) -> str:
    """EXAMPLE_PIPELINE bound to the process's default connection (``dj.conn()``), as pipeline code
    that takes its database from the environment is: ``dj.Schema(name)`` with no connection."""
    flags = tmp_path / "flags"
    flags.mkdir(exist_ok=True)
    code = EXAMPLE_PIPELINE.format(url=url, schema=schema_name, calls=str(tmp_path / "calls.txt"), flags=str(flags))
    bound = f"connection = dj.Connection(url={url!r}, config=config)\nschema = dj.Schema({schema_name!r}, connection=connection)"
    assert bound in code, "EXAMPLE_PIPELINE's connection lines changed; update _default_connection_code"
    return textwrap.dedent(code.replace(bound, f"schema = dj.Schema({schema_name!r})"))


@contextlib.contextmanager
def default_connection(monkeypatch, config=None):
    """Within: ``dj.config`` is ``config`` (default: a configuration with no setting at all, as in a
    worker where nothing is configured: no environment variable, no file) and ``dj.conn()`` starts
    anew; afterwards the process's own configuration and connection are back."""
    from . import connection as connection_module, settings

    saved = (settings.config, dj.config, connection_module._singleton)
    fresh = config if config is not None else settings.Config(load_environment=False, search_file=False)
    for var in settings.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    try:
        settings.config = dj.config = fresh
        connection_module._singleton = None
        yield fresh
    finally:
        current = connection_module._singleton
        if current is not None and current is not saved[2]:
            with contextlib.suppress(Exception):
                current.close()
        settings.config, dj.config, connection_module._singleton = saved


def declare_default_connection_pipeline(tmp_path, url: str, schema_name: str, monkeypatch,
                                        prefix: str = "jf_dflt") -> tuple[str, dict]:
    """Write EXAMPLE_PIPELINE as a module on ``dj.conn()`` (no connection of its own), declare it on
    ``url`` as a configured process would, insert one animal (3 recordings), and forget it again
    (the module is not imported any more).  Returns the module's name and its manifest."""
    from .pipeline import Pipeline

    name = f"{prefix}_{schema_name}"
    (tmp_path / f"{name}.py").write_text(_default_connection_code(url, schema_name, tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    configured = dj.config.copy()
    configured["database.url"] = url
    configured["safemode"] = False
    with default_connection(monkeypatch, configured):
        try:
            module = __import__(name)
            module.Animal.insert1({"animal": 1})
            module.Recording.insert([{"animal": 1, "rec": r, "signal": float(r)} for r in range(3)])
            manifest = Pipeline(module).to_manifest()
        finally:
            sys.modules.pop(name, None)
    return name, manifest
