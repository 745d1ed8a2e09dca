"""Dagster asset definitions generated from a joinflow pipeline's foreign-key graph."""

# no "from __future__ import annotations": Dagster resolves the config annotation at definition time

import time
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import dagster as dg
from joinflow.pipeline import Pipeline, Step, TableNode, expect_database

from .resource import JoinflowResource
from .shards import shard_count, sharded_step_asset
from .translator import DagsterJoinflowTranslator, dagster_name, schema_of

STEP_METADATA_KEY = "joinflow/step"  # importable step name, on every materializable joinflow asset
PARTITION_METADATA_KEY = "joinflow/partition_attribute"
NO_JOB_ERRORS = "no_job_errors"
MAX_ERRORS_SHOWN = 5


class JoinflowMaterializeConfig(dg.Config):
    """Run configuration of a joinflow asset (Launchpad: ``ops: {<op>: {config: ...}}``)."""

    retry_errors: bool = False
    """Re-pend keys whose make failed before (a retry of the asset retries them anyway)."""
    ignore_errors: bool = False
    """Mark the keys in error as ignored (DataJoint's "ignore" job status): no run computes them
    and they no longer fail the no_job_errors check."""
    max_calls: Optional[int] = None
    """Compute at most this many keys in this materialization."""


def _as_pipeline(pipeline_or_modules: Any, **selection: Any) -> Pipeline:
    selection = {k: v for k, v in selection.items() if v is not None}
    if isinstance(pipeline_or_modules, Pipeline):
        return pipeline_or_modules.subset(**selection) if selection else pipeline_or_modules
    items = pipeline_or_modules if isinstance(pipeline_or_modules, (list, tuple)) else [pipeline_or_modules]
    # modules named by string are imported here: never on joinflow's defaults alone
    with expect_database(what="build_joinflow_assets",
                         setting="JOINFLOW_DATABASE_URL of the code location (or dj.config / joinflow.toml)"):
        return Pipeline(*items, **selection)


def op_options(settings: Mapping[str, Any], retry_policy: Optional[dg.RetryPolicy],
               pool: Optional[str]) -> dict[str, Any]:
    """A step's op options: the factory's ``retry_policy`` / ``pool`` overridden by its settings.

    ``retries`` (+ ``retry_delay``) -> ``RetryPolicy``, ``pool`` -> ``pool``, ``tags`` -> op
    tags, ``queue`` -> op tag ``dagster-celery/queue``, ``priority`` -> op tag
    ``dagster/priority``.  ``timeout`` and ``batch_size`` have no Dagster op equivalent.
    """
    tags = {tag: "" for tag in settings.get("tags", ())}
    if "queue" in settings:
        tags["dagster-celery/queue"] = settings["queue"]
    if "priority" in settings:
        tags["dagster/priority"] = str(settings["priority"])
    if "retries" in settings:
        delay = settings.get("retry_delay", retry_policy.delay if retry_policy else None)
        retry_policy = dg.RetryPolicy(max_retries=settings["retries"], delay=delay)
    elif "retry_delay" in settings and retry_policy is not None:
        retry_policy = dg.RetryPolicy(max_retries=retry_policy.max_retries, delay=settings["retry_delay"],
                                      backoff=retry_policy.backoff, jitter=retry_policy.jitter)
    return {"retry_policy": retry_policy, "pool": settings.get("pool", pool), "tags": tags}


def build_joinflow_assets(
    pipeline_or_modules: Any,
    translator: Optional[DagsterJoinflowTranslator] = None,
    *,
    resource_key: str = "joinflow",
    retry_policy: Optional[dg.RetryPolicy] = None,
    pool: Optional[str] = None,
    include_sources: bool = True,
    select: Union[str, Sequence[str], None] = None,
    exclude: Union[str, Sequence[str], None] = None,
    settings: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> list[Union[dg.AssetsDefinition, dg.AssetSpec]]:
    """One Dagster asset per table of a joinflow pipeline.

    ``pipeline_or_modules``: a :class:`joinflow.pipeline.Pipeline`, or what it is built from
    (a module, a ``dj.Schema``, an importable module name, or a list of those).

    * Imported/Computed tables are materializable assets: materializing one populates its
      pending keys through the job table (exactly once per key, also under overlapping
      runs) and fails with the job-table errors if any make failed.  Each carries an asset
      check ``no_job_errors``.
    * Manual/Lookup tables are external assets (``AssetSpec``): they are inserted by people
      or instruments, not by Dagster.  ``include_sources=False`` leaves them out.
    * Part tables belong to their master's asset (their dependencies too).
    * Dependencies follow the foreign keys; groups are schemas; see
      :class:`DagsterJoinflowTranslator` for keys, descriptions, metadata and partitions.

    * ``select`` / ``exclude`` (joinflow selectors: ``Spikes``, ``+Spikes``, ``Spikes+``,
      ``schema:NAME``, ``tier:computed``, ``module:Class``): only the selected tables are
      materializable; their upstream tables (computed ones included) are external assets.
    * A step's settings (its table's ``orchestration`` attribute, or ``settings=`` by
      selector) override ``retry_policy`` / ``pool`` for its op; see :func:`op_options`.

    Materializable assets need the resource ``resource_key`` (a :class:`JoinflowResource`).
    Building the definitions reads the schema's catalog once; no data is read.
    """
    pipe = _as_pipeline(pipeline_or_modules, select=select, exclude=exclude, settings=settings)
    step_settings = {s.name: s.settings for s in pipe.steps}
    translator = translator or DagsterJoinflowTranslator()
    nodes = {n.full_table_name: n for n in pipe.nodes}
    master_of = {part: n.full_table_name for n in pipe.nodes for part in n.parts}

    def owner(full: str) -> str:
        return master_of.get(full, full)

    # specs first (user overrides may change keys), then the dependencies through those keys
    specs: dict[str, dg.AssetSpec] = {}
    for node in pipe.nodes:
        if node.full_table_name in master_of:
            continue
        specs[node.full_table_name] = translator.get_asset_spec(node)
    result: list[Union[dg.AssetsDefinition, dg.AssetSpec]] = []
    registry: dict[dg.AssetKey, str] = {}  # asset key -> step name, of every step asset built here
    for full, spec in specs.items():
        node = nodes[full]
        parents: list[str] = []
        for member in [full] + [p for p in node.parts if p in nodes]:
            for parent in nodes[member].parents:
                parent = owner(parent)
                if parent != full and parent in specs and parent not in parents:
                    parents.append(parent)
        parts = [p for p in node.parts if p in nodes]
        extra: dict[str, Any] = {}
        if parts:
            extra["joinflow/parts"] = [nodes[p].name.partition(":")[2] for p in parts]
        spec = spec.replace_attributes(deps=[specs[p].key for p in parents]).merge_attributes(metadata=extra)
        if not node.is_step:
            if include_sources:
                result.append(spec)
            continue
        definition = _step_asset(node, spec, translator, resource_key,
                                 op_options(step_settings.get(node.name, {}), retry_policy, pool),
                                 pipe.database, registry)
        registry[definition.key] = node.name
        result.append(definition)
        result.append(_errors_check(node, definition.key, resource_key, pipe.database))
    return result


def _partition_restriction(node: TableNode, attribute: str, partition_key: str) -> dict:
    """The partition key (a string) as a restriction on the attribute (typed)."""
    attr = node.table.heading.attributes[attribute]
    value: Any = partition_key
    if attr.category == "int":
        value = int(partition_key)
    elif attr.category == "float":
        value = float(partition_key)
    return {attribute: value}


def _run_has_work(context: dg.AssetExecutionContext, resource: "JoinflowResource", registry: dict,
                  database: Optional[dict] = None) -> bool:
    """Whether any joinflow step of this run has pending keys or keys in error.

    Dagster skips the assets downstream of one that yields no materialization, so a step
    that inserted nothing skips only when the whole run has nothing to do; otherwise it
    materializes (with ``rows_added`` 0) so that the steps after it run (and fail on their
    open errors).
    """
    selected = context.run.asset_selection or set(registry)
    for key in selected:
        name = registry.get(key)
        if name is None:
            continue
        step = resource.get_step(name, database)
        if step.pending_count() or step.status()["error"]:
            return True
    return False


def _step_asset(node: TableNode, spec: dg.AssetSpec, translator: DagsterJoinflowTranslator, resource_key: str,
                options: dict[str, Any], database: Optional[dict] = None,
                registry: Optional[dict] = None) -> dg.AssetsDefinition:
    step_name = node.name
    attribute = translator.get_partition_attribute(node)
    partitions_def = None
    metadata: dict[str, Any] = {STEP_METADATA_KEY: step_name}
    if attribute is not None:
        if attribute not in node.table.heading.primary_key:
            raise ValueError(f"Partition attribute {attribute!r} of {node.name} is not in its primary key "
                             f"{node.table.heading.primary_key}.")
        partitions_def = dg.DynamicPartitionsDefinition(
            name=partitions_name(node, attribute))
        metadata[PARTITION_METADATA_KEY] = attribute
    # skippable: a run that inserted nothing yields no materialization (nothing to trigger)
    spec = spec.merge_attributes(metadata=metadata).replace_attributes(skippable=True)
    if partitions_def is not None:
        spec = spec.replace_attributes(partitions_def=partitions_def)
    nshards = shard_count(translator, node)
    if nshards > 1:  # parallel work inside the table: a graph of shard ops (shards.py)
        return sharded_step_asset(  # its no_job_errors check is _errors_check, as for every step
            node, spec, None, name=f"{dagster_name(schema_of(node))}__{dagster_name(node.name.partition(':')[2])}",
            nshards=nshards, resource_key=resource_key, retry_policy=options["retry_policy"], pool=options["pool"],
            op_tags=options["tags"], database=database)

    @dg.multi_asset(
        name=f"{dagster_name(schema_of(node))}__{dagster_name(node.name.partition(':')[2])}",
        specs=[spec],
        required_resource_keys={resource_key},
        retry_policy=options["retry_policy"],
        pool=options["pool"],
        op_tags={**options["tags"], "joinflow/step": step_name},
    )
    def _populate(context: dg.AssetExecutionContext, config: JoinflowMaterializeConfig):
        resource: JoinflowResource = getattr(context.resources, resource_key)
        step = resource.get_step(step_name, database)  # on the pipeline's database, or fail
        restriction = None
        if attribute is not None and context.has_partition_key:
            restriction = _partition_restriction(node, attribute, context.partition_key)
        retry = config.retry_errors or context.retry_number > 0
        if config.ignore_errors and not retry:
            errors = [e["key"] for e in _job_errors(step, restriction, limit=None)]
            if errors:
                step.ignore(errors)
                context.log.warning(f"{step_name}: ignoring {len(errors)} key(s) in error: {errors[:20]}")
        started = time.time()
        pending_before = step.pending_count(restriction) if restriction else step.pending_count()
        summary = resource.populate(step_name, restriction=restriction, retry_errors=retry,
                                    max_calls=config.max_calls, database=database)
        status = step.status()
        metadata = {
            "rows_added": summary["rows_added"],
            "part_rows_added": dg.MetadataValue.json(summary["part_rows_added"]),
            "pending_before": pending_before,
            "pending_left": summary["pending_left"],
            "errors": summary["error_count"],
            "open_errors": status["error"],
            "duration_s": dg.MetadataValue.float(round(time.time() - started, 3)),
            "job_counts": dg.MetadataValue.json({k: v for k, v in status.items() if k != "error_keys"}),
            "dagster/row_count": status["done"],
        }
        context.log.info(f"{step_name}: {summary['rows_added']} rows added, {summary['error_count']} errors, "
                         f"{summary['pending_left']} pending, {status['error']} keys in error")
        inserted = summary["rows_added"] or any(summary["part_rows_added"].values())
        if inserted or (not status["error"] and _run_has_work(context, resource, registry or {}, database)):
            # success with errors: downstream assets compute the good keys; the no_job_errors
            # check (its own step, after this one) fails the run while keys are in error
            yield dg.MaterializeResult(asset_key=spec.key, metadata=metadata)
            return
        if status["error"]:  # nothing inserted and keys in error: this run failed
            errors = _job_errors(step, restriction)
            first = errors[0] if errors else {"key": None, "error_message": "", "error_stack": ""}
            raise dg.Failure(
                description=(f"{step_name}: {status['error']} key(s) in error, nothing inserted "
                             f"({summary['error_count']} failed in this run). First: key {first['key']}: "
                             f"{first['error_message']}. {HANDLE_ERRORS}"),
                metadata={**metadata, "failed_keys": dg.MetadataValue.json(
                    [{"key": {k: str(v) for k, v in e["key"].items()}, "error": e["error_message"]}
                     for e in errors[:50]]),
                    "traceback": dg.MetadataValue.text(first["error_stack"] or "")},
            )
        context.log.info(f"{step_name}: nothing inserted; no materialization")

    return _populate


HANDLE_ERRORS = ("Retry them: materialize with run config retry_errors: true (Launchpad: ops: {<op>: {config: "
                 "{retry_errors: true}}}); or ignore them with ignore_errors: true.")


def _errors_check(node: TableNode, asset_key: dg.AssetKey, resource_key: str,
                  database: Optional[dict] = None) -> dg.AssetChecksDefinition:
    """The ``no_job_errors`` check of a step's asset: its own step, after the materialization.

    While keys of the table are in error it records a failed check and fails its step, so
    the run is not green on this run and every later one until the errors are retried or
    ignored; assets downstream do not wait for it (they compute the good keys).
    """
    step_name = node.name
    spec = dg.AssetCheckSpec(NO_JOB_ERRORS, asset=asset_key,
                             description="No key of this table has a failed make in the job table.")

    @dg.multi_asset_check(
        name=f"{dagster_name(schema_of(node))}__{dagster_name(node.name.partition(':')[2])}__{NO_JOB_ERRORS}",
        specs=[spec],
        required_resource_keys={resource_key},
    )
    def _check(context: dg.AssetCheckExecutionContext):
        resource: JoinflowResource = getattr(context.resources, resource_key)
        step = resource.get_step(step_name, database)
        status = step.status()
        errors = _job_errors(step) if status["error"] else []
        yield _check_result(asset_key, status, errors)
        if status["error"]:
            first = errors[0] if errors else {"key": None, "error_message": ""}
            raise dg.Failure(description=(f"{step_name}: {status['error']} key(s) in error. First: key "
                                          f"{first['key']}: {first['error_message']}. {HANDLE_ERRORS}"))

    return _check


def partitions_name(node: TableNode, attribute: str) -> str:
    return f"{dagster_name(schema_of(node))}__{dagster_name(node.cls.__name__)}__{dagster_name(attribute)}"


def _job_errors(step: Step, restriction: Optional[dict] = None, limit: Optional[int] = 50) -> list[dict]:
    """Error rows of the step's job table: key, message, traceback.

    Workaround: ``joinflow.pipeline.Step`` has no accessor for its job-table errors yet,
    so this reads ``step.table.jobs.errors`` (the DataJoint jobs API).
    """
    jobs = step.table.jobs
    n = jobs.cols  # job_<name> where the key has an attribute <name>
    errors = jobs.errors
    if restriction:
        errors = errors & restriction
    pk = step.table.heading.primary_key
    rows = []
    for row in errors.to_dicts(limit=limit):
        stack = row.get(n.error_stack) or b""
        rows.append({"key": {k: row[k] for k in pk}, "error_message": row.get(n.error_message, ""),
                     "error_stack": stack.decode(errors="replace") if isinstance(stack, bytes) else str(stack)})
    return rows


def _check_result(key: dg.AssetKey, status: dict, errors: list[dict]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=NO_JOB_ERRORS,
        passed=status["error"] == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "error_count": status["error"],
            "ignored": status["ignored"],
            "reserved": status["reserved"],
            "first_errors": dg.MetadataValue.json(
                [{"key": {k: str(v) for k, v in e["key"].items()}, "error": e["error_message"]}
                 for e in errors[:MAX_ERRORS_SHOWN]]),
        },
    )


def step_assets(assets: Sequence[Union[dg.AssetsDefinition, dg.AssetSpec]]) -> dict[dg.AssetKey, dict]:
    """Per joinflow step asset: its step name, deps and partitions attribute."""
    found: dict[dg.AssetKey, dict] = {}
    for asset in assets:
        specs = [asset] if isinstance(asset, dg.AssetSpec) else list(asset.specs)
        for s in specs:
            md = s.metadata or {}
            if STEP_METADATA_KEY in md:
                found[s.key] = {"step": md[STEP_METADATA_KEY], "deps": [d.asset_key for d in s.deps],
                                "partition_attribute": md.get(PARTITION_METADATA_KEY),
                                "partitions_def": s.partitions_def}
    return found
