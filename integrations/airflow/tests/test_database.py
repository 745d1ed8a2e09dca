"""The wrong database, silently (issue 17), through dag.test() on SQLite and PostgreSQL.

The pipeline module takes its database from the worker (``dj.Schema(name)``, no connection of
its own).  A worker without the DAG's Airflow connection, or with no database configured at
all, or configured for another database than the manifest's, fails the run before any work and
creates no ``joinflow.db`` in its working directory.
"""

from __future__ import annotations

import json
import sqlite3
import uuid

import pytest

from conftest import DAGS_FOLDER
from joinflow import testing

DAG_TEXT = """
import sys
sys.path.insert(0, {path!r})
from joinflow_airflow import JoinflowDag

dag = JoinflowDag(dag_id={dag_id!r}, manifest={manifest!r}, batch_size=10, conn_id={conn_id!r})
"""


@pytest.fixture
def manifest_dag(tmp_path, db_url, schema_name, monkeypatch):
    """A manifest DAG of a pipeline on ``dj.conn()`` declared on this backend (3 pending keys per
    step), and an empty worker directory as the working directory."""
    name, manifest = testing.declare_default_connection_pipeline(tmp_path, db_url, schema_name, monkeypatch,
                                                                 prefix="jfa_dflt")
    dag_id = f"jfa_db_{uuid.uuid4().hex[:8]}"
    manifest_path = DAGS_FOLDER / f"{dag_id}.json"
    manifest_path.write_text(json.dumps(manifest))
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.chdir(worker)
    paths = []

    def build(conn_id):
        from airflow.dag_processing.dagbag import DagBag

        path = DAGS_FOLDER / f"{dag_id}.py"
        path.write_text(DAG_TEXT.format(path=str(tmp_path), dag_id=dag_id, manifest=manifest_path.name,
                                        conn_id=conn_id))
        paths.append(path)
        bag = DagBag(dag_folder=str(path))
        assert not bag.import_errors, bag.import_errors
        return bag.get_dag(dag_id)

    yield build, manifest, worker
    for path in paths + [manifest_path]:
        path.unlink(missing_ok=True)


def _states(run) -> dict[str, str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id,
                                                 TaskInstance.run_id == run.run_id).all()
        return {ti.task_id: str(ti.state) for ti in tis if ti.map_index < 0}


@pytest.mark.parametrize("conn_id", ["joinflow_misspelled", None])
def test_an_unconfigured_worker_fails_the_run_and_creates_no_file(manifest_dag, monkeypatch, conn_id, capfd, caplog):
    build, manifest, worker = manifest_dag
    dag = build(conn_id)
    with testing.default_connection(monkeypatch):  # no JOINFLOW_DATABASE_URL, no dj.config, no file
        run = dag.test()
    assert str(run.state) == "failed"
    states = _states(run)
    assert states["Spikes.plan"] == "failed" and states["Quality.plan"] == "failed"
    # downstream plans run after a failed upstream (trigger rule all_done) and refuse on their own
    assert states["Summary.plan"] == "failed"
    assert list(worker.iterdir()) == []  # no joinflow.db
    out = capfd.readouterr()
    text = out.out + out.err + caplog.text
    if conn_id:
        assert "'joinflow_misspelled' is not defined" in text and "JOINFLOW_DATABASE_URL" in text
    else:
        assert "no database configured" in text and "never creates a database" in text


def test_a_worker_on_another_database_fails_the_run(manifest_dag, monkeypatch, tmp_path, capfd, caplog):
    build, manifest, worker = manifest_dag
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    monkeypatch.setenv("AIRFLOW_CONN_JOINFLOW_OTHER",
                       json.dumps({"conn_type": "joinflow", "extra": {"url": f"sqlite:///{other}"}}))
    dag = build("joinflow_other")
    with testing.default_connection(monkeypatch):
        run = dag.test()
    assert str(run.state) == "failed" and _states(run)["Spikes.plan"] == "failed"
    out = capfd.readouterr()
    text = out.out + out.err + caplog.text
    assert "configured for the SQLite file 'other.db'" in text and "'joinflow_other'" in text
    assert list(worker.iterdir()) == []
