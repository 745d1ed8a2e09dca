"""The example dags folder (examples/lcms) parses cleanly and runs with dag.test().

The example DAG is built from its manifest (examples/lcms/pipeline.json): parsing it must
import no pipeline module and make no database round trip, even with an unreachable database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import conftest

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "lcms"

SCRIPT = """
import json, sys
import sqlalchemy
from airflow.dag_processing.dagbag import DagBag
statements = []
sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute",
                        lambda conn, cursor, sql, *a: statements.append(str(conn.engine.url)))
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.get_dag("lcms")
parse_queries = [u for u in statements if "lcms" in u]  # the joinflow database, not Airflow's
imported_at_parse = "lcms.pipeline" in sys.modules
groups = sorted(dag.task_group.children) if dag else None
sys.path.insert(0, sys.argv[2])
from lcms import pipeline
pipeline.Sample.insert1({"sample_id": "s1", "organism": "human"})
pipeline.Run.insert1({"sample_id": "s1", "run_idx": 1, "ms": "orbi1", "acquired": "2026-01-01 10:00:00",
                      "polarity": "positive"})
from joinflow.pipeline import Pipeline
live = Pipeline(pipeline).to_manifest()
saved = json.load(open(sys.argv[1] + "/pipeline.json"))
stale = [k for k in ("tables", "steps", "schemas", "modules") if live[k] != saved[k]]
run = dag.test()
print(json.dumps({"errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids),
                  "groups": groups, "state": str(run.state), "rows": len(pipeline.PeakSummary()),
                  "parse_queries": len(parse_queries), "imported_at_parse": imported_at_parse, "stale": stale}))
"""


def test_example_dags_folder(tmp_path):
    env = dict(os.environ, AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLE_DIR), LCMS_RAW_DIR=str(tmp_path / "raw"),
               # the file name the committed manifest names (a task refuses any other database)
               JOINFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'joinflow.db'}")
    env.pop("AIRFLOW_CONN_JOINFLOW_DEFAULT", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(EXAMPLE_DIR), str(EXAMPLE_DIR.parent)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == ["lcms"]  # .airflowignore keeps the other examples out
    assert result["groups"] == ["Acquisition", "Centroid", "DetectedPeaks", "PeakSummary"]
    assert result["state"] == "success" and result["rows"] == 1
    assert result["parse_queries"] == 0 and result["imported_at_parse"] is False
    # the committed manifest describes the example pipeline as it is now
    assert result["stale"] == [], ("examples/lcms/pipeline.json is stale: run `python -m joinflow.pipeline manifest "
                                   "lcms.pipeline -o lcms/pipeline.json --url sqlite:///joinflow.db` in examples/")


def test_example_dags_folder_parses_with_an_unreachable_database(tmp_path):
    """`airflow dags list-import-errors` is clean with the joinflow database out of reach."""
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"
    env = dict(os.environ, AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLE_DIR), JOINFLOW_DATABASE_URL=unreachable,
               AIRFLOW_CONN_JOINFLOW_DEFAULT=json.dumps({"conn_type": "joinflow", "extra": {"url": unreachable}}))
    airflow = Path(sys.executable).with_name("airflow")
    for args, check in ((["list-import-errors"], lambda out: out == []),
                        (["list"], lambda out: [d["dag_id"] for d in out] == ["lcms"])):
        proc = subprocess.run([str(airflow), "dags", *args, "--local", "-o", "json"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("[")))
        assert check(out), (args, out)
