"""Migration helpers of DataJoint 2.x's ``datajoint.migrate`` that apply to joinflow.

Only ``rebuild_lineage`` is provided: the other helpers there convert DataJoint 0.14 storage
(external tables, blob and filepath columns) to 2.x, which joinflow does not read (see
docs/differences-from-datajoint.md).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from .table import LINEAGE_TABLE

__all__ = ["rebuild_lineage"]

logger = logging.getLogger("joinflow")


def rebuild_lineage(schema, dry_run: bool = True) -> dict:
    """Recompute the schema's ``~lineage`` from its tables' foreign keys (after a schema change, or
    for tables declared before there was a ``~lineage``).

    Returns ``{"tables_analyzed": n, "lineage_entries": m, "status": "dry_run" | "rebuilt"}``;
    with ``dry_run=True`` (the default) nothing is written and ``lineage_entries`` is the number of
    entries the rebuild would write.  An error is raised, not reported in the dict."""
    conn = schema.connection
    tables = schema.list_tables()
    result = {"tables_analyzed": len(tables), "lineage_entries": 0, "status": "dry_run"}
    if dry_run:
        deps = conn.dependencies
        deps.load()
        backend = conn.backend
        count = 0
        for table in tables:
            full = backend.full_table_name(schema.database, table)
            from .table import FreeTable

            heading = FreeTable(conn, full).heading
            inherited = {child for info in deps.parents(full).values() for amap in info["attr_maps"] for child in amap}
            count += len(inherited | set(heading.primary_key))
        result["lineage_entries"] = count
        logger.info("Dry run: the lineage of %d table(s) of %s would have %d entries.", len(tables),
                    schema.database, count)
        return result
    schema.rebuild_lineage()
    tc = conn.backend.table_clause(schema.database, LINEAGE_TABLE, ["table_name"])
    result["lineage_entries"] = int(conn.execute(sa.select(sa.func.count()).select_from(tc)).scalar() or 0)
    result["status"] = "rebuilt"
    return result
