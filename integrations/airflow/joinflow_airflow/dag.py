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

With ``mode="workers"`` the plan returns ``{"step", "worker", "nworkers"}`` instead and each
populate task pulls keys from the job table until none are left (or a time budget passes).
``joinflow_task_group`` (``JoinflowTaskGroup``) builds the same task groups inside a user's DAG;
``node_converters`` replace a table's tasks by the user's own operator.

Task groups depend on each other as the computed tables do through foreign keys.  Tasks
carry only step names, keys and a connection id, never live objects, so any executor works.

With ``manifest=`` (a JSON file written by ``python -m joinflow.pipeline manifest``) the DAG
is built from the manifest alone: parsing the DAG file imports no pipeline module and makes
no database round trip; the tasks import the modules and connect when they run.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

from airflow.sdk import DAG, Asset, TaskGroup, get_current_context, task
from typing import TYPE_CHECKING

from .hooks import resolve_database
from .manifest import JoinflowManifestError, load_manifest

if TYPE_CHECKING:  # joinflow itself is imported by the tasks (run time), never for a manifest DAG
    from joinflow.pipeline import Pipeline, Step, TableNode

log = logging.getLogger(__name__)

DEFAULT_MAX_MAP_LENGTH = 1024
MAP_INDEX_TEMPLATE = "{{ joinflow_label }}"


class JoinflowMakeError(RuntimeError):
    """Raised by a populate task whose keys failed in make() (errors are in the job table)."""


class JoinflowOpenErrors(RuntimeError):
    """Raised by a table's ``report`` task while keys of the table are in error (on every run,
    until an operator retries or ignores them), or when its plan or a populate task failed."""




# -- helpers used at run time (importable; each worker resolves its own connection) -----------
def _load_step(name: str, conn_id: str | None, database: dict | None = None) -> "Step":
    """The step, imported and bound in this worker after ``conn_id`` is applied, and checked to be
    on ``database`` (the manifest's): an unconfigured worker or another database fails the task
    without a retry (``AirflowFailException``), before any work and without creating anything."""
    from joinflow.pipeline import WrongDatabaseError, load_step

    setting = resolve_database(conn_id)
    try:
        return load_step(name, database, setting=setting)
    except WrongDatabaseError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


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
    if "worker" in work:
        return f"{table} worker {work['worker'] + 1}/{work['nworkers']}"
    if "shard" in work:
        return f"{table} shard {work['shard'] + 1}/{work['nshards']}"
    keys = work.get("keys") or []
    if not keys:
        return f"{table} (no keys)"
    span = _key_text(keys[0]) if len(keys) == 1 else f"{_key_text(keys[0])} .. {_key_text(keys[-1])}"
    return f"{table} [{span}] ({len(keys)} keys)"


def check_table(s: "Step", expected_table: str | None) -> None:
    """Fail clearly when a manifest's ``schema.table`` is not the step's table any more."""
    if not expected_table:
        return
    table = s.table
    actual = f"{table.database}.{table.table_name}"
    if actual != expected_table:
        raise JoinflowManifestError(
            f"{s.name}: the DAG's manifest says table {expected_table}, the code declares {actual}. "
            "The manifest is stale: regenerate it (python -m joinflow.pipeline manifest MODULE -o FILE).")


def table_rows(s: "Step") -> dict[str, int]:
    """Rows of the step's table and of each of its part tables, by full table name."""
    return {s.full_table_name: s.row_count(), **s.part_row_counts()}


def _error_actions(s: "Step", step: str, retry_errors: bool, ignore_errors: bool) -> None:
    """The DAG's ``retry_errors`` (re-pend the keys in error) or ``ignore_errors`` (mark them ignored)."""
    if retry_errors:
        log.info("joinflow plan %s: %d key(s) in error made pending again", step, s.retry_errors())
    elif ignore_errors:
        errors = s.status()["error_keys"]
        while errors:
            s.ignore(errors)
            log.warning("joinflow plan %s: ignoring %d key(s) in error: %s", step, len(errors), errors)
            errors = s.status()["error_keys"]


def plan_work(step: str, batch_size: int = 100, conn_id: str | None = None,
              max_map_length: int | None = None, expected_table: str | None = None,
              retry_errors: bool = False, ignore_errors: bool = False,
              database: dict | None = None) -> list[dict]:
    """The step's pending work as descriptors; never more than ``max_map_length`` of them.

    ``retry_errors`` first makes the step's keys in error pending again; ``ignore_errors``
    marks them ignored (the DAG's ``retry_errors`` / ``ignore_errors`` params).
    """
    s = _load_step(step, conn_id, database)
    check_table(s, expected_table)
    _error_actions(s, step, retry_errors, ignore_errors)
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


def populate_work(work: dict, conn_id: str | None = None, try_number: int | None = None,
                  database: dict | None = None) -> dict:
    """Populate one descriptor's keys through the job table; raise with the job-table errors.

    An Airflow retry (try number > 1) first re-pends the errors of these keys.
    """
    s = _load_step(work["step"], conn_id, database)
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


def report_step(step: str, conn_id: str | None = None, rows_before: dict | None = None,
                failed_tasks: int | None = None, work_count: int | None = None,
                database: dict | None = None) -> dict:
    """The step's status from the job table and the table itself (not from task XComs).

    ``rows_added`` (and ``part_rows_added``): rows in the table now minus ``rows_before``
    (counted by the plan task), so rows of a populate try that later failed or was retried
    count.  Raises :class:`JoinflowOpenErrors` while any key of the step is in error, when the
    plan failed (no ``rows_before``) or when ``failed_tasks`` populate tasks (of ``work_count``) failed.
    """
    s = _load_step(step, conn_id, database)
    status = s.status()
    rows_now = table_rows(s)
    before = rows_before or {}
    added = {t: n - before.get(t, n) for t, n in rows_now.items()}
    summary = {"step": step, "table": s.full_table_name, "rows": rows_now[s.full_table_name],
               "rows_added": added.pop(s.full_table_name),
               "part_rows_added": added, **{k: v for k, v in status.items() if k != "error_keys"},
               "error_keys": status["error_keys"]}
    log.info("joinflow summary %s: %s", step, summary)
    problems = []
    if rows_before is None:
        problems.append("its plan task failed (see its log)")
    if failed_tasks:
        problems.append(f"{failed_tasks} of {work_count or failed_tasks} populate task(s) failed")
    if status["error"]:
        shown = "; ".join(_key_text(k) for k in status["error_keys"][:5])
        more = f" and {status['error'] - 5} more" if status["error"] > 5 else ""
        problems.append(f"{status['error']} key(s) in error ({shown}{more}); see them with `joinflow jobs "
                        f"{step.partition(':')[0]}`. Retry them: trigger the DAG with the param "
                        "retry_errors=true (or clear the failed populate task); or trigger it with "
                        "ignore_errors=true to ignore them")
    if problems:
        raise JoinflowOpenErrors(f"{s.full_table_name}: " + "; ".join(problems) +
                                 f". This run added {summary['rows_added']} row(s); {status['pending']} key(s) pending.")
    return summary


# -- the Airflow task callables ----------------------------------------------------------------
# ``database``: the manifest's {"backend", "host", "name"} (no credentials): each task refuses to run
# on another database, or in a worker where no database is configured
def _plan_task(step: str, batch_size: int, conn_id: str | None, expected_table: str | None = None,
               database: dict | None = None) -> list[dict]:
    context = get_current_context()
    params = context.get("params") or {}
    work = plan_work(step, batch_size, conn_id, expected_table=expected_table,
                     retry_errors=bool(params.get("retry_errors")), ignore_errors=bool(params.get("ignore_errors")),
                     database=database)
    # the report subtracts these: rows added by every populate try, retried or failed ones included
    context["ti"].xcom_push(key="rows_before", value=table_rows(_load_step(step, conn_id, database)))
    return work


def _populate_task(work: dict, conn_id: str | None, database: dict | None = None) -> dict:
    context = get_current_context()
    context["joinflow_label"] = work_label(work)  # rendered by map_index_template
    return populate_work(work, conn_id, try_number=context["ti"].try_number, database=database)


def _report_task(step: str, conn_id: str | None, database: dict | None = None) -> dict:
    """Fails while keys are in error; skipped (no Asset event) when the run inserted nothing."""
    from airflow.sdk.exceptions import AirflowSkipException

    context = get_current_context()
    ti = context["ti"]
    group = context["task"].task_id.rpartition(".")[0]
    prefix = f"{group}." if group else ""
    states = _group_states(ti, group)
    log.info("joinflow report %s: task states %s", step, states)
    work = ti.xcom_pull(task_ids=f"{prefix}plan")
    rows_before = ti.xcom_pull(task_ids=f"{prefix}plan", key="rows_before")
    if rows_before is None and states is not None and states.get(f"{prefix}plan") == "skipped":
        raise AirflowSkipException(f"{step}: the plan was skipped (no new data); nothing to report.")
    failed = None
    if states is not None:
        failed = sum(1 for task_id, state in states.items()
                     if (task_id == f"{prefix}populate" or task_id.startswith(f"{prefix}populate_"))
                     and state in ("failed", "upstream_failed"))
    summary = report_step(step, conn_id, rows_before=rows_before, failed_tasks=failed,
                          work_count=None if work is None else len(work), database=database)
    if not summary["rows_added"] and not any(summary["part_rows_added"].values()):
        raise AirflowSkipException(f"{summary['table']}: this run inserted no rows; no Asset event.")
    events = context.get("outlet_events")
    if events is not None:
        for outlet in context["task"].outlets or ():
            if isinstance(outlet, Asset):
                own = _outlet_rows(outlet, summary)
                events[outlet].extra = {**{k: v for k, v in summary.items() if isinstance(v, (int, str))}, **own}
    return summary


def _group_states(ti, group: str) -> dict | None:
    """States of this run's tasks of the task group (``None`` when Airflow cannot say)."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        found = RuntimeTaskInstance.get_task_states(dag_id=ti.dag_id, task_group_id=group or None,
                                                    run_ids=[ti.run_id])
        return dict(found.get(ti.run_id) or {})
    except Exception as exc:  # pragma: no cover - an Airflow without the call
        log.debug("task states unavailable: %s", exc)
        return None


def _outlet_rows(outlet: Asset, summary: dict) -> dict:
    """A part table's Asset event carries the part's own rows, not its master's."""
    name = outlet.name.removeprefix("joinflow.")
    for table, added in summary["part_rows_added"].items():
        if table.replace("`", "").replace('"', "") == name:
            return {"table": table, "rows_added": added, "master": summary["table"]}
    return {}


# -- workers mode: N tasks per table pull keys from the job table -----------------------------
def _slots(context: dict | None = None) -> int:
    """Default worker count: ``[core] parallelism``, capped by the DAG's ``max_active_tasks``."""
    try:
        from airflow.sdk import conf

        slots = conf.getint("core", "parallelism", fallback=32)
    except Exception:  # pragma: no cover - configuration not readable
        slots = 32
    dag = (context or {}).get("dag")
    active = getattr(dag, "max_active_tasks", None)
    if isinstance(active, int) and active > 0:
        slots = min(slots, active)
    return max(1, slots)


def plan_workers(step: str, workers: int | None = None, conn_id: str | None = None,
                 expected_table: str | None = None, context: dict | None = None,
                 database: dict | None = None) -> list[dict]:
    """``{"step", "worker", "nworkers", "pending"}`` descriptors: ``workers`` (default: the free
    slots, see :func:`_slots`) but never more than the pending keys; none when nothing is pending.
    The DAG's ``retry_errors`` / ``ignore_errors`` params act first, as in :func:`plan_work`."""
    s = _load_step(step, conn_id, database)
    check_table(s, expected_table)
    params = (context or {}).get("params") or {}
    _error_actions(s, step, bool(params.get("retry_errors")), bool(params.get("ignore_errors")))
    pending = s.pending_count()
    n = min(int(workers) if workers else _slots(context), pending)
    log.info("joinflow plan %s: %d worker(s) for %d pending key(s)", step, n, pending)
    return [{"step": step, "worker": i, "nworkers": n, "pending": pending} for i in range(n)]


def populate_worker(work: dict, conn_id: str | None = None, try_number: int | None = None,
                    time_budget: float | None = None, database: dict | None = None) -> dict:
    """Make the step's pending keys through the job table until none are left to claim (or
    ``time_budget`` seconds have passed; the rest stay pending).  Other workers of the same step
    do the same at the same time: the job table gives each key to one of them.  Raises
    :class:`JoinflowMakeError` when keys this worker made failed.  An Airflow retry (try number
    > 1) first re-pends the step's errors."""
    s = _load_step(work["step"], conn_id, database)
    retry = bool(try_number and try_number > 1)
    start = time.monotonic()
    if not time_budget:
        summary = s.run(retry_errors=retry, count_pending=False)
        made, errors = summary["rows_added"], list(summary["errors"])
    else:
        made, errors, chunk = 0, [], 1
        while True:
            began = time.monotonic()
            part = s.run(retry_errors=retry, max_calls=chunk, count_pending=False)
            retry = False
            done = part["rows_added"] + part["error_count"]
            made += part["rows_added"]
            errors += part["errors"]
            left = time_budget - (time.monotonic() - start)
            if done < chunk or left <= 0:  # nothing more to claim, or out of time
                break
            per_key = (time.monotonic() - began) / max(done, 1)
            chunk = max(1, min(10_000, int(left / 2 / max(per_key, 1e-4))))  # at most half the time left
    summary = {"step": work["step"], "table": s.full_table_name, "rows_added": made, "errors": errors,
               "error_count": len(errors), "duration": round(time.monotonic() - start, 3)}
    log.info("joinflow populate %s: %s", work_label(work), {k: v for k, v in summary.items() if k != "errors"})
    if errors:
        for err in s.errors([e["key"] for e in errors]):
            log.error("joinflow make() failed for %s: %s\n%s", err["key"], err["error_message"],
                      err["error_stack"] or "")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise JoinflowMakeError(
            f"{summary['table']}: make() failed for {len(errors)} key(s); key {errors[0]['key']}: "
            f"{errors[0]['error']}{more}. The errors are in the job table; an Airflow retry re-pends them.")
    return summary


def _plan_workers_task(step: str, workers: int | None, conn_id: str | None,
                       expected_table: str | None = None, database: dict | None = None) -> list[dict]:
    context = get_current_context()
    work = plan_workers(step, workers, conn_id, expected_table, context=context, database=database)
    # the report subtracts these: rows added by every worker, failed ones included
    context["ti"].xcom_push(key="rows_before", value=table_rows(_load_step(step, conn_id, database)))
    return work


def _worker_task(work: dict, conn_id: str | None, time_budget: float | None = None,
                 database: dict | None = None) -> dict:
    context = get_current_context()
    context["joinflow_label"] = work_label(work)
    return populate_worker(work, conn_id, try_number=context["ti"].try_number, time_budget=time_budget,
                           database=database)


# -- building the DAG (parse time: graph metadata only, no key queries) ------------------------
# The DAG is built from the manifest dict in both forms: with ``manifest=`` it is read from
# the file (no joinflow import, no database); with ``pipeline=`` it is ``Pipeline.to_manifest()``.
def _as_pipeline(pipeline: Any, conn_id: str | None, selection: dict | None = None) -> "Pipeline":
    from joinflow.pipeline import Pipeline

    selection = selection or {}
    if isinstance(pipeline, Pipeline):
        return pipeline.subset(**selection) if selection else pipeline
    items = list(pipeline) if isinstance(pipeline, (list, tuple)) else [pipeline]
    if any(isinstance(i, str) for i in items):  # import by name: bind to the hook's database first
        from joinflow.pipeline import expect_database

        setting = resolve_database(conn_id)
        with expect_database(what="JoinflowDag", setting=setting):  # never joinflow's defaults
            items = [importlib.import_module(i) if isinstance(i, str) else i for i in items]
    return Pipeline(*items, **selection)


def _graph(pipeline: Any, manifest: Any, conn_id: str | None, depth: int, selection: dict | None = None) -> dict:
    if (pipeline is None) == (manifest is None):
        raise TypeError("JoinflowDag: give exactly one of pipeline= (modules) or manifest= (a manifest file).")
    selection = {k: v for k, v in (selection or {}).items() if v is not None}
    if manifest is not None:
        graph = load_manifest(_manifest_source(manifest, depth + 1))
        if selection:  # selecting needs joinflow's selector logic (an import at parse time)
            from joinflow.pipeline import Pipeline

            graph = Pipeline.from_manifest(graph, **selection).to_manifest()
        return graph
    return _as_pipeline(pipeline, conn_id, selection).to_manifest()


def populate_options(settings: dict, defaults: dict) -> dict:
    """Operator arguments of a step's populate task: ``defaults`` overridden by its settings.

    ``retries`` -> ``retries``, ``retry_delay`` -> ``retry_delay``, ``timeout`` ->
    ``execution_timeout``, ``pool``, ``queue``, ``priority`` -> ``priority_weight``;
    ``airflow.<argument>`` settings are passed as they are.
    """
    options = dict(defaults)
    for key, argument in (("retries", "retries"), ("pool", "pool"), ("queue", "queue"),
                          ("priority", "priority_weight")):
        if key in settings:
            options[argument] = settings[key]
    if "retry_delay" in settings:
        options["retry_delay"] = timedelta(seconds=settings["retry_delay"])
    if "timeout" in settings:
        options["execution_timeout"] = timedelta(seconds=settings["timeout"])
    for key, value in settings.items():
        if key.startswith("airflow."):
            options[key.partition(".")[2]] = value
    return options


def _asset(schema: str, name: str, where: tuple[str, str]) -> Asset:
    return Asset(name=f"joinflow.{schema}.{name}", uri=f"joinflow://{where[0]}/{where[1]}/{schema}/{name}",
                 group="joinflow")


def _where(graph: dict) -> tuple[str, str]:
    """(host, database) of the pipeline's database, for Asset URIs (sqlite: "sqlite", file name)."""
    db = graph.get("database") or {}
    return db.get("host") or db.get("backend") or "_", db.get("name") or "_"


def table_asset(node: "TableNode | Step") -> Asset:
    """The Airflow Asset of one joinflow table: name ``joinflow.<schema>.<table>``."""
    table = node.table
    url = table.connection.url
    where = url.host or url.get_backend_name()
    db = (url.database or "").replace(os.sep, "/").rsplit("/", 1)[-1] or "_"
    return _asset(table.database, table.table_name, (where, db))


def pipeline_assets(pipeline: Any = None, *, manifest: Any = None) -> dict[str, Asset]:
    """Every table of the pipeline (sources and parts included) as an Asset, by ``module:Class``.

    With ``manifest=`` (path or dict) no module is imported and no database is touched, so
    another DAG file can use ``schedule=[assets[...]]`` cheaply.
    """
    graph = _graph(pipeline, manifest, None, 1)
    where = _where(graph)
    return {t["name"]: _asset(t["schema"], t["table_name"], where) for t in graph["tables"]}


def _class_name(step_name: str) -> str:
    return step_name.rpartition(":")[2].rpartition(".")[2]


def _group_ids(steps: list[dict], tables: dict[str, dict]) -> dict[str, str]:
    short = [_class_name(s["name"]) for s in steps]
    ids = {}
    for s in steps:
        gid = _class_name(s["name"])
        if short.count(gid) > 1:
            gid = f"{tables[s['name']]['schema']}__{gid}"
        ids[s["name"]] = gid
    return ids


def _manifest_source(manifest: Any, depth: int) -> Any:
    """A relative manifest path is relative to the DAG file that names it (not the cwd)."""
    if isinstance(manifest, dict) or os.path.isabs(os.fspath(manifest)):
        return manifest
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:
        frame = None
    caller = frame.f_globals.get("__file__") if frame is not None else None
    if caller:
        candidate = Path(caller).resolve().parent / manifest
        if candidate.exists() or not Path(manifest).exists():
            return candidate
    return manifest


_MODES = ("batches", "workers")


def _check_options(mode: str, workers: Any, time_budget: Any, node_converters: Any, operator_args: Any) -> None:
    """Parse-time checks of the building options (a clear import error, not a task failure later)."""
    if mode not in _MODES:
        raise ValueError(f"joinflow: mode={mode!r} is not a mode; use 'batches' (readable key batches, the "
                         "default) or 'workers' (N tasks per table pulling keys from the job table).")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"joinflow: workers={workers!r} must be a positive integer (mapped tasks per table) "
                         "or None (from [core] parallelism and the DAG's max_active_tasks).")
    if time_budget is not None and (isinstance(time_budget, bool) or not isinstance(time_budget, (int, float))
                                    or time_budget <= 0):
        raise ValueError(f"joinflow: time_budget={time_budget!r} must be a positive number of seconds or None.")
    if node_converters is not None and not isinstance(node_converters, dict):
        raise TypeError("joinflow: node_converters must be a dict {selector or table class: callable}.")
    for key, fn in (node_converters or {}).items():
        if not callable(fn):
            raise TypeError(f"joinflow: node_converters[{key!r}] is {fn!r}, not a callable "
                            "(node, **context) -> operator or None.")
    if operator_args is not None and not isinstance(operator_args, dict):
        raise TypeError("joinflow: operator_args must be a dict of operator arguments.")


def _node_matches(key: Any, step: dict, table: dict) -> bool:
    """Does a ``node_converters`` key name this step?  A table class; ``module:Class``; ``Class``;
    ``schema:NAME``; ``tier:TIER``."""
    name = step["name"]
    if isinstance(key, type):
        return f"{key.__module__}:{key.__qualname__}" == name
    if not isinstance(key, str):
        raise TypeError(f"joinflow: node_converters key {key!r} is neither a table class nor a selector string.")
    if key.startswith("schema:"):
        return table.get("schema") == key[len("schema:"):]
    if key.startswith("tier:"):
        return str(table.get("tier", "")).lower() == key[len("tier:"):].lower()
    return key == name or key == _class_name(name)


def _converter_for(node_converters: dict | None, step: dict, table: dict):
    """The converter of a step: an exact name or class wins over schema/tier selectors."""
    found = [(k, fn) for k, fn in (node_converters or {}).items() if _node_matches(k, step, table)]
    if not found:
        return None
    exact = [fn for k, fn in found if not (isinstance(k, str) and k.startswith(("schema:", "tier:")))]
    return (exact or [fn for _, fn in found])[0]


def _ends(made: Any) -> tuple[Any, Any]:
    """(first, last) of what a node converter returned: an operator, or a (first, last) pair."""
    if isinstance(made, (tuple, list)):
        if len(made) != 2:
            raise TypeError("joinflow: a node converter returns an operator, a (first, last) pair or None.")
        return made[0], made[1]
    return made, made


def _build(graph: dict, *, conn_id: str | None, batch_size: int, pool: str | None,
           populate_retries: int | None, wait_for_pending: bool | dict, operator_args: dict | None,
           node_converters: dict | None, mode: str, workers: int | None,
           time_budget: float | None) -> dict[str, TaskGroup]:
    """One TaskGroup per step in the current DAG / TaskGroup context, wired in foreign-key order.

    Shared by :func:`joinflow_dag` (the whole DAG) and :func:`joinflow_task_group` (inside a
    user's DAG).  Returns the task groups by step name.
    """
    tables = {t["name"]: t for t in graph["tables"]}
    by_full = {t["full_table_name"]: t["name"] for t in graph["tables"]}
    steps = graph["steps"]
    database = graph.get("database")  # every task checks that it runs on this database
    where = _where(graph)
    assets = {name: _asset(t["schema"], t["table_name"], where) for name, t in tables.items()}
    group_ids = _group_ids(steps, tables)
    step_names = {s["name"] for s in steps}
    populate_defaults: dict[str, Any] = {"map_index_template": MAP_INDEX_TEMPLATE}
    if pool:
        populate_defaults["pool"] = pool
    if populate_retries is not None:
        populate_defaults["retries"] = populate_retries
    populate_defaults.update(operator_args or {})

    plan_task = task(_plan_task, task_id="plan")
    plan_workers_task = task(_plan_workers_task, task_id="plan")
    groups: dict[str, TaskGroup] = {}
    ends: dict[str, tuple[Any, Any]] = {}  # (first, last) task of each step, for the foreign-key order
    for s in steps:
        name, table = s["name"], tables[s["name"]]
        outlets = [assets[name]] + [assets[by_full[p]] for p in table.get("parts", ()) if p in by_full]
        step_settings = s.get("settings") or {}
        options = populate_options(step_settings, populate_defaults)
        with TaskGroup(group_ids[name], tooltip=f"{name} -> {table['full_table_name']}") as group:
            converter = _converter_for(node_converters, s, table)
            made = None
            if converter is not None:
                node = {**table, **s, "group_id": group_ids[name], "outlets": outlets}
                made = converter(node, conn_id=conn_id,
                                 operator_args={k: v for k, v in options.items() if k != "map_index_template"})
            if made is not None:
                ends[name] = _ends(made)
            else:
                expected = f"{table['schema']}.{table['table_name']}"
                # downstream keeps going: after a failed upstream task it computes every key whose inputs exist
                has_upstream = any(u in step_names for u in s.get("upstream", ()))
                # the plan checks that the step's table is still the one this DAG was built for
                if mode == "workers":
                    planner = plan_workers_task.override(trigger_rule="all_done") if has_upstream else plan_workers_task
                    plan = planner(name, workers, conn_id, expected, database)
                    populate = task(_worker_task, task_id="populate", **options).partial(
                        conn_id=conn_id, time_budget=time_budget, database=database).expand(work=plan)
                else:
                    planner = plan_task.override(trigger_rule="all_done") if has_upstream else plan_task
                    plan = planner(name, step_settings.get("batch_size", batch_size), conn_id, expected, database)
                    populate = task(_populate_task, task_id="populate", **options).partial(
                        conn_id=conn_id, database=database).expand(work=plan)
                # the report runs whatever populate did: it fails while keys are in error
                report = task(_report_task, task_id="report", trigger_rule="all_done",
                              outlets=outlets)(name, conn_id, database)
                populate >> report
                ends[name] = (plan, populate)  # downstream waits for populate, not for a report that may fail
        groups[name] = group
    for s in steps:
        for up in s.get("upstream", ()):
            if up in groups:
                ends[up][1] >> ends[s["name"]][0]
    if wait_for_pending:
        from .sensors import JoinflowPendingSensor

        sensor_options = {"soft_fail": True, "mode": "reschedule", "poke_interval": 60, "timeout": 3600}
        sensor_options.update(wait_for_pending if isinstance(wait_for_pending, dict) else {})
        entry = [s["name"] for s in steps if not any(u in groups for u in s.get("upstream", ()))]
        sensor = JoinflowPendingSensor(task_id="wait_for_pending", steps=entry, conn_id=conn_id, database=database,
                                       **sensor_options)
        for s in steps:
            sensor >> ends[s["name"]][0]
    return groups


def joinflow_dag(
    dag_id: str,
    pipeline: Any = None,
    schedule: Any = None,
    batch_size: int = 100,
    conn_id: str | None = "joinflow_default",
    *,
    manifest: str | os.PathLike | dict | None = None,
    pool: str | None = None,
    populate_retries: int | None = None,
    wait_for_pending: bool | dict = False,
    select: str | list[str] | None = None,
    exclude: str | list[str] | None = None,
    settings: dict | None = None,
    operator_args: dict | None = None,
    node_converters: dict | None = None,
    mode: str = "batches",
    workers: int | None = None,
    time_budget: float | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """An Airflow DAG running a joinflow pipeline's computed tables in foreign-key order.

    ``pipeline``: a ``joinflow.pipeline.Pipeline``, a module / schema / table classes, an
    importable module name, or a list of these.  Or ``manifest``: the path of a pipeline
    manifest (``python -m joinflow.pipeline manifest MODULE -o FILE``; relative to the DAG
    file) or its dict: the DAG is then built without importing the pipeline or touching the
    database (recommended: Airflow parses DAG files constantly).  ``batch_size``: keys per mapped populate
    task (past ``[core] max_map_length`` batches, the plan switches to hash shards).
    ``conn_id``: Airflow connection of type ``joinflow`` (falls back to
    ``JOINFLOW_DATABASE_URL``) applied in every task before the steps are imported.
    ``pool`` caps concurrent database sessions; ``populate_retries`` overrides
    ``default_args["retries"]`` for the populate tasks.
    ``wait_for_pending``: put a ``JoinflowPendingSensor`` on the entry steps (those with no
    upstream step) before everything; ``True`` or the sensor's options (default
    ``soft_fail=True, mode="reschedule"``: no new keys skips the run).  Other keyword arguments go to
    ``airflow.sdk.DAG`` (``start_date``, ``catchup``, ``default_args``, ``tags``, ...).

    ``select`` / ``exclude``: only these computed tables (joinflow selectors: ``Spikes``,
    ``+Spikes`` with its ancestors, ``Spikes+`` with its descendants, ``schema:NAME``,
    ``tier:computed``, ``module:Class``; a string or a list); upstream tables outside the
    selection are read, never computed.  ``settings``: ``{selector: {...}}`` per-step settings
    (over each table's ``orchestration`` attribute).  With ``manifest=`` these import joinflow
    while parsing; a manifest written with ``--select`` / ``--exclude`` does not.  A step's
    settings override ``pool`` / ``populate_retries`` / ``batch_size`` / ``operator_args`` for
    that step (see :func:`populate_options`).

    ``operator_args``: arguments for every populate task (under the per-step settings).
    ``node_converters``: ``{selector or table class: callable}``; the callable is called inside the
    table's TaskGroup as ``callable(node, conn_id=..., operator_args=...)`` (``node``: the step's
    manifest entry plus ``group_id`` and ``outlets``) and returns the operator that replaces the
    table's plan/populate/report tasks, a ``(first, last)`` pair of them, or ``None`` for the
    default tasks.  Selectors: ``Class``, ``module:Class``, ``schema:NAME``, ``tier:TIER``.

    ``mode="batches"`` (default): one mapped task per key batch (readable labels, a retry redoes
    only its keys).  ``mode="workers"``: per table ``workers`` mapped tasks (default: ``[core]
    parallelism`` and the DAG's ``max_active_tasks``, never more than the pending keys), each
    pulling keys from the job table until none are left or ``time_budget`` seconds have passed
    (keys left over stay pending for the next run).
    """
    _check_options(mode, workers, time_budget, node_converters, operator_args)
    graph = _graph(pipeline, manifest, conn_id, 1, {"select": select, "exclude": exclude, "settings": settings})
    group_ids = _group_ids(graph["steps"], {t["name"]: t for t in graph["tables"]})
    dag_kwargs.setdefault("tags", ["joinflow"])
    dag_kwargs.setdefault("doc_md", "joinflow pipeline: " + ", ".join(group_ids.values()))
    from airflow.sdk import Param

    params = dict(dag_kwargs.pop("params", None) or {})
    params.setdefault("retry_errors", Param(False, type="boolean",
                                            description="Make the keys in error pending again before planning."))
    params.setdefault("ignore_errors", Param(False, type="boolean",
                                             description="Mark the keys in error as ignored (DataJoint's 'ignore')."))
    with DAG(dag_id, schedule=schedule, params=params, **dag_kwargs) as dag:
        _build(graph, conn_id=conn_id, batch_size=batch_size, pool=pool, populate_retries=populate_retries,
               wait_for_pending=wait_for_pending, operator_args=operator_args, node_converters=node_converters,
               mode=mode, workers=workers, time_budget=time_budget)
    return dag


def joinflow_task_group(
    group_id: str,
    pipeline: Any = None,
    batch_size: int = 100,
    conn_id: str | None = "joinflow_default",
    *,
    manifest: str | os.PathLike | dict | None = None,
    pool: str | None = None,
    populate_retries: int | None = None,
    wait_for_pending: bool | dict = False,
    select: str | list[str] | None = None,
    exclude: str | list[str] | None = None,
    settings: dict | None = None,
    operator_args: dict | None = None,
    node_converters: dict | None = None,
    mode: str = "batches",
    workers: int | None = None,
    time_budget: float | None = None,
    **group_kwargs: Any,
) -> TaskGroup:
    """A pipeline (or a selection of it) as one TaskGroup inside the DAG being defined.

    Use it between your own tasks (astronomer-cosmos: ``DbtTaskGroup``)::

        with DAG("nightly", ...):
            fetch >> JoinflowTaskGroup(group_id="lab", manifest="lab.json", select="+Summary") >> notify

    The group holds one TaskGroup per computed table, exactly as :func:`joinflow_dag` builds them
    (the same options); ``>>`` into the group reaches its entry tables' first tasks, ``>>`` out of
    it leaves from its last ones.  Other keyword arguments go to ``TaskGroup`` (``tooltip``,
    ``default_args``, ``prefix_group_id``, ...).  Task ids are ``<group_id>.<Table>.plan`` etc.
    """
    _check_options(mode, workers, time_budget, node_converters, operator_args)
    graph = _graph(pipeline, manifest, conn_id, 1, {"select": select, "exclude": exclude, "settings": settings})
    group_ids = _group_ids(graph["steps"], {t["name"]: t for t in graph["tables"]})
    group_kwargs.setdefault("tooltip", "joinflow pipeline: " + ", ".join(group_ids.values()))
    with TaskGroup(group_id, **group_kwargs) as group:
        _build(graph, conn_id=conn_id, batch_size=batch_size, pool=pool, populate_retries=populate_retries,
               wait_for_pending=wait_for_pending, operator_args=operator_args, node_converters=node_converters,
               mode=mode, workers=workers, time_budget=time_budget)
    return group


JoinflowTaskGroup = joinflow_task_group


# The name proposed in the issue, mirroring astronomer-cosmos's DbtDag (a factory function).
JoinflowDag = joinflow_dag
