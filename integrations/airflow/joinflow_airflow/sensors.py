"""Wait for pending keys on a pipeline's entry steps (poke, reschedule or deferrable)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, AsyncIterator, Sequence

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

def pending_by_step(steps: Sequence[str], conn_id: str | None, database: dict | None = None) -> dict[str, int]:
    """Pending-key count of each step (one anti-join each), rebuilt from importable names, on
    ``database`` only (the manifest's: another database or none configured fails)."""
    from .dag import _load_step

    return {name: _load_step(name, conn_id, database).pending_count() for name in steps}


class JoinflowPendingTrigger(BaseTrigger):
    """Polls the steps' pending counts in the triggerer until one has work."""

    def __init__(self, steps: Sequence[str], conn_id: str | None = None, poll_interval: float = 60.0,
                 database: dict | None = None):
        super().__init__()
        self.steps = list(steps)
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.database = database

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("joinflow_airflow.sensors.JoinflowPendingTrigger",
                {"steps": self.steps, "conn_id": self.conn_id, "poll_interval": self.poll_interval,
                 "database": self.database})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            counts = await asyncio.to_thread(pending_by_step, self.steps, self.conn_id, self.database)
            if any(counts.values()):
                yield TriggerEvent({"pending": counts})
                return
            await asyncio.sleep(self.poll_interval)


class JoinflowPendingSensor(BaseSensorOperator):
    """Succeeds when any of ``steps`` (``"module:Class"`` names) has pending keys.

    ``deferrable=True`` hands the polling to the triggerer (no worker slot held).  Returns
    the pending counts (XCom).  Usually ``soft_fail=True``: no new data skips the run.
    """

    template_fields = ("steps",)

    def __init__(self, *, steps: Sequence[str], conn_id: str | None = "joinflow_default",
                 deferrable: bool = False, database: dict | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.steps = list(steps)
        self.conn_id = conn_id
        self.database = database  # the manifest's database: refuse any other
        self.deferrable = deferrable
        self._counts: dict[str, int] = {}

    def poke(self, context) -> bool:
        self._counts = pending_by_step(self.steps, self.conn_id, self.database)
        self.log.info("joinflow pending keys: %s", self._counts)
        return any(self._counts.values())

    def execute(self, context) -> Any:
        if not self.deferrable:
            super().execute(context)
            return self._counts
        if self.poke(context):
            return self._counts
        self.defer(trigger=JoinflowPendingTrigger(self.steps, self.conn_id, self.poke_interval,
                                                          self.database),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context, event: dict | None = None) -> Any:
        return (event or {}).get("pending")
