"""Wait for pending keys on a pipeline's entry steps (poke, reschedule or deferrable)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, AsyncIterator, Sequence

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from .hooks import JoinflowHook, apply_url


def pending_by_step(steps: Sequence[str], conn_id: str | None) -> dict[str, int]:
    """Pending-key count of each step (one anti-join each), rebuilt from importable names."""
    from joinflow.pipeline import load_step

    apply_url(JoinflowHook(conn_id).get_url() if conn_id else None)
    return {name: load_step(name).pending_count() for name in steps}


class JoinflowPendingTrigger(BaseTrigger):
    """Polls the steps' pending counts in the triggerer until one has work."""

    def __init__(self, steps: Sequence[str], conn_id: str | None = None, poll_interval: float = 60.0):
        super().__init__()
        self.steps = list(steps)
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("joinflow_airflow.sensors.JoinflowPendingTrigger",
                {"steps": self.steps, "conn_id": self.conn_id, "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            counts = await asyncio.to_thread(pending_by_step, self.steps, self.conn_id)
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
                 deferrable: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.steps = list(steps)
        self.conn_id = conn_id
        self.deferrable = deferrable
        self._counts: dict[str, int] = {}

    def poke(self, context) -> bool:
        self._counts = pending_by_step(self.steps, self.conn_id)
        self.log.info("joinflow pending keys: %s", self._counts)
        return any(self._counts.values())

    def execute(self, context) -> Any:
        if not self.deferrable:
            super().execute(context)
            return self._counts
        if self.poke(context):
            return self._counts
        self.defer(trigger=JoinflowPendingTrigger(self.steps, self.conn_id, self.poke_interval),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context, event: dict | None = None) -> Any:
        return (event or {}).get("pending")
