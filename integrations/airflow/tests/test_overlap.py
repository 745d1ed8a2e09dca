"""Overlapping runs: two workers planning and populating the same keys compute each key once."""

from __future__ import annotations

import os
import subprocess
import sys

WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
from joinflow_airflow import plan_work, populate_work
for table in ("Spikes", "Quality"):
    step = sys.argv[2] + ":" + table
    for work in plan_work(step, batch_size=2, conn_id=None):
        populate_work(work, conn_id=None, try_number=1)
"""


def test_overlapping_runs_compute_each_key_once(pipeline_module):
    pm = pipeline_module
    pm.add([1, 2, 3, 4])
    env = dict(os.environ, JF_TEST_MAKE_DELAY="0.05")
    env.pop("JOINFLOW_DATABASE_URL", None)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(pm.tmp_path), pm.name], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)
    calls = pm.calls()
    assert set(calls) == pm.expected([1, 2, 3, 4], tables=("Spikes", "Quality"))
    assert all(n == 1 for n in calls.values()), calls
