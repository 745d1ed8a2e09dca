"""Fixtures of the prefect-joinflow tests.

Every backend test runs on SQLite and PostgreSQL (``JOINFLOW_TEST_PG_URL``).  A server that
does not answer is skipped locally and fails the test under CI=true.  Prefect runs against
an ephemeral local API (``prefect_test_harness``, one per session): no network needed.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before prefect reads its settings
from prefect.testing.utilities import prefect_test_harness  # noqa: E402


from joinflow.testing import (  # noqa: E402  (shared with the other adapters' suites)
    EXPECTED_UPSTREAM,
    PipelineModule,
    database_url,
    drop_schemas,
    import_pipeline_module,
    unique_schema_name,
)


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    # generous: on a loaded 2-core machine (CI runs the three adapter suites side by side) the
    # ephemeral API server took more than 60 s to answer once
    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend, tmp_path) -> str:
    return database_url(backend, tmp_path)


@pytest.fixture
def schema_name(db_url):
    """A unique schema name for this test, dropped afterwards."""
    name = unique_schema_name("jfp")
    yield name
    drop_schemas(db_url, [name])


@pytest.fixture
def pipeline_module(tmp_path, db_url, schema_name, monkeypatch):
    module = import_pipeline_module(tmp_path, db_url, schema_name, monkeypatch, prefix="jfp_pipe")
    yield module
    module.close()
