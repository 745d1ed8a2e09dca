"""Tables as Prefect assets: one materialization per table and flow run, with its upstream tables.

Asset keys carry the database's identity and the table, never credentials:

    postgresql://db.lab.org:5432/lab/ephys/spikes
    mysql://127.0.0.1:3306/ephys/spikes          (MySQL: the schema is the database)
    sqlite:///data/lab.db/ephys/spikes

A table whose run added rows gets a ``prefect.asset.materialization.succeeded`` event whose
related resources are the assets of its parent tables (Manual/Lookup sources included, as
referenced assets); a table whose run had errors gets ``...materialization.failed``; a table
that inserted nothing and had no errors gets none.  The metadata (the event's payload) holds the
counts of the run summary.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable

from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize
from prefect.cache_policies import NO_CACHE

# characters Prefect refuses in asset keys (and whitespace)
_RESTRICTED = re.compile(r"[\s#?&%\"'<>\[\]{}|\\^`]")
_MAX_KEY = 512


def asset_key(url: Any, schema: str | None, table: str) -> str:
    """``<backend>://<host>[:port]/<database>/<schema>/<table>`` of a table (no user, no password)."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        where = "/" + (url.database or "").lstrip("/")
        parts = [where.rstrip("/")]
    else:
        host = url.host or "localhost"
        parts = [f"{host}:{url.port}" if url.port else host]
        if url.database and backend == "postgresql":
            parts.append(url.database)
    if schema:
        parts.append(schema)
    parts.append(table)
    key = f"{backend}://" + "/".join(p.strip("/") if i else p for i, p in enumerate(parts))
    key = _RESTRICTED.sub("_", key)
    if len(key) > _MAX_KEY:  # shortened, still unique and the same in every process
        key = key[: _MAX_KEY - 9] + "~" + hashlib.sha1(key.encode()).hexdigest()[:8]
    return key


def table_assets(pipeline, connection_of) -> tuple[dict[str, Asset], dict[str, list[Asset]]]:
    """The asset of every table of ``pipeline`` (by full table name) and each step's upstream assets.

    A part table is its master's asset (a master and its parts are populated together).
    ``connection_of(node)`` gives a node's connection (for the database's identity).
    """
    nodes = {n.full_table_name: n for n in pipeline.nodes}
    master_of = {part: n.full_table_name for n in pipeline.nodes for part in n.parts}
    assets: dict[str, Asset] = {}
    for full, node in nodes.items():
        if full in master_of:
            continue
        try:
            url = connection_of(node).url
        except Exception:  # a table without an importable class: no asset (lineage is best effort)
            continue
        table = node.table_name or full
        assets[full] = Asset(key=asset_key(url, node.schema, table),
                             properties=AssetProperties(name=node.class_name,
                                                        description=f"joinflow {node.tier} table {full}"))
    for part, master in master_of.items():
        if master in assets:
            assets[part] = assets[master]
    upstream: dict[str, list[Asset]] = {}
    for step in pipeline.steps:
        node = nodes.get(step.full_table_name)
        own = assets.get(step.full_table_name)
        parents = _parents(node, nodes) if node is not None else []
        upstream[step.name] = sorted({assets[p] for p in parents if p in assets and assets[p] != own},
                                     key=lambda a: a.key)
    return assets, upstream


def _parents(node, nodes) -> Iterable[str]:
    """The node's parents and its parts' parents (a part's foreign keys are the master's inputs)."""
    names = list(node.parents)
    for part in node.parts:
        if part in nodes:
            names.extend(nodes[part].parents)
    return names


def _materialize_table(summary_json: str) -> dict:
    """Record the table's run in its asset: the counts as metadata; errors fail the materialization."""
    summary = json.loads(summary_json)
    metadata = {k: summary.get(k) for k in ("table", "state", "rows_added", "errors", "pending_left", "job_errors")}
    from prefect.context import AssetContext

    ctx = AssetContext.get()
    for asset in (ctx.downstream_assets if ctx else ()):
        add_asset_metadata(asset, metadata)
    if summary.get("errors"):
        raise RuntimeError(f"{summary.get('table')}: {summary.get('errors')} error(s) in this run; "
                           f"{summary.get('rows_added')} row(s) added. {(summary.get('messages') or [''])[0]}")
    return metadata


# a placeholder asset; each table's task gets its own asset and upstream assets with with_options
materialize_table = materialize("joinflow://table", by="joinflow", name="materialize", cache_policy=NO_CACHE,
                                persist_result=False)(_materialize_table)


def should_materialize(summary: dict) -> bool:
    """A run that added rows, or had errors; never a run that changed nothing."""
    return bool(summary.get("rows_added")) or bool(summary.get("errors"))
