"""``joinflow_flow``: a Prefect flow whose tasks follow a joinflow pipeline's foreign-key graph.

Per auto-populated (Imported/Computed) table, in one flow run:

    plan <Table>  ->  populate <Table> [0..n)  (mapped over key batches or hash shards)

A table's ``plan`` task is submitted once every upstream table's tasks have finished and
records them in ``wait_for``; tables with no path between them run concurrently.  Tasks
receive small descriptors (the step's importable name plus a key batch or a shard number)
and rebuild the step with ``joinflow.pipeline.load_step`` so any worker process can run
them.  Exactly-once per key comes from joinflow's job table (``Step.run``), never from
Prefect: overlapping flow runs and task retries are safe.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import queue
import re
import sys
import threading
import time
from typing import Any, Iterable, Mapping

from prefect import Flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.states import Completed
from prefect.runtime import task_run as task_run_runtime
from prefect.utilities.annotations import allow_failure, unmapped

from joinflow.pipeline import Pipeline, Step, expect_database, load_step

from .assets import materialize_table, should_materialize, table_assets
from .blocks import apply_database_block
from .threads import is_per_thread, per_thread, session

# A joinflow connection is not thread-safe.  Task threads work on sessions of their own
# (threads.per_thread / threads.session); this lock serializes what cannot: loading steps, and
# every task of a connection that cannot have per-thread sessions (in-memory SQLite).
DB_LOCK = threading.RLock()


def db_lock() -> threading.RLock:
    """This process's lock (task functions call this rather than naming the lock: a task
    function that a runner ships by value then still shares the worker's one lock)."""
    return DB_LOCK


def _guard(step: Step):
    """What a task holds around its database work: nothing when the step's connection gives each
    thread its own session (see ``threads.per_thread``), else this process's lock."""
    conn = step.cls.connection
    return session(conn) if is_per_thread(conn) else db_lock()


def _per_thread_connections(classes, limit: int | None = None) -> None:
    """Give every worker thread of this process its own session of these tables' connections."""
    for cls in classes:
        conn = getattr(cls, "connection", None) if cls is not None else None
        if conn is not None and hasattr(conn, "url") and hasattr(conn, "engine"):
            per_thread(conn, limit)


class JoinflowMakeError(RuntimeError):
    """Some keys of a batch failed in ``make()``; the message is the job table's error."""

    def __init__(self, summary: dict):
        super().__init__(summary)
        self.summary = summary

    def __str__(self) -> str:
        s = self.summary
        errors = s.get("errors") or []
        first = errors[0] if errors else {"key": None, "error": "unknown error"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return (f"{s.get('table')}: make() failed for {s.get('error_count', len(errors))} key(s); "
                f"key {first['key']}: {first['error']}{more}. The errors are in the job table; "
                "a task retry (or retry_errors=True) re-pends them.")


class JoinflowFlowError(RuntimeError):
    """Raised at the end of a flow run in which some table had failures, or still has keys in
    error from an earlier run (after the artifact): the flow run is Failed until they are
    retried (flow parameter ``retry_errors``) or ignored (``ignore_errors``)."""


_steps: dict[str, tuple[Any, Step]] = {}  # name -> (its module, the step) loaded in this process


# -- tasks ----------------------------------------------------------------------------------------
def _setting(database_block: str | None) -> str:
    """The setting that names the database, for errors."""
    if database_block:
        return f"the Prefect JoinflowDatabase block {database_block!r}"
    return "JOINFLOW_DATABASE_URL (or joinflow_flow(database_block=...), dj.config / joinflow.toml)"


def _step(name: str, database_block: str | None, database: dict | None = None) -> Step:
    """The step, loaded once per process (again if its module was re-imported since), on
    ``database`` (the flow's: another database, or none configured, fails before any work)."""
    apply_database_block(database_block)
    module_name = name.partition(":")[0]
    cached = _steps.get(name)
    if cached is None or sys.modules.get(module_name) is not cached[0] or cached[1].database != database:
        with db_lock():
            step = load_step(name, database, setting=_setting(database_block))
            _per_thread_connections([step.cls])
            cached = _steps[name] = (sys.modules.get(module_name), step)
    return cached[1]


def _label(step_name: str) -> str:
    return step_name.rpartition(":")[2]


def _plan_run_name() -> str:
    params = task_run_runtime.get_parameters()
    return f"plan {_label(params.get('step', '?'))}"


def _populate_run_name() -> str:
    work = task_run_runtime.get_parameters().get("work") or {}
    if "shard" in work:
        where = f"shard {work['shard']}/{work['nshards']}"
    else:
        where = f"batch {work.get('batch', 0)} ({len(work.get('keys') or ())} keys)"
    return f"populate {_label(work.get('step', '?'))} {where}"


def plan_pending_work(step: str, batch_size: int = 100, shards: int | None = None,
              database_block: str | None = None, retry_errors: bool = False,
              ignore_errors: bool = False, database: dict | None = None) -> list[dict]:
    """Descriptors of the step's pending work: key batches, or the hash shards that have keys.

    ``retry_errors`` first makes the step's keys in error pending again; ``ignore_errors``
    marks them ignored (DataJoint's ``ignore`` job status) instead.
    """
    s = _step(step, database_block, database)
    with _guard(s):
        if retry_errors:
            s.retry_errors()
        elif ignore_errors:
            errors = s.status()["error_keys"]
            while errors:
                s.ignore(errors)
                errors = s.status()["error_keys"]
        if shards:
            return [{"step": step, "shard": d["shard"], "nshards": d["nshards"], "count": d["keys"]}
                    for d in s.plan(shards)]
        return [{"step": step, "batch": i, "keys": keys} for i, keys in enumerate(s.pending_keys(batch_size))]


def populate_work(work: dict, database_block: str | None = None, retry_errors: bool = False,
                  database: dict | None = None) -> dict:
    """Populate one descriptor's keys through the job table; fail with the job-table error.

    A Prefect retry of this task (run count > 1) re-pends the errors of its own keys first.
    """
    s = _step(work["step"], database_block, database)
    retry = bool(retry_errors) or task_run_runtime.get_run_count() > 1
    with _guard(s):  # count_pending=False: the flow reads each table's status once, at its end
        if "shard" in work:
            summary = s.run(shard=work["shard"], nshards=work["nshards"], retry_errors=retry, count_pending=False)
        else:
            summary = s.run(work["keys"], retry_errors=retry, count_pending=False)
    summary = _with_earlier_tries(summary)
    if summary["error_count"]:
        raise JoinflowMakeError(summary)
    return summary


# rows committed by earlier tries of a task run (Prefect retries a task in the same process):
# a try's summary adds them, so a retried task reports every row it inserted
_earlier_tries: dict[str, dict] = {}


def _with_earlier_tries(summary: dict) -> dict:
    run_id = str(task_run_runtime.get_id() or "")
    if not run_id:
        return summary
    earlier = _earlier_tries.pop(run_id, None)
    if earlier:
        summary = dict(summary, rows_added=summary["rows_added"] + earlier["rows_added"],
                       part_rows_added={t: summary["part_rows_added"].get(t, 0) + earlier["part_rows_added"].get(t, 0)
                                        for t in {*summary["part_rows_added"], *earlier["part_rows_added"]}})
    if summary["error_count"]:  # this try fails: a retry adds its rows to its own
        _earlier_tries[run_id] = {"rows_added": summary["rows_added"],
                                  "part_rows_added": dict(summary["part_rows_added"])}
    return summary


# The task functions stay importable under their own names, so Dask pickles them by reference.
plan_step = task(plan_pending_work, name="plan", cache_policy=NO_CACHE, persist_result=False,
                 task_run_name=_plan_run_name)
populate_step = task(populate_work, name="populate", cache_policy=NO_CACHE, persist_result=False,
                     task_run_name=_populate_run_name)


# -- the flow ---------------------------------------------------------------------------------------
def _option_for(step: Step, value: Any, default: Any) -> Any:
    """A per-table option: a plain value, or a mapping by class name, step name or table name."""
    if not isinstance(value, Mapping):
        return value
    for key in (step.name, step.cls.__name__, _label(step.name), step.full_table_name):
        if key in value:
            return value[key]
    return value.get("*", default)


def _source_names(source: Any) -> list[str]:
    items = source if isinstance(source, (list, tuple)) else [source]
    names = []
    for item in items:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, Pipeline):
            names.extend(sorted({_label(s.name) for s in item.steps}))
        else:
            names.append(getattr(item, "__name__", None) or type(item).__name__)
    return names


def _resource_id(full_table_name: str) -> str:
    return "joinflow.table." + re.sub(r"[`\"\[\]]", "", full_table_name)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "joinflow"


class JoinflowFlow(Flow):
    """A Prefect ``Flow`` that finds its own entrypoint (``file.py:attribute``) for ``serve``/``deploy``."""

    _joinflow_module: str | None = None

    def _bind_entrypoint(self) -> None:
        module = sys.modules.get(self._joinflow_module or "")
        for attr, value in vars(module).items() if module else ():
            if value is self:
                self.fn.__qualname__ = self.fn.__name__ = attr
                self.__qualname__ = attr
                return

    def to_deployment(self, *args, **kwargs):
        self._bind_entrypoint()
        return super().to_deployment(*args, **kwargs)

    async def ato_deployment(self, *args, **kwargs):
        self._bind_entrypoint()
        return await super().ato_deployment(*args, **kwargs)


def joinflow_flow(
    pipeline_or_modules: Any,
    batch_size: int = 100,
    retries: int | Mapping[str, int] = 0,
    retry_delay_seconds: float | list[float] = 10,
    task_runner: Any = None,
    name: str | None = None,
    *,
    shards: int | None = None,
    database_block: str | None = None,
    continue_on_failure: bool = True,
    artifact_key: str | None = None,
    tags: Iterable[str] = (),
    select: str | list[str] | None = None,
    exclude: str | list[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    assets: bool = True,
    max_sessions: int | None = None,
    **flow_options: Any,
) -> JoinflowFlow:
    """A Prefect flow running a joinflow pipeline's computed tables in foreign-key order.

    ``pipeline_or_modules``: a ``joinflow.pipeline.Pipeline``, a module, a schema, table
    classes, an importable module name (``"my_lab.pipeline"``), or a list of these.  Names
    are imported when the flow runs (after ``database_block`` is applied), so defining the
    flow touches no database.

    ``batch_size``: keys per mapped task (a flow parameter, changeable per run);
    ``shards``: map over this many hash shards instead of key batches.
    ``retries``: Prefect task retries of the populate tasks, one number or a mapping
    ``{"ClassName" | "module:Class" | full table name | "*": n}``; a retry re-pends the
    errors of its own keys.  ``database_block``: the name of a saved ``JoinflowDatabase``
    block applied in the flow and in every task before importing the pipeline.
    ``continue_on_failure``: run downstream tables on whatever their failed upstream tables
    did produce (True, joinflow's key-level semantics) or skip them (False).
    ``tags``: Prefect tags of every task (tag concurrency limits; each tagged task run
    costs an extra API call).  ``task_runner``: default Prefect's thread pool (one thread per
    task, each on a database session of its own, so make() calls overlap); a
    ``DaskTaskRunner`` spreads batches over processes.  ``artifact_key``: key of the run-summary markdown artifact.
    ``select`` / ``exclude``: only these computed tables (joinflow selectors: ``Spikes``,
    ``+Spikes`` with its ancestors, ``Spikes+`` with its descendants, ``schema:NAME``,
    ``tier:computed``, ``module:Class``); upstream tables outside the selection are read, never
    computed.  The selection is resolved when the flow runs (a bad selector fails the run).
    ``settings``: ``{selector: {...}}`` per-step settings over each table's ``orchestration``
    attribute; a step's settings override ``retries`` / ``retry_delay_seconds`` /
    ``batch_size`` and add to ``tags`` for that table (see :func:`task_options`).
    ``assets``: each table is a Prefect asset (key ``<backend>://<host>[:port]/<database>/<schema>/<table>``);
    a table whose run added rows (or had errors) is materialized by a ``materialize <Table>`` task
    with its parent tables' assets as upstream dependencies (see ``prefect_joinflow.assets``).
    ``max_sessions``: database sessions per connection for the task threads of the flow's process
    (default ``PREFECT_JOINFLOW_SESSIONS`` or 8; set when the connection is first made per thread;
    Dask workers use the variable): each populate task uses one for its duration, so up to this
    many make() calls run at once per process; a task waits for a free one.
    Other keyword arguments go to ``prefect.Flow`` (``log_prints``, ``timeout_seconds``...).
    """
    with_assets = assets
    source = pipeline_or_modules
    selection = {k: v for k, v in {"select": select, "exclude": exclude, "settings": settings}.items()
                 if v is not None}
    if isinstance(source, Pipeline):  # keep the flow function picklable: classes, not a live connection
        if source.selection is not None:
            if select is not None or exclude is not None:
                raise ValueError("joinflow_flow: the pipeline is already a selection; give select=/exclude= once.")
            selection.update({k: v for k, v in source.selection.items() if v is not None})
        # that Pipeline's step settings (its settings= included), then this function's settings=
        selection["settings"] = {**{s.name: s.settings for s in source.steps if s.settings}, **(settings or {})}
        source = [node.cls for node in source.nodes if node.tier != "Part"]
    flow_name = name or "joinflow-" + "-".join(_slug(n) for n in _source_names(pipeline_or_modules))
    summary_key = artifact_key or _slug(f"{flow_name}-summary")

    def run_pipeline(batch_size: int = batch_size, retry_errors: bool = False, ignore_errors: bool = False,
                     allow_errors: bool = False) -> Any:
        """``retry_errors``: make the keys in error pending again first; ``ignore_errors``: mark
        them ignored instead; ``allow_errors``: end Completed (message "completed with errors")
        rather than Failed while keys stay in error."""
        logger = get_run_logger()
        apply_database_block(database_block)
        # modules named by string are imported here: never on joinflow's defaults alone (a worker with
        # no block, no JOINFLOW_DATABASE_URL), never creating an SQLite file; every task then checks
        # that it runs on the flow's database
        with db_lock(), expect_database(what=f"flow {flow_name}", setting=_setting(database_block)):
            items = source if isinstance(source, (list, tuple)) else [source]
            pipeline = Pipeline(*items, **selection)
            database = pipeline.verify_database()
            # this thread keeps the connections; every task thread gets its own session of each
            _per_thread_connections([n._cls for n in pipeline.nodes] + [s.cls for s in pipeline.steps], max_sessions)
            for s in pipeline.steps:  # job tables exist before tasks start: parallel sessions would race
                s.table.jobs          # to create them (and the enum type they share on PostgreSQL)
            assets, asset_upstream = (table_assets(pipeline, lambda node: node.cls.connection) if with_assets
                                      else ({}, {}))
        steps = list(pipeline.steps)
        by_name = {s.name: s for s in steps}
        step_settings = {s.name: s.settings for s in steps}
        populate_tasks = {
            s.name: populate_step.with_options(
                name=f"populate {_label(s.name)}",
                **task_options(step_settings[s.name], retries=int(_option_for(s, retries, 0)),
                               retry_delay_seconds=_option_for(s, retry_delay_seconds, 10), tags=list(tags)),
            )
            for s in steps
        }
        plan_tasks = {s.name: plan_step.with_options(name=f"plan {_label(s.name)}",
                                                     tags=list(tags) + step_settings[s.name].get("tags", []))
                      for s in steps}
        batch_sizes = {s.name: step_settings[s.name].get("batch_size", batch_size) for s in steps}

        # Dask places a task next to the results it waits for: batches that wait for their plan would
        # all go to the plan's worker process.  The plan has finished when its batches are mapped, so
        # on Dask they do not wait for it (the UI then draws no plan -> batch edge).
        runner = getattr(FlowRunContext.get(), "task_runner", None)
        spread = type(runner).__name__ == "DaskTaskRunner"
        events: queue.Queue = queue.Queue()
        state = {s.name: "waiting" for s in steps}
        plan_futures: dict[str, Any] = {}
        batch_futures: dict[str, list] = {s.name: [] for s in steps}
        remaining: dict[str, int] = {}
        started: dict[str, float] = {}
        results: dict[str, dict] = {}
        materializations: list = []
        in_flight = 0

        def track(future, tag):
            nonlocal in_flight
            in_flight += 1
            future.add_done_callback(lambda _f, tag=tag: events.put(tag))

        def finish(s: Step, outcome: str, batches: list, plan_error: str | None = None):
            rows, errors, messages = 0, 0, []
            part_rows: dict[str, int] = {}

            def add_parts(found: dict) -> None:
                for table, n in (found or {}).items():
                    part_rows[table] = part_rows.get(table, 0) + n

            for f in batches:
                value = f.result(raise_on_failure=False)
                if isinstance(value, JoinflowMakeError):
                    rows += value.summary.get("rows_added", 0)
                    add_parts(value.summary.get("part_rows_added"))
                    errors += value.summary.get("error_count", 0)
                    messages.append(str(value))
                elif isinstance(value, BaseException) or not isinstance(value, dict):
                    errors += 1
                    messages.append(f"{type(value).__name__}: {value}")
                else:
                    rows += value["rows_added"]
                    add_parts(value.get("part_rows_added"))
            if plan_error:
                errors += 1
                messages.append(plan_error)
            if messages and outcome == "completed":
                outcome = "failed"
            try:
                with db_lock():
                    status = s.status()
            except Exception as exc:  # report what we know; the failure is already recorded
                status = {"pending": None, "error": None, "reserved": None, "ignored": None, "error_keys": []}
                messages.append(f"status unavailable: {exc}")
            if status["error"] and not errors:  # errors of an earlier run stay visible until handled
                outcome = "open errors" if outcome in ("completed", "nothing to do") else outcome
                messages.append(f"{s.full_table_name}: {status['error']} key(s) in error from an earlier run, "
                                f"e.g. {status['error_keys'][:3]}; run the flow with retry_errors=True to retry "
                                "them or ignore_errors=True to ignore them.")
            summary = {
                "table": s.full_table_name, "step": s.name, "state": outcome, "tasks": len(batches),
                "rows_added": rows, "part_rows_added": part_rows, "errors": errors, "pending_left": status["pending"],
                "job_errors": status["error"], "error_keys": status["error_keys"], "ignored": status["ignored"],
                "reserved": status["reserved"],
                "duration": round(time.time() - started.get(s.name, time.time()), 3),
                "messages": messages[:5],
            }
            results[s.name] = summary
            # an upstream table with open errors still lets downstream tables run (key by key)
            state[s.name] = "failed" if outcome in ("failed", "skipped") else "done"
            (logger.error if messages else logger.info)(
                "%s: %s, %d rows added, %d errors, %s pending left, %s in error", _label(s.name), outcome, rows,
                errors, status["pending"], status["error"])
            # events: "failed" while the table has failures or open errors; "populated" only when
            # rows were inserted (a no-op run triggers nothing); a part table's event has its own rows
            payload = {k: v for k, v in summary.items() if k != "messages"} | {"messages": messages[:1]}
            resource = {"prefect.resource.id": _resource_id(s.full_table_name),
                        "prefect.resource.name": _label(s.name), "joinflow.step": s.name}
            planned = []
            if messages:
                planned.append(("joinflow.table.failed", resource, payload))
            if rows:
                planned.append(("joinflow.table.populated", resource, payload))
            part_names = s.part_names() if part_rows else {}
            for table, added in part_rows.items():
                if added:
                    planned.append(("joinflow.table.populated",
                                    {"prefect.resource.id": _resource_id(table),
                                     "prefect.resource.name": part_names.get(table, table), "joinflow.step": s.name},
                                    {"table": table, "master": s.full_table_name, "rows_added": added}))
            for event, where, body in planned:
                try:
                    emit_event(event=event, resource=where, payload=body)
                except Exception as exc:  # events are best effort; never fail the data work on them
                    logger.warning("could not emit the event of %s: %s", s.name, exc)
            if s.full_table_name in assets and should_materialize(summary):
                materializations.append(_submit_materialization(s, summary, assets, asset_upstream))

        def launch_ready():
            for s in steps:
                if state[s.name] != "waiting":
                    continue
                ups = [u for u in s.upstream if u in by_name]
                if any(state[u] not in ("done", "failed") for u in ups):
                    continue
                started[s.name] = time.time()
                if not continue_on_failure and any(state[u] == "failed" for u in ups):
                    finish(s, "skipped", [], plan_error="skipped: an upstream table failed")
                    continue
                wait = [allow_failure(f) for u in ups for f in [plan_futures[u], *batch_futures[u]] if f is not None]
                future = plan_tasks[s.name].submit(s.name, batch_sizes[s.name], shards, database_block, retry_errors,
                                                   ignore_errors, database, wait_for=wait)
                plan_futures[s.name] = future
                state[s.name] = "planning"
                track(future, ("plan", s.name))

        launch_ready()
        while in_flight:
            kind, step_name = events.get()
            in_flight -= 1
            s = by_name[step_name]
            if kind == "plan":
                plan_future = plan_futures[step_name]
                descriptors = plan_future.result(raise_on_failure=False)
                if isinstance(descriptors, BaseException) or not isinstance(descriptors, list):
                    finish(s, "failed", [], plan_error=f"planning failed: {descriptors}")
                elif not descriptors:
                    finish(s, "nothing to do", [])
                else:
                    futures = populate_tasks[step_name].map(
                        descriptors, database_block=unmapped(database_block),
                        retry_errors=unmapped(False), database=unmapped(database),
                        wait_for=[] if spread else [plan_future])
                    batch_futures[step_name] = list(futures)
                    remaining[step_name] = len(futures)
                    state[step_name] = "running"
                    for f in futures:
                        track(f, ("batch", step_name))
            else:
                remaining[step_name] -= 1
                if remaining[step_name] == 0:
                    finish(s, "completed", batch_futures[step_name])
            launch_ready()

        for future in materializations:  # the asset events are sent before the run ends
            future.wait()
        ordered = {s.name: results[s.name] for s in steps if s.name in results}
        _write_artifact(summary_key, flow_name, ordered)
        failed = [r for r in ordered.values() if r["state"] in ("failed", "skipped", "open errors")
                  or r["job_errors"]]
        if failed:
            first = next((r["messages"][0] for r in failed if r["messages"]), "")
            open_errors = sum(r["job_errors"] or 0 for r in failed)
            message = (f"{len(failed)} table(s) failed or have keys in error ({open_errors} in all): "
                       f"{', '.join(_label(r['step']) for r in failed)}. {first}")
            if allow_errors and all(r["state"] != "skipped" for r in failed):
                logger.warning("completed with errors: %s", message)
                return Completed(message=f"Completed with errors: {message}", data=ordered)
            raise JoinflowFlowError(message)
        return ordered

    run_pipeline.__doc__ = (f"Populate the computed tables of {', '.join(_source_names(pipeline_or_modules))} "
                            "in dependency order.")
    caller = inspect.currentframe().f_back  # the module that builds the flow is its entrypoint
    module_name = caller.f_globals.get("__name__") if caller else None
    if module_name:
        run_pipeline.__module__ = module_name
    flow = JoinflowFlow(run_pipeline, name=flow_name, task_runner=task_runner,
                        description=run_pipeline.__doc__, **flow_options)
    flow._joinflow_module = module_name
    return flow


def _submit_materialization(step: Step, summary: dict, assets: Mapping[str, Any],
                            upstream: Mapping[str, list]) -> Any:
    """A ``materialize <Table>`` task: the table's asset, its parents' assets as upstream."""
    task_ = materialize_table.with_options(name=f"materialize {_label(step.name)}",
                                           task_run_name=f"materialize {_label(step.name)}",
                                           assets=[assets[step.full_table_name]],
                                           asset_deps=list(upstream.get(step.name, ())))
    # as JSON text: Prefect must not take the counts for other tasks' results (it matches results by
    # object identity, and small ints are shared) and invent upstream assets from them
    return task_.submit(json.dumps({k: v for k, v in summary.items() if k != "duration"}, default=str))


def task_options(settings: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """A step's populate task options: ``defaults`` overridden by its settings.

    ``retries`` -> ``retries``, ``retry_delay`` -> ``retry_delay_seconds``, ``timeout`` ->
    ``timeout_seconds``, ``tags`` are added to the flow's tags; ``prefect.<option>`` settings
    are passed to ``Task.with_options`` as they are.  ``pool`` / ``queue`` have no task-level
    equivalent in Prefect (use tags with a tag concurrency limit, or the deployment's work pool).
    """
    options = dict(defaults)
    if "retries" in settings:
        options["retries"] = settings["retries"]
    if "retry_delay" in settings:
        options["retry_delay_seconds"] = settings["retry_delay"]
    if "timeout" in settings:
        options["timeout_seconds"] = settings["timeout"]
    if settings.get("tags"):
        options["tags"] = list(options.get("tags") or []) + list(settings["tags"])
    for key, value in settings.items():
        if key.startswith("prefect."):
            options[key.partition(".")[2]] = value
    return options


def _write_artifact(key: str, flow_name: str, results: Mapping[str, dict]) -> None:
    lines = [f"# {flow_name}: run summary", "",
             "| table | state | tasks | rows added | errors | pending left | errors in job table | ignored | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results.values():
        lines.append(f"| `{r['table']}` | {r['state']} | {r['tasks']} | {r['rows_added']} | {r['errors']} | "
                     f"{r['pending_left']} | {r['job_errors']} | {r['ignored']} | {r['duration']} |")
        for table, added in r.get("part_rows_added", {}).items():
            lines.append(f"| `{table}` (part) | | | {added} | | | | | |")
    problems = [(r, m) for r in results.values() for m in r["messages"]]
    if problems:
        lines += ["", "## Errors", ""]
        lines += [f"- `{r['table']}`: {_md_escape(m)}" for r, m in problems]
    try:
        create_markdown_artifact(markdown="\n".join(lines), key=key,
                                 description=f"joinflow run summary of {flow_name}")
    except Exception as exc:  # artifacts are best effort
        get_run_logger().warning("could not create the summary artifact: %s", exc)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")

