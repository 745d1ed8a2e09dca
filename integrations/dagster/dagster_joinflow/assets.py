"""Dagster asset definitions generated from a joinflow pipeline's foreign-key graph."""

# no "from __future__ import annotations": Dagster resolves the config annotation at definition time

import time
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import dagster as dg
from joinflow.pipeline import Pipeline, Step, TableNode

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
    max_calls: Optional[int] = None
    """Compute at most this many keys in this materialization."""


def _as_pipeline(pipeline_or_modules: Any) -> Pipeline:
    if isinstance(pipeline_or_modules, Pipeline):
        return pipeline_or_modules
    if isinstance(pipeline_or_modules, (list, tuple)):
        return Pipeline(*pipeline_or_modules)
    return Pipeline(pipeline_or_modules)


def build_joinflow_assets(
    pipeline_or_modules: Any,
    translator: Optional[DagsterJoinflowTranslator] = None,
    *,
    resource_key: str = "joinflow",
    retry_policy: Optional[dg.RetryPolicy] = None,
    pool: Optional[str] = None,
    include_sources: bool = True,
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

    Materializable assets need the resource ``resource_key`` (a :class:`JoinflowResource`).
    Building the definitions reads the schema's catalog once; no data is read.
    """
    pipe = _as_pipeline(pipeline_or_modules)
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
        result.append(_step_asset(node, spec, translator, resource_key, retry_policy, pool))
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


def _step_asset(node: TableNode, spec: dg.AssetSpec, translator: DagsterJoinflowTranslator, resource_key: str,
                retry_policy: Optional[dg.RetryPolicy], pool: Optional[str]) -> dg.AssetsDefinition:
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
    spec = spec.merge_attributes(metadata=metadata)
    if partitions_def is not None:
        spec = spec.replace_attributes(partitions_def=partitions_def)
    check = dg.AssetCheckSpec(NO_JOB_ERRORS, asset=spec.key,
                              description="No key of this table has a failed make in the job table.")
    nshards = shard_count(translator, node)
    if nshards > 1:  # parallel work inside the table: a graph of shard ops (shards.py)
        return sharded_step_asset(
            node, spec, check, name=f"{dagster_name(schema_of(node))}__{dagster_name(node.name.partition(':')[2])}",
            nshards=nshards, resource_key=resource_key, retry_policy=retry_policy, pool=pool)

    @dg.multi_asset(
        name=f"{dagster_name(schema_of(node))}__{dagster_name(node.name.partition(':')[2])}",
        specs=[spec],
        check_specs=[check],
        required_resource_keys={resource_key},
        retry_policy=retry_policy,
        pool=pool,
        op_tags={"joinflow/step": step_name},
    )
    def _populate(context: dg.AssetExecutionContext, config: JoinflowMaterializeConfig):
        resource: JoinflowResource = getattr(context.resources, resource_key)
        step = resource.get_step(step_name)
        restriction = None
        if attribute is not None and context.has_partition_key:
            restriction = _partition_restriction(node, attribute, context.partition_key)
        retry = config.retry_errors or context.retry_number > 0
        started = time.time()
        pending_before = step.pending_count(restriction) if restriction else step.pending_count()
        summary = resource.populate(step_name, restriction=restriction, retry_errors=retry,
                                    max_calls=config.max_calls)
        status = step.status()
        errors = _job_errors(step, restriction)
        metadata = {
            "rows_added": summary["rows_added"],
            "pending_before": pending_before,
            "pending_left": summary["pending_left"],
            "errors": summary["error_count"],
            "duration_s": dg.MetadataValue.float(round(time.time() - started, 3)),
            "job_counts": dg.MetadataValue.json(status),
            "dagster/row_count": status["done"],
        }
        context.log.info(f"{step_name}: {summary['rows_added']} computed, {summary['error_count']} errors, "
                         f"{summary['pending_left']} pending")
        if summary["error_count"]:
            yield _check_result(spec.key, status, errors)
            first = summary["errors"][0]
            stack = next((e["error_stack"] for e in errors if e["key"] == first["key"]), "")
            raise dg.Failure(
                description=(f"{summary['error_count']} make call(s) of {step_name} failed "
                             f"({summary['rows_added']} keys computed). First: key {first['key']}: {first['error']}"),
                metadata={**metadata, "failed_keys": dg.MetadataValue.json(summary["errors"][:50]),
                          "traceback": dg.MetadataValue.text(stack)},
            )
        yield dg.MaterializeResult(asset_key=spec.key, metadata=metadata)
        yield _check_result(spec.key, status, errors)

    return _populate


def partitions_name(node: TableNode, attribute: str) -> str:
    return f"{dagster_name(schema_of(node))}__{dagster_name(node.cls.__name__)}__{dagster_name(attribute)}"


def _job_errors(step: Step, restriction: Optional[dict] = None, limit: int = 50) -> list[dict]:
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
