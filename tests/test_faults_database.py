"""Never the wrong database, silently (issue 17).

A step run by an orchestrator runs on the database its pipeline (manifest) names, or fails
before any work naming both databases and the setting to fix; an unconfigured worker never
creates a database.  Server settings without a backend mean MySQL, DataJoint's default.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
from sqlalchemy.engine import make_url

import joinflow as dj
from joinflow import settings, testing
from joinflow.errors import LostConnectionError, WrongDatabaseError
from joinflow.pipeline import Pipeline, describe_database, load_step, same_database

pytestmark = pytest.mark.backend


@pytest.fixture
def declared(backend, tmp_path, monkeypatch):
    """A pipeline on ``dj.conn()`` declared on this backend (one animal, 3 recordings), not imported
    any more, with its manifest; and an empty working directory for the worker."""
    url = testing.database_url(backend, tmp_path)
    schema_name = testing.unique_schema_name()
    name, manifest = testing.declare_default_connection_pipeline(tmp_path, url, schema_name, monkeypatch)
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.chdir(worker)
    yield url, name, manifest, worker
    testing.drop_schemas(url, [schema_name])


def _steps(name: str) -> tuple[str, str]:
    return f"{name}:Spikes", f"{name}:Summary"


def test_an_unconfigured_worker_refuses_and_creates_no_database(declared, monkeypatch):
    url, name, manifest, worker = declared
    spikes, _ = _steps(name)
    with testing.default_connection(monkeypatch):  # nothing configured: no variable, no file
        with pytest.raises(WrongDatabaseError) as info:
            load_step(spikes, manifest["database"])
        message = str(info.value)
        assert f"step {spikes}" in message and "no database configured" in message
        assert describe_database(manifest["database"]) in message and "JOINFLOW_DATABASE_URL" in message
        # the same through a manifest pipeline's step, and without knowing the database
        step = Pipeline.from_manifest(manifest).step("Spikes")
        with pytest.raises(WrongDatabaseError, match="no database configured"):
            step.run()
        with pytest.raises(WrongDatabaseError, match="no database configured"):
            Pipeline.from_manifest(manifest).verify_database()
        with pytest.raises(WrongDatabaseError, match="no database configured"):
            load_step(spikes)
    assert os.listdir(worker) == []  # no joinflow.db, nothing


def test_a_worker_configured_for_another_database_refuses(declared, monkeypatch, tmp_path):
    url, name, manifest, worker = declared
    spikes, _ = _steps(name)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()  # an existing database that is not the pipeline's
    for wrong, says in ((f"sqlite:///{other}", "configured for the SQLite file 'other.db'"),
                        (f"sqlite:///{tmp_path / 'typo' / 'joinflow.db'}", "does not exist")):
        config = settings.Config(load_environment=False, search_file=False)
        config["database.url"] = wrong
        with testing.default_connection(monkeypatch, config):
            with pytest.raises(WrongDatabaseError) as info:
                load_step(spikes, manifest["database"])
        message = str(info.value)
        assert says in message and describe_database(manifest["database"]) in message, message
        assert "JOINFLOW_DATABASE_URL" in message
    assert not (tmp_path / "typo").exists() and os.listdir(worker) == []


def test_a_worker_configured_for_the_pipelines_database_runs(declared, monkeypatch):
    url, name, manifest, worker = declared
    spikes, summary = _steps(name)
    config = settings.Config(load_environment=False, search_file=False)
    config["database.url"] = url
    config["safemode"] = False
    with testing.default_connection(monkeypatch, config):
        pipe = Pipeline.from_manifest(manifest)
        assert same_database(pipe.verify_database(), manifest["database"])
        assert pipe.step("Spikes").run()["rows_added"] == 3
        assert load_step(summary, manifest["database"]).run()["rows_added"] == 3
    assert os.listdir(worker) == []


def test_a_table_rebound_to_another_database_is_refused_before_work(declared, monkeypatch, tmp_path):
    """A live pipeline's steps carry its database; verify_database() compares the table's binding."""
    url, name, manifest, worker = declared
    config = settings.Config(load_environment=False, search_file=False)
    config["database.url"] = url
    with testing.default_connection(monkeypatch, config):
        step = load_step(_steps(name)[0], manifest["database"])
        step.database = {"backend": "postgresql", "host": "db.example.org", "name": "lab"}
        with pytest.raises(WrongDatabaseError, match="PostgreSQL database 'lab' on db.example.org"):
            step.run()
        assert len(step.cls()) == 0  # nothing ran


def test_server_settings_without_a_backend_mean_mysql(monkeypatch):
    config = settings.Config(load_environment=False, search_file=False)
    assert config["database.backend"] == "sqlite"  # nothing given: the laptop default
    config["database.name"] = "lab.db"
    assert config["database.backend"] == "sqlite"  # a file name alone is still SQLite
    for key, value in (("database.host", "db.example.org"), ("database.user", "lab"), ("database.port", 3306)):
        config = settings.Config(load_environment=False, search_file=False)
        config[key] = value
        assert config["database.backend"] == "mysql", key
        config["database.backend"] = "postgresql"  # an explicit backend wins
        assert config["database.backend"] == "postgresql"
    for var in settings.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DJ_HOST", "db.example.org")
    monkeypatch.setenv("DJ_IGNORE_CONFIG_FILE", "1")
    assert settings.Config()["database.backend"] == "mysql"


def test_connection_with_host_and_user_only_goes_to_mysql(tmp_path, monkeypatch):
    """``dj.Connection(host=..., user=..., password=...)`` (DataJoint code) reaches the MySQL server
    and never opens a local SQLite file."""
    server = make_url(testing.database_url("mysql", tmp_path))
    monkeypatch.chdir(tmp_path)
    with testing.default_connection(monkeypatch):
        conn = dj.Connection(host=f"{server.host}:{server.port or 3306}", user=server.username,
                             password=server.password or "")
        try:
            assert conn.backend.name == "mysql" and conn.configured
            conn.ping()
        finally:
            conn.close()
        # an unreachable server fails loudly instead of falling back to a file
        with pytest.raises(LostConnectionError):
            dj.Connection(host="127.0.0.1:1", user="lab", password="x")
    assert not (tmp_path / "joinflow.db").exists()


def test_same_database_rules():
    pg = {"backend": "postgresql", "host": "localhost", "name": "lab"}
    assert same_database(pg, {"backend": "postgresql", "host": "127.0.0.1", "name": "lab"})
    assert not same_database(pg, {"backend": "postgresql", "host": "db2", "name": "lab"})
    assert not same_database(pg, {"backend": "postgresql", "host": "localhost", "name": "lab2"})
    assert not same_database(pg, {"backend": "sqlite", "host": None, "name": "lab"})
    # MySQL's URL database is only a default: the schemas are the server's databases
    assert same_database({"backend": "mysql", "host": "h", "name": None},
                         {"backend": "mariadb", "host": "h", "name": "test"})
    assert not same_database({"backend": "sqlite", "host": None, "name": "a.db"},
                             {"backend": "sqlite", "host": None, "name": "b.db"})
