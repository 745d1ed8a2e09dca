"""The wrong database, silently (issue 17), through prefect_test_harness on SQLite and PostgreSQL.

The pipeline module takes its database from the worker (``dj.Schema(name)``, no connection of
its own).  A flow run without the block or ``JOINFLOW_DATABASE_URL`` (nothing configured), or
with a block naming a database that does not exist, fails before any work and creates no
``joinflow.db`` in the working directory.
"""

from __future__ import annotations

import uuid

import pytest

from joinflow import testing
from prefect_joinflow import JoinflowDatabase, joinflow_flow


@pytest.fixture
def declared(tmp_path, db_url, schema_name, monkeypatch):
    name, manifest = testing.declare_default_connection_pipeline(tmp_path, db_url, schema_name, monkeypatch,
                                                                 prefix="jfp_dflt")
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.chdir(worker)
    return name, worker


def test_an_unconfigured_worker_fails_the_flow_and_creates_no_file(declared, monkeypatch):
    name, worker = declared
    with testing.default_connection(monkeypatch):  # no block, no JOINFLOW_DATABASE_URL, no dj.config
        state = joinflow_flow(name, name=f"jfp-db-{uuid.uuid4().hex[:6]}")(return_state=True)
    assert state.is_failed(), state
    assert "no database configured" in state.message and "database_block" in state.message, state.message
    assert list(worker.iterdir()) == []  # no joinflow.db


def test_a_block_naming_a_missing_database_fails_and_the_right_block_runs(declared, db_url, tmp_path, monkeypatch):
    name, worker = declared
    wrong, right = f"jfp-wrong-{uuid.uuid4().hex[:8]}", f"jfp-right-{uuid.uuid4().hex[:8]}"
    JoinflowDatabase(url=f"sqlite:///{tmp_path / 'lab-typo.db'}").save(wrong, overwrite=True)
    JoinflowDatabase(url=db_url).save(right, overwrite=True)
    with testing.default_connection(monkeypatch):
        state = joinflow_flow(name, name="jfp-db-wrong", database_block=wrong)(return_state=True)
    assert state.is_failed(), state
    assert "does not exist" in state.message and repr(wrong) in state.message, state.message
    assert not (tmp_path / "lab-typo.db").exists() and list(worker.iterdir()) == []
    with testing.default_connection(monkeypatch):
        state = joinflow_flow(name, name="jfp-db-right", database_block=right)(return_state=True)
        assert state.is_completed(), state.message
        results = state.result()
    assert results[f"{name}:Spikes"]["rows_added"] == 3 and results[f"{name}:Report"]["rows_added"] == 3
    assert list(worker.iterdir()) == []
