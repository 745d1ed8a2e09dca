"""The LC-MS pipeline as a Prefect flow (prefect-joinflow).

    pip install prefect-joinflow                 # pulls joinflow and prefect
    python examples/lcms/prefect_flow.py --once  # one flow run now
    python examples/lcms/prefect_flow.py         # serve: a deployment run every hour

The database comes from joinflow's usual settings (``JOINFLOW_DATABASE_URL``, ``dj.config``,
``joinflow.toml``; e.g. ``export JOINFLOW_DATABASE_URL=sqlite:///$PWD/joinflow.db``) or, with
``LCMS_DATABASE_BLOCK`` set, from that saved ``prefect_joinflow.JoinflowDatabase`` block: no
credentials in code.  With none of them the flow run fails: a flow never falls back to a new
``joinflow.db`` in whatever directory its worker runs in.  The raw
files that ``Acquisition`` reads are simulated into ``$LCMS_RAW_DIR`` (default: a temporary
folder; workers on several machines need a shared one).
"""

import os
import sys
from pathlib import Path

from prefect_joinflow import joinflow_flow

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the steps are "pipeline:Class": importable in every worker
    sys.path.insert(0, str(HERE))

flow = joinflow_flow(
    "pipeline",                     # imported when the flow runs, after the database block is applied
    name="lcms",
    batch_size=100,
    retries={"Acquisition": 2},     # Prefect task retries per table (reading raw files is the flaky
                                    # step); a retry re-pends its keys' errors
    retry_delay_seconds=30,
    database_block=os.environ.get("LCMS_DATABASE_BLOCK"),
)

if __name__ == "__main__":
    if "--once" in sys.argv:
        print(flow())
    else:
        flow.serve(name="lcms-hourly", cron="0 * * * *")
