"""The example dags folder (examples/lcms) parses cleanly and runs with dag.test()."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import conftest

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "lcms"

SCRIPT = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.get_dag("lcms")
groups = sorted(dag.task_group.children) if dag else None
sys.path.insert(0, sys.argv[2])
from lcms import pipeline
pipeline.Sample.insert1({"sample_id": "s1", "organism": "human"})
pipeline.Run.insert1({"sample_id": "s1", "run_idx": 1, "acquired": "2026-01-01 10:00:00", "polarity": "positive"})
pipeline.Run.Spectrum.insert1({"sample_id": "s1", "run_idx": 1, "scan": 1, "rt": 1.0, "ms_level": 1,
                               "base_peak_mz": 100.5, "tic": 9.0})
run = dag.test()
print(json.dumps({"errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids),
                  "groups": groups, "state": str(run.state), "rows": len(pipeline.PeakSummary())}))
"""


def test_example_dags_folder(tmp_path):
    env = dict(os.environ, AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLE_DIR),
               JOINFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'lcms.db'}")
    env.pop("AIRFLOW_CONN_JOINFLOW_DEFAULT", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(EXAMPLE_DIR), str(EXAMPLE_DIR.parent)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == ["lcms"]  # .airflowignore keeps the other examples out
    assert result["groups"] == ["PeakSummary"]
    assert result["state"] == "success" and result["rows"] == 1
