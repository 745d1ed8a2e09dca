"""A sensor that launches runs of joinflow assets when their inputs change."""

from __future__ import annotations

import hashlib
import json
from typing import Optional, Sequence, Union

import dagster as dg
from joinflow.pipeline import load_step

from .assets import step_assets

MAX_PARTITION_REQUESTS = 1000  # per tick; the rest come on the next ticks


def _downstream_closure(dirty: set[dg.AssetKey], graph: dict[dg.AssetKey, dict]) -> set[dg.AssetKey]:
    children: dict[dg.AssetKey, list[dg.AssetKey]] = {k: [] for k in graph}
    for key, info in graph.items():
        for dep in info["deps"]:
            children.setdefault(dep, []).append(key)
    found = set(dirty)
    frontier = list(dirty)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def build_joinflow_sensor(
    assets: Sequence[Union[dg.AssetsDefinition, dg.AssetSpec]],
    *,
    name: str = "joinflow_sensor",
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    description: Optional[str] = None,
) -> dg.SensorDefinition:
    """A sensor over the joinflow assets in ``assets`` (from :func:`build_joinflow_assets`).

    Each tick reads every step's ``change_token()`` (row counts of the table and its
    parents: a few count queries); only for steps whose token differs from the cursor
    does it count pending keys (one anti-join).  Steps with pending keys and their
    downstream joinflow assets are requested in one run, whose ``run_key`` is derived
    from the tokens, so a repeated tick never launches the same run twice.

    Partitioned assets (a translator's ``get_partition_attribute``) get their new
    partitions added (``AddDynamicPartitionsRequest``) and one run per partition with
    pending keys.
    """
    graph = step_assets(assets)
    if not graph:
        raise ValueError("build_joinflow_sensor needs assets from build_joinflow_assets (no joinflow step found).")
    unpartitioned = {k for k, v in graph.items() if v["partitions_def"] is None}
    ordered = list(graph)

    @dg.sensor(
        name=name,
        target=dg.AssetSelection.assets(*ordered),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=description or "Launches runs of joinflow assets whose steps have new pending keys.",
    )
    def _joinflow_sensor(context: dg.SensorEvaluationContext):
        previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        tokens: dict[str, str] = {}
        dirty: set[dg.AssetKey] = set()
        partition_runs: list[dg.RunRequest] = []
        partition_adds: list[dg.AddDynamicPartitionsRequest] = []
        pending_seen: dict[str, int] = {}
        for key in ordered:
            info = graph[key]
            step = load_step(info["step"])
            token = step.change_token()
            tokens[info["step"]] = token
            if previous.get(info["step"]) == token:
                continue
            if key in unpartitioned:
                count = step.pending_count()
                pending_seen[key.to_user_string()] = count
                if count:
                    dirty.add(key)
                continue
            attribute = info["partition_attribute"]
            pdef: dg.DynamicPartitionsDefinition = info["partitions_def"]
            values = sorted({str(k[attribute]) for batch in step.pending_keys(10_000) for k in batch})
            pending_seen[key.to_user_string()] = len(values)
            known = set(context.instance.get_dynamic_partitions(pdef.name))
            new = [v for v in values if v not in known]
            if new:
                partition_adds.append(pdef.build_add_request(new))
            if len(values) > MAX_PARTITION_REQUESTS:
                tokens[info["step"]] = previous.get(info["step"], "")  # look again next tick (run keys dedupe)
            for value in values[:MAX_PARTITION_REQUESTS]:
                partition_runs.append(dg.RunRequest(run_key=f"{key.to_user_string()}:{value}:{token}",
                                                    asset_selection=[key], partition_key=value))
        runs = list(partition_runs)
        if dirty:
            selection = sorted(_downstream_closure(dirty, graph) & unpartitioned, key=ordered.index)
            signature = hashlib.md5(json.dumps(sorted(tokens.items())).encode()).hexdigest()[:16]
            runs.insert(0, dg.RunRequest(run_key=f"joinflow:{signature}", asset_selection=selection,
                                         tags={"joinflow/pending": json.dumps(pending_seen)}))
        cursor = json.dumps(tokens, sort_keys=True)
        if not runs and not partition_adds:
            context.update_cursor(cursor)
            return dg.SkipReason("No joinflow step has new pending keys.")
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=partition_adds, cursor=cursor)

    return _joinflow_sensor
