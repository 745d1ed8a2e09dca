"""Backend fixtures: every backend test runs on SQLite, PostgreSQL and MySQL/MariaDB.

Server URLs come from JOINFLOW_TEST_PG_URL / JOINFLOW_TEST_MYSQL_URL.  A server that does
not answer is skipped locally (with the reason) and fails the test under CI=true.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

import joinflow as dj

PG_URL = os.environ.get("JOINFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("JOINFLOW_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
BACKENDS = ["sqlite", "postgresql", "mysql"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_reachable: dict[str, str | None] = {}


def _server_problem(url: str) -> str | None:
    if url in _reachable:
        return _reachable[url]
    parsed = urlparse(url.replace("+psycopg", "").replace("+pymysql", ""))
    host, port = parsed.hostname or "127.0.0.1", parsed.port
    try:
        with socket.create_connection((host, port), timeout=3):
            problem = None
    except OSError as exc:
        problem = f"no database server at {host}:{port} ({exc})"
    _reachable[url] = problem
    return problem


def backend_url(backend: str, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'joinflow.db'}"
    url = PG_URL if backend == "postgresql" else MYSQL_URL
    problem = _server_problem(url)
    if problem:
        message = f"{backend} tests need a server: {problem}. Set JOINFLOW_TEST_{'PG' if backend == 'postgresql' else 'MYSQL'}_URL."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def test_config():
    cfg = dj.config.copy()
    cfg["safemode"] = False
    return cfg


@pytest.fixture
def connection(backend, tmp_path, test_config):
    conn = dj.Connection(url=backend_url(backend, tmp_path), config=test_config)
    yield conn
    conn.close()


@pytest.fixture
def schema_name(request, connection):
    """A unique schema name for this test, dropped afterwards."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    name = f"jf_{worker}_{uuid.uuid4().hex[:8]}"
    names = [name]
    yield name
    _drop_schemas(connection, names)


@pytest.fixture
def schema_names(connection):
    """A factory of unique schema names (all dropped afterwards, dependents first)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    made: list[str] = []

    def make() -> str:
        name = f"jf_{worker}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return name

    yield make
    _drop_schemas(connection, list(reversed(made)))


def _drop_schemas(connection, names):
    if connection.in_transaction:
        connection.cancel_transaction()
    for name in names:
        try:
            if connection.backend.schema_exists(connection, name):
                connection.backend.drop_schema(connection, name)
        except Exception as exc:  # pragma: no cover - cleanup must not hide the test's result
            print(f"could not drop schema {name}: {exc}")


@pytest.fixture
def schema(connection, schema_name):
    """An activated, empty dj.Schema bound to this test's connection."""
    return dj.Schema(schema_name, connection=connection)
