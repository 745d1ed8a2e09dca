"""Event-driven deployments: run a deployment when an upstream table has been populated.

Every flow run sends ``joinflow.table.populated`` (or ``joinflow.table.failed``) per table, with
resource ``joinflow.table.<schema>.<table>``.  :func:`populated_trigger` is a Prefect
``DeploymentEventTrigger`` on that event for one table:

    downstream = joinflow_flow("my_lab.pipeline", select="Summary+", name="lab-downstream")
    downstream.serve(name="after-spikes", triggers=[populated_trigger("my_lab.pipeline:Spikes")])

Trigger a selection from a table outside it: a flow triggered by an event of its own tables
would trigger itself again.
"""

from __future__ import annotations

from typing import Any

from prefect.events import DeploymentEventTrigger

POPULATED = "joinflow.table.populated"


def table_resource_id(full_table_name: str) -> str:
    """The event resource of a table: ``joinflow.table.<schema>.<table>`` (no quoting)."""
    return "joinflow.table." + "".join(c for c in full_table_name if c not in '`"[]')


def populated_trigger(table: Any, *, event: str = POPULATED, **trigger_options: Any) -> DeploymentEventTrigger:
    """A trigger that runs the deployment each time ``table`` is reported populated.

    ``table``: a table class, a step name ``"module:Class"`` (imported now, to read its full
    name), or a full table name (``"lab"."__spikes"`` or ``lab.__spikes``).
    ``trigger_options`` go to ``DeploymentEventTrigger`` (``parameters=``, ``within=``,
    ``threshold=``, ``name=``...).
    """
    if isinstance(table, str) and ":" in table:
        from joinflow.pipeline import load_step

        table = load_step(table).full_table_name
    elif not isinstance(table, str):
        table = table.full_table_name
    options = {"name": f"after {table_resource_id(table).removeprefix('joinflow.table.')}", **trigger_options}
    return DeploymentEventTrigger(expect={event}, match={"prefect.resource.id": table_resource_id(table)}, **options)
