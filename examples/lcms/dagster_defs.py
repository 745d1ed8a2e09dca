"""Dagster entry file for the LC-MS example pipeline.

    export JOINFLOW_DATABASE_URL=sqlite:///$PWD/joinflow.db   # or postgresql+psycopg://...
    dagster dev -f examples/lcms/dagster_defs.py

Materialize the chain ``lcms/Acquisition`` -> ``Centroid`` -> ``DetectedPeaks`` ->
``PeakSummary`` from the UI, or turn on ``joinflow_sensor``: it launches a run whenever new
runs are inserted (``python examples/demo.py`` inserts some).  ``Acquisition`` writes and
reads the simulated raw files in ``$LCMS_RAW_DIR`` (default: a temporary folder).
"""

import os
import sys
from pathlib import Path

from dagster import Definitions, EnvVar

from dagster_joinflow import JoinflowResource, build_joinflow_assets, build_joinflow_sensor

EXAMPLES = str(Path(__file__).resolve().parent.parent)
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)  # step names are "lcms.pipeline:Class": importable in every worker

from lcms import pipeline  # noqa: E402  (declares the tables on the configured database)

assets = build_joinflow_assets(pipeline)

defs = Definitions(
    assets=assets,
    sensors=[build_joinflow_sensor(assets)],
    resources={
        "joinflow": JoinflowResource(
            database_url=EnvVar("JOINFLOW_DATABASE_URL") if os.environ.get("JOINFLOW_DATABASE_URL") else None
        )
    },
)
