"""The LC-MS pipeline as an Airflow 3 DAG (joinflow-airflow).

    pip install joinflow-airflow                       # pulls joinflow and apache-airflow
    export AIRFLOW__CORE__DAGS_FOLDER=$PWD/examples/lcms AIRFLOW__CORE__LOAD_EXAMPLES=False
    export AIRFLOW_CONN_JOINFLOW_DEFAULT='{"conn_type": "joinflow", "extra": {"url": "sqlite:////abs/path/joinflow.db"}}'
    airflow standalone                                 # UI on http://localhost:8080
    airflow dags test lcms                             # or: one run now, in-process

The DAG is built from ``pipeline.json``, the pipeline's manifest: parsing this file imports
no pipeline module and never touches the database (Airflow parses DAG files constantly).
The tasks import ``lcms.pipeline`` and connect when they run.  After changing the pipeline's
tables, regenerate the manifest (from the ``examples`` folder)::

    python -m joinflow.pipeline manifest lcms.pipeline -o lcms/pipeline.json

The database URL comes from the Airflow connection ``joinflow_default`` (type ``joinflow``),
else from ``JOINFLOW_DATABASE_URL``: no credentials in this file.  ``.airflowignore`` keeps
the other example files of this folder out of Airflow's parser.  ``Acquisition`` simulates
the raw files it reads into ``$LCMS_RAW_DIR`` (default: a temporary folder): with workers on
several machines, point it at a shared folder.
"""

import sys
from datetime import datetime
from pathlib import Path

from joinflow_airflow import JoinflowDag

EXAMPLES = str(Path(__file__).resolve().parent.parent)
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)  # step names are "lcms.pipeline:Class": importable in every worker

dag = JoinflowDag(
    dag_id="lcms",
    manifest="pipeline.json",       # next to this file; or pipeline="lcms.pipeline" (imports it at parse time)
    schedule="@hourly",
    batch_size=100,
    conn_id="joinflow_default",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 2},    # a retry re-pends the errors of its own keys
)
