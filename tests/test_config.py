"""Configuration: defaults, files, environment variables, precedence, backend selection."""

import json

import pytest

import joinflow as dj
from joinflow import settings
from joinflow.errors import DataJointError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in settings.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()  # stop the file search at this folder
    return tmp_path


def test_defaults_select_sqlite_file_in_working_directory(clean_env):
    cfg = settings.Config()
    assert cfg["database.backend"] == "sqlite"
    conn = dj.Connection(config=cfg)
    try:
        assert conn.backend.name == "sqlite"
        assert conn.url.database == str(clean_env / "joinflow.db")
    finally:
        conn.close()


def test_datajoint_json_is_read_and_env_beats_file(clean_env, monkeypatch):
    (clean_env / "datajoint.json").write_text(json.dumps(
        {"database": {"host": "filehost", "port": 3307}, "safemode": False, "jobs": {"stale_timeout": 10}}))
    cfg = settings.Config()
    assert cfg["database.host"] == "filehost" and cfg["database.port"] == 3307 and cfg["safemode"] is False
    assert cfg.database.host == "filehost" and cfg.jobs.stale_timeout == 10
    monkeypatch.setenv("DJ_HOST", "envhost")
    monkeypatch.setenv("DJ_SAFEMODE", "true")  # DataJoint 2.3.5 lets the file win here; joinflow does not
    monkeypatch.setenv("DJ_JOBS_STALE_TIMEOUT", "99")
    cfg = settings.Config()
    assert cfg["database.host"] == "envhost" and cfg["safemode"] is True and cfg["jobs.stale_timeout"] == 99
    cfg["database.host"] = "runtime"
    assert cfg["database.host"] == "runtime"
    del cfg["database.host"]
    assert cfg["database.host"] == "envhost"


def test_joinflow_toml_and_search_upward(clean_env):
    (clean_env / "joinflow.toml").write_text('[database]\nbackend = "postgresql"\nname = "lab"\n')
    sub = clean_env / "a" / "b"
    sub.mkdir(parents=True)
    import os

    os.chdir(sub)
    cfg = settings.Config()
    assert cfg["database.backend"] == "postgresql" and cfg["database.name"] == "lab"
    assert cfg.source_file == clean_env / "joinflow.toml"


def test_env_url_selects_backend(clean_env, monkeypatch):
    monkeypatch.setenv("JOINFLOW_DATABASE_URL", f"sqlite:///{clean_env / 'x.db'}")
    monkeypatch.setenv("DJ_BACKEND", "mysql")  # the URL wins over the separate settings
    conn = dj.Connection(config=settings.Config())
    try:
        assert conn.backend.name == "sqlite" and conn.url.database.endswith("x.db")
    finally:
        conn.close()


def test_override_and_bad_values(clean_env):
    cfg = settings.Config()
    with cfg.override(safemode=False, database__host="h"):
        assert cfg["safemode"] is False and cfg["database.host"] == "h"
    assert cfg["safemode"] is True and cfg["database.host"] == "localhost"
    with pytest.raises(DataJointError, match="Unknown configuration key"):
        cfg["database.hots"] = "x"
    with pytest.raises(DataJointError, match="true/false"):
        cfg["safemode"] = "maybe"
    with pytest.raises(DataJointError, match="Unknown database backend"):
        dj.Connection(backend="oracle", config=cfg)


def test_thread_safe_mode_refuses_globals(monkeypatch):
    monkeypatch.setenv("DJ_THREAD_SAFE", "true")
    with pytest.raises(dj.ThreadSafetyError):
        dj.conn()
    with pytest.raises(dj.ThreadSafetyError):
        dj.Schema("anything")
    with pytest.raises(dj.ThreadSafetyError, match="dj.config"):
        dj.config["database.host"]
    with pytest.raises(dj.ThreadSafetyError):
        dj.config["safemode"] = False
    with pytest.raises(dj.ThreadSafetyError):
        dj.config.copy()


def test_thread_safe_mode_instance_keeps_its_own_config(monkeypatch, tmp_path):
    """Under DJ_THREAD_SAFE a dj.Instance still works: it carries its own config and connection."""
    monkeypatch.setenv("DJ_THREAD_SAFE", "true")
    instance = dj.Instance(backend="sqlite", database__url=f"sqlite:///{tmp_path / 'own.db'}")
    try:
        schema = instance.Schema("threadsafe_own")

        @schema
        class Item(dj.Manual):
            definition = """
            item_id : int32
            """

        Item.insert1({"item_id": 1})
        assert len(Item()) == 1
    finally:
        instance.close()


def test_config_proxy_reads_and_writes_the_global_config():
    with dj.config.override(safemode=False):
        assert dj.config["safemode"] is False
        assert "safemode" in dj.config
    assert dj.config["safemode"] is dj.settings.config["safemode"]
