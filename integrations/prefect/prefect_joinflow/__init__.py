"""Prefect adapter for joinflow: Prefect 3 flows generated from a pipeline's foreign-key graph.

    from prefect_joinflow import joinflow_flow
    flow = joinflow_flow("my_lab.pipeline", batch_size=100, retries=2)
    flow.serve(name="lab-hourly", cron="0 * * * *")

Built on ``joinflow.pipeline`` only; exactly-once per key comes from joinflow's job table.
"""

from .blocks import JoinflowDatabase, apply_database_block
from .triggers import populated_trigger
from .flows import JoinflowFlow, JoinflowFlowError, JoinflowMakeError, joinflow_flow, plan_step, populate_step

__all__ = [
    "JoinflowDatabase",
    "JoinflowFlow",
    "JoinflowFlowError",
    "JoinflowMakeError",
    "apply_database_block",
    "joinflow_flow",
    "plan_step",
    "populate_step",
    "populated_trigger",
]
