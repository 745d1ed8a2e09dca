"""Parallel work inside one table: a graph-backed asset that fans out over key shards.

A table with ``shards=N`` (translator option, e.g. ``DagsterJoinflowTranslator(shards={"RunQC": 4})``)
becomes a graph of three ops instead of one:

* ``plan``: the shards of the pending keys that have work (``Step.plan(N)``), one dynamic
  output each;
* ``shard`` (mapped): ``Step.run(shard=i, nshards=N)`` for one shard, then ``Step.run()`` to
  help with keys still pending (hash shards are uneven: 100 integer keys split 37/22/21/20
  into 4), so the multiprocess executor (or k8s / celery / docker: any executor) runs the
  shards in separate processes and they finish together;
* ``collect``: one materialization with the summed counts, the ``no_job_errors`` check, and
  ``dagster.Failure`` if any make failed (the other keys are computed all the same).

Every key still goes through the job table: a key is computed once even when shards of two
overlapping runs (or a retried shard) meet it.  A shard's key set is a stable hash of the
key, so a key that turns pending after the plan belongs to a shard of a later run.
"""

# no "from __future__ import annotations": Dagster reads the op annotations at definition time

import inspect
import os
import time
from typing import Any, Optional

import dagster as dg
from joinflow.pipeline import TableNode

from .resource import JoinflowResource

NO_JOB_ERRORS = "no_job_errors"  # the check name of every joinflow asset (as in assets.py)
FIRST_ERRORS_SHOWN = 5


def sharded_step_asset(node: TableNode, spec: dg.AssetSpec, check: Optional[dg.AssetCheckSpec], *, name: str,
                       nshards: int, resource_key: str, retry_policy: Optional[dg.RetryPolicy] = None,
                       pool: Optional[str] = None, op_tags: Optional[dict] = None,
                       database: Optional[dict] = None) -> dg.AssetsDefinition:
    """The asset of ``node`` computed by ``nshards`` shard ops (see the module docstring).

    ``database``: the pipeline's database identity, checked by the resource in every op
    (as the unsharded asset does) when the resource takes one.  ``check``: the
    ``no_job_errors`` check evaluated by ``collect`` (then any failed make fails the asset);
    ``None`` where the check is a definition of its own: then ``collect`` materializes the
    rows that were computed (with the error count) and fails only when nothing was inserted.
    """
    if not isinstance(nshards, int) or isinstance(nshards, bool) or nshards < 1:
        raise ValueError(f"shards of {node.name} must be an integer >= 1, not {nshards!r}.")
    if spec.partitions_def is not None:
        raise ValueError(f"{node.name} has partitions and shards={nshards}: use one or the other "
                         "(a partition is already a unit of parallel work).")
    step_name = node.name
    tags = {**(op_tags or {}), "joinflow/step": step_name}
    key = spec.key

    def get_step(resource: JoinflowResource):
        return resource.get_step(step_name) if database is None else resource.get_step(step_name, database)

    @dg.op(name=f"{name}__plan", ins={"after": dg.In(dg.Nothing)}, out=dg.DynamicOut(dict),
           required_resource_keys={resource_key}, tags=tags)
    def plan(context: dg.OpExecutionContext):
        resource: JoinflowResource = getattr(context.resources, resource_key)
        step = get_step(resource)
        before = step.status()  # also creates the job table once, before the shards run at the same time
        shards = step.plan(nshards)
        context.log.info(f"{step_name}: {before['pending']} pending keys in {len(shards)} of {nshards} shards")
        for shard in shards:
            yield dg.DynamicOutput({**shard, "pending_before": before["pending"]},
                                   mapping_key=f"shard_{shard['shard']}")

    @dg.op(name=f"{name}__shard", required_resource_keys={resource_key}, retry_policy=retry_policy,
           pool=pool, tags=tags)
    def run_shard(context: dg.OpExecutionContext, shard: dict) -> dict:
        resource: JoinflowResource = getattr(context.resources, resource_key)
        step = get_step(resource)
        own = step.run(shard=shard["shard"], nshards=nshards, retry_errors=context.retry_number > 0)
        # then help with what is still pending (keys of shards whose op started late): the job
        # table hands each key to one worker, so the shards end together instead of waiting
        # for the largest hash shard.  Keys that failed in this run are errors, not pending.
        rest = step.run()
        summary = {"rows_added": own["rows_added"] + rest["rows_added"], "errors": own["errors"] + rest["errors"],
                   "error_count": own["error_count"] + rest["error_count"],
                   "duration": round(own["duration"] + rest["duration"], 3), "helped": rest["rows_added"]}
        context.log.info(f"{step_name} shard {shard['shard']}/{nshards} (pid {os.getpid()}): "
                         f"{summary['rows_added']} computed ({rest['rows_added']} of other shards), "
                         f"{summary['error_count']} errors")
        return {**summary, "shard": shard["shard"], "pid": os.getpid(),
                "pending_before": shard["pending_before"]}

    outs = {"result": dg.Out(dg.Nothing)}
    if check is not None:
        outs["check"] = dg.Out(dg.Nothing)

    @dg.op(name=f"{name}__collect", out=outs,
           required_resource_keys={resource_key}, tags=tags)
    def collect(context: dg.OpExecutionContext, summaries: list):
        started = time.time()
        resource: JoinflowResource = getattr(context.resources, resource_key)
        step = get_step(resource)
        status = step.status()
        errors = [e for s in summaries for e in s["errors"]]
        pending_before = summaries[0]["pending_before"] if summaries else status["pending"]
        metadata = {
            "rows_added": sum(s["rows_added"] for s in summaries),
            "pending_before": pending_before,
            "pending_left": status["pending"],
            "errors": len(errors),
            "shards": dg.MetadataValue.json(
                [{"shard": s["shard"], "rows_added": s["rows_added"], "of_other_shards": s["helped"],
                  "errors": s["error_count"], "duration_s": s["duration"], "pid": s["pid"]} for s in sorted(summaries, key=lambda s: s["shard"])]),
            "duration_s": dg.MetadataValue.float(round(max([s["duration"] for s in summaries] or [0.0])
                                                       + time.time() - started, 3)),
            "job_counts": dg.MetadataValue.json(status),
            "dagster/row_count": status["done"],
        }
        if check is None:
            if errors and not metadata["rows_added"]:
                first = errors[0]
                raise dg.Failure(
                    description=(f"{len(errors)} make call(s) of {step_name} failed, nothing inserted "
                                 f"({len(summaries)} shards). First: key {first['key']}: {first['error']}"),
                    metadata={**metadata, "failed_keys": dg.MetadataValue.json(errors[:50])},
                )
            if errors:  # the good keys are materialized; the no_job_errors check reports the rest
                context.log.warning(f"{step_name}: {len(errors)} make call(s) failed; first: {errors[0]}")
            yield dg.Output(None, output_name="result", metadata=metadata)
            return
        check_result = _check_result(key, status, step.errors(limit=FIRST_ERRORS_SHOWN))
        if errors:
            yield check_result
            first = errors[0]
            raise dg.Failure(
                description=(f"{len(errors)} make call(s) of {step_name} failed ({metadata['rows_added']} keys "
                             f"computed in {len(summaries)} shards). First: key {first['key']}: {first['error']}"),
                metadata={**metadata, "failed_keys": dg.MetadataValue.json(errors[:50])},
            )
        yield dg.Output(None, output_name="result", metadata=metadata)
        yield check_result

    ins = {f"dep_{i}": dg.AssetIn(key=d.asset_key, dagster_type=dg.Nothing) for i, d in enumerate(spec.deps)}
    check_output = None if check is None else check.get_python_identifier()  # the graph output of the check

    def compose(**upstream):
        planned = plan(after=list(upstream.values())) if upstream else plan()
        if check is None:
            return {"result": collect(planned.map(run_shard).collect())}
        result, check_done = collect(planned.map(run_shard).collect())
        return {"result": result, check_output: check_done}

    # the graph's parameters are the upstream assets (ordering only: Nothing inputs)
    compose.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in ins])
    return dg.graph_multi_asset(
        name=name,
        outs={"result": dg.AssetOut.from_spec(spec.replace_attributes(deps=[]))},
        ins=ins,
        check_specs=[] if check is None else [check],
        group_name=spec.group_name,  # (AssetOut.from_spec drops the group in graph assets)
    )(compose)


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
                 for e in errors[:FIRST_ERRORS_SHOWN]]),
        },
    )


def shard_count(translator: Any, node: TableNode) -> int:
    """The translator's shard count of a table (1: one op, the default)."""
    get = getattr(translator, "get_shards", None)
    return 1 if get is None else get(node)
