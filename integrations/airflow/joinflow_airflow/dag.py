"""An Airflow 3 DAG generated from a joinflow pipeline's foreign-key graph.

Per Imported/Computed table one TaskGroup ``<Table>``:

* ``plan``     returns small work descriptors: ``{"step", "batch", "keys"}`` key batches, or,
               when the batches would exceed ``[core] max_map_length``, hash shards
               ``{"step", "shard", "nshards"}``;
* ``populate`` mapped over them (``.expand``): rebuilds the step from its importable name
               (``load_step``) and populates exactly that work through the job table, so
               overlapping runs and retries never compute a key twice;
* ``report``   the table's status (done / pending / error ...), logged, returned to XCom
               and attached to the table's Asset event (outlets: the table and its parts).

Task groups depend on each other as the computed tables do through foreign keys.  Tasks
carry only step names, keys and a connection id, never live objects, so any executor works.
"""

from __future__ import annotations

import importlib
import logging
import math
import types
from typing import Any, Iterable

from airflow.sdk import DAG, Asset, TaskGroup, get_current_context, task
from joinflow.pipeline import Pipeline, Step, TableNode, load_step

from .hooks import JoinflowHook, apply_url

log = logging.getLogger(__name__)

DEFAULT_MAX_MAP_LENGTH = 1024
MAP_INDEX_TEMPLATE = "{{ joinflow_label }}"


class JoinflowMakeError(RuntimeError):
    """Raised by a populate task whose keys failed in make() (errors are in the job table)."""


# -- helpers used at run time (importable; each worker resolves its own connection) -----------
def _load_step(name: str, conn_id: str | None) -> Step:
    apply_url(JoinflowHook(conn_id).get_url() if conn_id else None)
    return load_step(name)


def _max_map_length() -> int:
    try:
        from airflow.sdk import conf

        return conf.getint("core", "max_map_length", fallback=DEFAULT_MAX_MAP_LENGTH)
    except Exception:  # pragma: no cover - configuration not readable
        return DEFAULT_MAX_MAP_LENGTH


def _plain(value: Any) -> Any:
    """Key values as XCom-friendly Python scalars (numpy scalars -> Python)."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (str, bytes)) else value


def _key_text(key: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def work_label(work: dict) -> str:
    """Readable label of one work descriptor (the mapped task's map index in the UI)."""
    table = work["step"].rpartition(":")[2]
    if "shard" in work:
        return f"{table} shard {work['shard'] + 1}/{work['nshards']}"
    keys = work.get("keys") or []
    if not keys:
        return f"{table} (no keys)"
    span = _key_text(keys[0]) if len(keys) == 1 else f"{_key_text(keys[0])} .. {_key_text(keys[-1])}"
    return f"{table} [{span}] ({len(keys)} keys)"


def plan_work(step: str, batch_size: int = 100, conn_id: str | None = None,
              max_map_length: int | None = None) -> list[dict]:
    """The step's pending work as descriptors; never more than ``max_map_length`` of them."""
    s = _load_step(step, conn_id)
    limit = max_map_length or _max_map_length()
    batches = [[{k: _plain(v) for k, v in key.items()} for key in batch]
               for batch in s.pending_keys(max(1, int(batch_size)))]
    if len(batches) <= limit:
        work = [{"step": step, "batch": i, "keys": keys} for i, keys in enumerate(batches)]
    else:  # too many batches for one mapped task: hand out hash shards instead
        pending = sum(len(b) for b in batches)
        nshards = min(limit, math.ceil(pending / max(1, int(batch_size))))
        work = [{"step": step, "shard": d["shard"], "nshards": d["nshards"]} for d in s.plan(nshards)]
    log.info("joinflow plan %s: %d work item(s), %d pending key(s)", step, len(work),
             sum(len(b) for b in batches))
    return work


def populate_work(work: dict, conn_id: str | None = None, try_number: int | None = None) -> dict:
    """Populate one descriptor's keys through the job table; raise with the job-table errors.

    An Airflow retry (try number > 1) first re-pends the errors of these keys.
    """
    s = _load_step(work["step"], conn_id)
    retry = bool(try_number and try_number > 1)
    if "shard" in work:
        summary = s.run(shard=work["shard"], nshards=work["nshards"], retry_errors=retry)
    else:
        summary = s.run(work["keys"], retry_errors=retry)
    log.info("joinflow populate %s: %s", work_label(work), {k: v for k, v in summary.items() if k != "errors"})
    if summary["error_count"]:
        failed = [e["key"] for e in summary["errors"]]
        for err in s.errors(failed):
            log.error("joinflow make() failed for %s: %s\n%s", err["key"], err["error_message"],
                      err["error_stack"] or "")
        first = summary["errors"][0]
        more = f" (and {summary['error_count'] - 1} more)" if summary["error_count"] > 1 else ""
        raise JoinflowMakeError(
            f"{summary['table']}: make() failed for {summary['error_count']} key(s); key {first['key']}: "
            f"{first['error']}{more}. The errors are in the job table; an Airflow retry re-pends them.")
    return summary


def report_step(step: str, conn_id: str | None = None) -> dict:
    """The step's status from the job table and the table itself (not from task XComs)."""
    s = _load_step(step, conn_id)
    status = s.status()
    summary = {"step": step, "table": s.full_table_name, "rows": s.row_count(), **status}
    log.info("joinflow summary %s: %s", step, summary)
    return summary


# -- the Airflow task callables ----------------------------------------------------------------
def _plan_task(step: str, batch_size: int, conn_id: str | None) -> list[dict]:
    return plan_work(step, batch_size, conn_id)


def _populate_task(work: dict, conn_id: str | None) -> dict:
    context = get_current_context()
    context["joinflow_label"] = work_label(work)  # rendered by map_index_template
    return populate_work(work, conn_id, try_number=context["ti"].try_number)


def _report_task(step: str, conn_id: str | None) -> dict:
    summary = report_step(step, conn_id)
    context = get_current_context()
    events = context.get("outlet_events")
    if events is not None:
        for outlet in context["task"].outlets or ():
            if isinstance(outlet, Asset):
                events[outlet].extra = {k: v for k, v in summary.items() if isinstance(v, (int, str))}
    return summary


# -- building the DAG (parse time: graph metadata only, no key queries) ------------------------
def _as_pipeline(pipeline: Any, conn_id: str | None) -> Pipeline:
    if isinstance(pipeline, Pipeline):
        return pipeline
    items = list(pipeline) if isinstance(pipeline, (list, tuple)) else [pipeline]
    if any(isinstance(i, str) for i in items):  # import by name: bind to the hook's database first
        apply_url(JoinflowHook(conn_id).get_url() if conn_id else None)
        items = [importlib.import_module(i) if isinstance(i, str) else i for i in items]
    return Pipeline(*items)


def table_asset(node: TableNode | Step) -> Asset:
    """The Airflow Asset of one joinflow table: name ``joinflow.<schema>.<table>``."""
    table = node.table
    conn = table.connection
    url = conn.url
    where = url.host or url.get_backend_name()  # sqlite: "sqlite" and the file's name
    db = (url.database or "").rsplit("/", 1)[-1] or "_"
    schema, name = table.database, table.table_name
    return Asset(name=f"joinflow.{schema}.{name}", uri=f"joinflow://{where}/{db}/{schema}/{name}",
                 group="joinflow")


def pipeline_assets(pipeline: Any) -> dict[str, Asset]:
    """Every table of the pipeline (sources and parts included) as an Asset, by ``module:Class``."""
    p = _as_pipeline(pipeline, None)
    return {node.name: table_asset(node) for node in p.nodes}


def _group_ids(steps: Iterable[Step]) -> dict[str, str]:
    steps = list(steps)
    short = [s.cls.__name__ for s in steps]
    ids = {}
    for s in steps:
        gid = s.cls.__name__
        if short.count(gid) > 1:
            gid = f"{s.table.database}__{gid}"
        ids[s.name] = gid
    return ids


def joinflow_dag(
    dag_id: str,
    pipeline: Any,
    schedule: Any = None,
    batch_size: int = 100,
    conn_id: str | None = "joinflow_default",
    *,
    pool: str | None = None,
    populate_retries: int | None = None,
    wait_for_pending: bool | dict = False,
    **dag_kwargs: Any,
) -> DAG:
    """An Airflow DAG running a joinflow pipeline's computed tables in foreign-key order.

    ``pipeline``: a ``joinflow.pipeline.Pipeline``, a module / schema / table classes, an
    importable module name, or a list of these.  ``batch_size``: keys per mapped populate
    task (past ``[core] max_map_length`` batches, the plan switches to hash shards).
    ``conn_id``: Airflow connection of type ``joinflow`` (falls back to
    ``JOINFLOW_DATABASE_URL``) applied in every task before the steps are imported.
    ``pool`` caps concurrent database sessions; ``populate_retries`` overrides
    ``default_args["retries"]`` for the populate tasks.  Other keyword arguments go to
    ``wait_for_pending``: put a ``JoinflowPendingSensor`` on the entry steps (those with no
    upstream step) before everything; ``True`` or the sensor's options (default
    ``soft_fail=True, mode="reschedule"``: no new keys skips the run).  Other keyword arguments go to
    ``airflow.sdk.DAG`` (``start_date``, ``catchup``, ``default_args``, ``tags``, ...).
    """
    p = _as_pipeline(pipeline, conn_id)
    assets = {node.name: table_asset(node) for node in p.nodes}
    parts_of = {node.name: [assets[n.name] for n in p.nodes if n.full_table_name in node.parts]
                for node in p.nodes}
    group_ids = _group_ids(p.steps)
    dag_kwargs.setdefault("tags", ["joinflow"])
    dag_kwargs.setdefault("doc_md", "joinflow pipeline: " + ", ".join(group_ids.values()))
    populate_options: dict[str, Any] = {"map_index_template": MAP_INDEX_TEMPLATE}
    if pool:
        populate_options["pool"] = pool
    if populate_retries is not None:
        populate_options["retries"] = populate_retries

    with DAG(dag_id, schedule=schedule, **dag_kwargs) as dag:
        groups: dict[str, TaskGroup] = {}
        for s in p.steps:
            with TaskGroup(group_ids[s.name], tooltip=f"{s.name} -> {s.full_table_name}") as group:
                plan = task(_plan_task, task_id="plan")(s.name, batch_size, conn_id)
                populate = task(_populate_task, task_id="populate", **populate_options) \
                    .partial(conn_id=conn_id).expand(work=plan)
                report = task(_report_task, task_id="report", trigger_rule="none_failed",
                              outlets=[assets[s.name], *parts_of[s.name]])(s.name, conn_id)
                populate >> report
            groups[s.name] = group
        for s in p.steps:
            for up in s.upstream:
                if up in groups:
                    groups[up] >> groups[s.name]
        if wait_for_pending:
            from .sensors import JoinflowPendingSensor

            options = {"soft_fail": True, "mode": "reschedule", "poke_interval": 60, "timeout": 3600}
            options.update(wait_for_pending if isinstance(wait_for_pending, dict) else {})
            entry = [s for s in p.steps if not any(u in groups for u in s.upstream)]
            sensor = JoinflowPendingSensor(task_id="wait_for_pending", steps=[s.name for s in entry],
                                           conn_id=conn_id, **options)
            for s in p.steps:
                sensor >> groups[s.name]
    return dag


# The name proposed in the issue, mirroring astronomer-cosmos's DbtDag (a factory function).
JoinflowDag = joinflow_dag
