"""Airflow 3 adapter for joinflow: a DAG per pipeline, a TaskGroup per computed table.

    from joinflow_airflow import JoinflowDag
    import my_pipeline

    dag = JoinflowDag(dag_id="lcms", pipeline=my_pipeline, schedule="@hourly",
                      batch_size=100, conn_id="joinflow_default")
"""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "joinflow-airflow",
        "name": "joinflow",
        "description": "joinflow relational pipelines as Airflow DAGs (connection type `joinflow`).",
        "versions": [__version__],
        "connection-types": [
            {"hook-class-name": "joinflow_airflow.hooks.JoinflowHook", "connection-type": "joinflow"},
        ],
    }


def __getattr__(name: str):  # keep `get_provider_info` import light: Airflow calls it often
    if name in ("JoinflowDag", "joinflow_dag", "JoinflowMakeError", "JoinflowManifestError", "pipeline_assets", "table_asset",
                "plan_work", "populate_work", "report_step", "work_label", "JoinflowTaskGroup",
                "joinflow_task_group", "plan_workers", "populate_worker", "populate_options"):
        from . import dag

        return getattr(dag, name)
    if name in ("JoinflowHook", "apply_url", "url_from_connection"):
        from . import hooks

        return getattr(hooks, name)
    if name in ("JoinflowPendingSensor", "JoinflowPendingTrigger"):
        from . import sensors

        return getattr(sensors, name)
    raise AttributeError(name)


__all__ = ["JoinflowDag", "joinflow_dag", "JoinflowTaskGroup", "joinflow_task_group", "JoinflowHook", "JoinflowMakeError", "JoinflowManifestError", "get_provider_info",
           "pipeline_assets", "table_asset", "JoinflowPendingSensor", "JoinflowPendingTrigger"]
