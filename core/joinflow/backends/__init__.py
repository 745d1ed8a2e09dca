"""Database backends: one module per dialect.  Only this package branches on the dialect."""

from __future__ import annotations

from ..errors import DataJointError
from .base import Backend, ColumnInfo, ForeignKeyInfo

ALIASES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def get_backend(name: str) -> Backend:
    """A fresh backend object for a backend name or SQLAlchemy dialect name."""
    key = ALIASES.get((name or "").lower())
    if key == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend()
    if key == "postgresql":
        from .postgresql import PostgreSQLBackend

        return PostgreSQLBackend()
    if key == "mysql":
        from .mysql import MySQLBackend

        return MySQLBackend()
    raise DataJointError(
        f"Unknown database backend {name!r}. Set config['database.backend'] to 'sqlite', "
        "'postgresql' or 'mysql' (or DJ_BACKEND)."
    )


__all__ = ["Backend", "ColumnInfo", "ForeignKeyInfo", "get_backend"]
