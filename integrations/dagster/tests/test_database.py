"""The wrong database, silently (issue 17), through dg.materialize() on SQLite and PostgreSQL.

The pipeline module takes its database from the process (``dj.Schema(name)``, no connection of
its own).  The code location built the assets on the configured database; a run worker that
imports the module again with nothing configured (no ``JOINFLOW_DATABASE_URL``, no resource
``database_url``) fails before any work and creates no ``joinflow.db`` in its working directory.
"""

import sys

import dagster as dg
import pytest

from dagster_joinflow import JoinflowResource, build_joinflow_assets
from joinflow import settings, testing


@pytest.fixture
def built(tmp_path, database_url, schema_name, monkeypatch):
    name, manifest = testing.declare_default_connection_pipeline(tmp_path, database_url, schema_name, monkeypatch,
                                                                 prefix="jfdg_dflt")
    config = settings.Config(load_environment=False, search_file=False)
    config["database.url"] = database_url
    with testing.default_connection(monkeypatch, config):  # the code location, configured
        assets = build_joinflow_assets(name)
    sys.modules.pop(name, None)  # a run worker imports the code location anew
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.chdir(worker)
    yield name, assets, worker
    sys.modules.pop(name, None)


def _failure(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures
    return failures[0].step_failure_data.user_failure_data.description


def test_an_unconfigured_run_worker_fails_and_creates_no_file(built, database_url, schema_name, monkeypatch):
    name, assets, worker = built
    with testing.default_connection(monkeypatch), dg.instance_for_test() as instance:
        result = dg.materialize(assets, instance=instance, resources={"joinflow": JoinflowResource()},
                                raise_on_error=False)
    assert not result.success
    message = _failure(result)
    assert "no database configured" in message and "JOINFLOW_DATABASE_URL" in message, message
    assert not result.get_asset_materialization_events()
    assert list(worker.iterdir()) == []  # no joinflow.db
    # the same run worker, configured: it runs on the pipeline's database
    config = settings.Config(load_environment=False, search_file=False)
    config["database.url"] = database_url
    config["safemode"] = False
    with testing.default_connection(monkeypatch, config), dg.instance_for_test() as instance:
        result = dg.materialize(assets, instance=instance, resources={"joinflow": JoinflowResource()})
    assert result.success
    added = {e.asset_key.to_user_string(): e.materialization.metadata["rows_added"].value
             for e in result.get_asset_materialization_events()}
    assert added[f"{schema_name}/Spikes"] == 3 and added[f"{schema_name}/Report"] == 3
    assert list(worker.iterdir()) == []


def test_a_run_worker_configured_for_a_missing_file_fails(built, tmp_path, monkeypatch):
    name, assets, worker = built
    config = settings.Config(load_environment=False, search_file=False)
    config["database.url"] = f"sqlite:///{tmp_path / 'lab-typo.db'}"
    with testing.default_connection(monkeypatch, config), dg.instance_for_test() as instance:
        result = dg.materialize(assets, instance=instance, resources={"joinflow": JoinflowResource()},
                                raise_on_error=False)
    assert not result.success
    assert "does not exist" in _failure(result)
    assert not (tmp_path / "lab-typo.db").exists() and list(worker.iterdir()) == []
