"""The provider entry point, the `joinflow` connection type and JoinflowHook's URL lookup."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest

import joinflow_airflow
from joinflow_airflow import JoinflowHook, get_provider_info


def test_provider_entry_point():
    eps = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("joinflow_airflow")]
    assert len(eps) == 1
    info = eps[0].load()()
    assert info == get_provider_info()
    assert info["package-name"] == "joinflow-airflow"
    assert info["connection-types"] == [
        {"hook-class-name": "joinflow_airflow.hooks.JoinflowHook", "connection-type": "joinflow"}]


def test_providers_manager_knows_the_connection_type():
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert "joinflow-airflow" in ProvidersManager().providers
    hook = ProvidersManagerTaskRuntime().hooks["joinflow"]
    assert hook is not None and hook.hook_class_name == "joinflow_airflow.hooks.JoinflowHook"


def test_hook_url_from_connection_extra(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_JF_SQLITE",
                       json.dumps({"conn_type": "joinflow", "extra": {"url": "sqlite:////data/lab.db"}}))
    monkeypatch.setenv("JOINFLOW_DATABASE_URL", "sqlite:////elsewhere.db")
    assert JoinflowHook("jf_sqlite").get_url() == "sqlite:////data/lab.db"


def test_hook_url_from_connection_fields(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_JF_PG", json.dumps({
        "conn_type": "joinflow", "host": "db.example.org", "port": 5433, "login": "lab",
        "password": "s3cr:t", "schema": "labdb"}))
    url = JoinflowHook("jf_pg").get_url()
    assert url == "postgresql+psycopg://lab:s3cr%3At@db.example.org:5433/labdb"


def test_hook_falls_back_to_env(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_JOINFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("JOINFLOW_DATABASE_URL", "sqlite:////tmp/x.db")
    assert JoinflowHook().get_url() == "sqlite:////tmp/x.db"
    monkeypatch.delenv("JOINFLOW_DATABASE_URL")
    assert JoinflowHook().get_url() is None


def test_hook_url_applies_to_tasks(monkeypatch, tmp_path):
    import joinflow as dj

    url = f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_JF_APPLY", json.dumps({"conn_type": "joinflow", "extra": {"url": url}}))
    before = dj.config["database.url"]
    try:
        joinflow_airflow.apply_url(JoinflowHook("jf_apply").get_url())
        assert dj.config["database.url"] == url
    finally:
        dj.config["database.url"] = before
        monkeypatch.delenv("JOINFLOW_DATABASE_URL", raising=False)
