"""Deploy-time operations on an existing pipeline (DataJoint's ``dj.deploy``).

Each one is idempotent: safe to run from a deploy hook on every release.

* ``add_prov_column(target, dry_run=True)`` adds the hidden provenance attribute
  ``_prov = null : json`` to the Manual tables that lack it (see joinflow.provenance).
"""

from __future__ import annotations

from typing import Any

from .backends.base import AlterPlan, ColumnChange
from .errors import DataJointError
from .provenance import PROV_ATTRIBUTE, prov_attribute


def _target_tables(target, what: str):
    """(connection, schema name, table names) of a Schema, a Table class or a Table instance."""
    from .schemas import Schema
    from .table import Table

    if isinstance(target, Schema):
        if target.connection is None or not target.database:
            raise DataJointError(f"The schema is not activated; call schema.activate(name) before {what}().")
        return target.connection, target.database, list(target.list_tables())
    if isinstance(target, type) and issubclass(target, Table):
        target = target()
    if isinstance(target, Table):
        target._check_bound()
        return target.connection, target.database, [target.table_name]
    raise DataJointError(
        f"{what}(target): target must be a Schema or a Table class/instance, not {type(target).__name__}.")


def add_prov_column(target, dry_run: bool = True) -> dict[str, Any]:
    """Add ``_prov`` (hidden, ``null : json``) to the Manual tables of ``target`` that lack it.

    ``target``: a Schema (each of its Manual tables) or a Table class/instance.  Lookup,
    Computed, Imported and Part tables are skipped (a computed row's provenance is its
    foreign keys; a part shares its master's).  Rows already there keep NULL; inserts made
    while ``config["provenance.capture"]`` is on fill the column from then on (in this
    process too: the cached heading is dropped).

    ``dry_run=True`` (the default) changes nothing and returns the SQL it would run.
    Returns ``{"tables_analyzed", "tables_modified", "columns_added", "ddl", "details"}``;
    ``details`` has one ``{"table", "status"}`` per Manual table, status ``"already_present"``,
    ``"pending"`` (dry run) or ``"added"``.
    """
    from .table import tier_of

    conn, database, names = _target_tables(target, "add_prov_column")
    if conn.in_transaction:
        raise DataJointError("add_prov_column() changes tables; call it outside a transaction.")
    backend = conn.backend
    attr = prov_attribute()
    result: dict[str, Any] = {"tables_analyzed": 0, "tables_modified": 0, "columns_added": 0,
                              "ddl": [], "details": []}
    try:
        for name in names:
            if tier_of(name) != "Manual":
                continue
            result["tables_analyzed"] += 1
            full = backend.full_table_name(database, name)
            loaded = backend.load_columns(conn, database, name)
            if loaded is None:
                raise DataJointError(f"Table {full} is not declared; declare it before add_prov_column().")
            if any(c.name == PROV_ATTRIBUTE for c in loaded[0]):
                result["details"].append({"table": full, "status": "already_present"})
                continue
            # the same ADD COLUMN that Table.alter() runs (backends' alter_statements/alter_table)
            plan = AlterPlan(changes=[ColumnChange(old=None, new=attr)], comment=None)
            result["ddl"].extend(backend.alter_statements(conn, database, name, plan))
            if dry_run:
                result["details"].append({"table": full, "status": "pending"})
                continue
            try:
                backend.alter_table(conn, database, name, plan)
            except DataJointError as exc:
                raise type(exc)(f"add_prov_column: adding `{PROV_ATTRIBUTE}` to {full} failed; the table is "
                                f"unchanged: {exc}") from exc
            result["details"].append({"table": full, "status": "added"})
            result["tables_modified"] += 1
            result["columns_added"] += 1
    finally:
        if result["tables_modified"]:
            conn.forget_catalog()
    return result
