"""Fixtures of the joinflow-airflow tests.

Every backend test runs on SQLite and PostgreSQL (``JOINFLOW_TEST_PG_URL``).  A server that
does not answer is skipped locally and fails the test under CI=true.  Airflow runs offline:
``dag.test()`` in-process against a SQLite metadata DB in a temporary AIRFLOW_HOME, migrated
once per session; each test writes its DAG file into that home's dags folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

# Airflow reads its configuration when first imported: set it up before anything imports it.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="jf-airflow-home-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("JOINFLOW_DATABASE_URL", None)


from joinflow.testing import (  # noqa: E402  (shared with the other adapters' suites)
    EXPECTED_UPSTREAM,
    PipelineModule,
    database_url,
    drop_schemas,
    import_pipeline_module,
    unique_schema_name,
)


@pytest.fixture(scope="session", autouse=True)
def airflow_db():
    """Migrate the temporary metadata DB once (``airflow db migrate``, ~3 s)."""
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    subprocess.run(cmd + ["db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    yield AIRFLOW_HOME


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend, tmp_path) -> str:
    return database_url(backend, tmp_path)


@pytest.fixture
def schema_name(db_url):
    """A unique schema name for this test, dropped afterwards."""
    name = unique_schema_name("jfa")
    yield name
    drop_schemas(db_url, [name])


@pytest.fixture
def pipeline_module(tmp_path, db_url, schema_name, monkeypatch):
    module = import_pipeline_module(tmp_path, db_url, schema_name, monkeypatch, prefix="jfa_pipe")
    yield module
    module.close()


DAG_FILE = """
import sys
sys.path.insert(0, {path!r})
import {module}
from joinflow_airflow import JoinflowDag

dag = JoinflowDag(dag_id={dag_id!r}, pipeline={module}, batch_size={batch_size}, conn_id=None, **{options!r})
"""


MANIFEST_DAG_FILE = """
import sys
sys.path.insert(0, {path!r})
from joinflow_airflow import JoinflowDag

dag = JoinflowDag(dag_id={dag_id!r}, manifest={manifest!r}, batch_size={batch_size}, conn_id=None, **{options!r})
"""


class AirflowRunner:
    """Writes a DAG file for the pipeline into the dags folder, loads it and runs ``dag.test()``."""

    def __init__(self, pipeline_module):
        self.pm = pipeline_module
        self.dag_id = f"jfa_{uuid.uuid4().hex[:8]}"
        self.path = DAGS_FOLDER / f"{self.dag_id}.py"

    def dag(self, batch_size: int = 4, manifest: bool = False, **options):
        """Load the DAG file; ``manifest=True`` builds it from a manifest file next to it
        (relative path) instead of importing the pipeline module."""
        if manifest:
            from joinflow.pipeline import Pipeline

            self.manifest_path = self.path.with_suffix(".json")
            Pipeline(self.pm.module).write_manifest(self.manifest_path)
            text = MANIFEST_DAG_FILE.format(path=str(self.pm.tmp_path), manifest=self.manifest_path.name,
                                            dag_id=self.dag_id, batch_size=batch_size, options=options)
        else:
            text = DAG_FILE.format(path=str(self.pm.tmp_path), module=self.pm.name,
                                   dag_id=self.dag_id, batch_size=batch_size, options=options)
        self.path.write_text(text)
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(self.path))
        assert not bag.import_errors, bag.import_errors
        return bag.get_dag(self.dag_id)

    def run(self, dag):
        return dag.test()

    def task_instances(self, run) -> list:
        from airflow.models import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            tis = session.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id,
                                                     TaskInstance.run_id == run.run_id).all()
            session.expunge_all()
        return tis

    def states(self, run) -> dict[tuple[str, int], str]:
        return {(ti.task_id, ti.map_index): str(ti.state) for ti in self.task_instances(run)}

    def close(self):
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".json").unlink(missing_ok=True)


@pytest.fixture
def airflow_runner(pipeline_module):
    runner = AirflowRunner(pipeline_module)
    yield runner
    runner.close()
