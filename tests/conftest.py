"""Backend fixtures: every backend test runs on SQLite, PostgreSQL and MySQL/MariaDB.

Server URLs come from JOINFLOW_TEST_PG_URL / JOINFLOW_TEST_MYSQL_URL.  A server that does
not answer is skipped locally (with the reason) and fails the test under CI=true.
"""

from __future__ import annotations

import os
import socket

import pytest

import joinflow as dj
from joinflow import testing

BACKENDS = ["sqlite", "postgresql", "mysql"]
backend_url = testing.database_url  # kept under this name for the test modules that import it


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
    name = testing.unique_schema_name()
    yield name
    testing.drop_schemas(connection, [name])


@pytest.fixture
def schema_names(connection):
    """A factory of unique schema names (all dropped afterwards, dependents first)."""
    made: list[str] = []

    def make() -> str:
        made.append(testing.unique_schema_name())
        return made[-1]

    yield make
    testing.drop_schemas(connection, list(reversed(made)))


@pytest.fixture
def schema(connection, schema_name):
    """An activated, empty dj.Schema bound to this test's connection."""
    return dj.Schema(schema_name, connection=connection)


# a moto S3 server on a free local port, one per test module (the store tests use it)
@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
