"""The ``~lineage`` table of a schema (DataJoint 2.x's layout and functions).

Each row names where an attribute's values come from (``schema.table.attribute``): a table's own
primary-key attributes are their own origin, attributes received through a foreign key keep the
parent's origin.  Joins and restrictions compare lineages so that two attributes that merely
share a name are not matched (semantic matching).  The table is created with a schema's first
table; ``rebuild_schema_lineage`` recomputes it from the foreign keys in the catalog.
"""

from __future__ import annotations

import sqlalchemy as sa

from .table import LINEAGE_TABLE, load_lineage, write_lineage

__all__ = ["LINEAGE_TABLE", "ensure_lineage_table", "lineage_table_exists", "get_lineage", "get_table_lineages",
           "get_schema_lineages", "insert_lineages", "delete_table_lineages", "rebuild_schema_lineage"]

_COLUMNS = ["table_name", "attribute_name", "lineage"]


def lineage_table_exists(connection, database: str) -> bool:
    return connection.backend.load_columns(connection, database, LINEAGE_TABLE) is not None


def ensure_lineage_table(connection, database: str) -> None:
    """Create ``~lineage`` in ``database`` unless it is there."""
    if not lineage_table_exists(connection, database):
        from .schemas import create_lineage_table

        create_lineage_table(connection, database)
        connection.forget_catalog()


def get_table_lineages(connection, database: str, table_name: str) -> dict[str, str]:
    """``{attribute: lineage}`` of one table ({} without a ``~lineage`` table)."""
    if not lineage_table_exists(connection, database):
        return {}
    return load_lineage(connection, database, table_name)


def get_lineage(connection, database: str, table_name: str, attribute_name: str) -> str | None:
    return get_table_lineages(connection, database, table_name).get(attribute_name)


def get_schema_lineages(connection, database: str) -> dict[str, str]:
    """``{"schema.table.attribute": lineage}`` of every row of the schema's ``~lineage``."""
    if not lineage_table_exists(connection, database):
        return {}
    tc = connection.backend.table_clause(database, LINEAGE_TABLE, _COLUMNS)
    rows = connection.execute(sa.select(tc.c.table_name, tc.c.attribute_name, tc.c.lineage)).fetchall()
    return {f"{database}.{t}.{a}": lin for t, a, lin in rows}


def insert_lineages(connection, database: str, entries) -> None:
    """Write ``(table_name, attribute_name, lineage)`` entries, replacing those tables' rows, in one
    transaction."""
    entries = list(entries)
    ensure_lineage_table(connection, database)
    by_table: dict[str, list] = {}
    for table, attribute, lineage in entries:
        by_table.setdefault(table, []).append((table, attribute, lineage))
    with connection.transaction_if_needed():
        for table, rows in by_table.items():
            write_lineage(connection, database, table, rows)


def delete_table_lineages(connection, database: str, table_name: str) -> None:
    if lineage_table_exists(connection, database):
        write_lineage(connection, database, table_name, [])


def rebuild_schema_lineage(connection, database: str) -> None:
    """Recompute the schema's ``~lineage`` from the foreign keys in the catalog."""
    from .schemas import Schema

    Schema(database, connection=connection, create_schema=False).rebuild_lineage()
