"""A Prefect block holding the joinflow database URL (so no credentials live in code)."""

from __future__ import annotations

import os
import threading

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

_applied: dict[str, str] = {}  # block name -> URL applied in this process
_lock = threading.Lock()


class JoinflowDatabase(Block):
    """The database a joinflow pipeline connects to, as an SQLAlchemy URL.

    Save it once (``JoinflowDatabase(url="postgresql+psycopg://user:pw@host/db").save("lab-db")``
    or in the Prefect UI) and pass ``database_block="lab-db"`` to ``joinflow_flow``: every
    flow run and every task (in any worker process) loads it *before* importing the
    pipeline modules, so their ``dj.Schema(...)`` connect to it.
    """

    _block_type_name = "Joinflow Database"
    _block_type_slug = "joinflow-database"
    _description = "SQLAlchemy URL of the database of a joinflow pipeline (sqlite, postgresql, mysql)."

    url: SecretStr = Field(
        default=...,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:password@host:5432/lab",
    )

    def apply(self) -> None:
        """Make this URL joinflow's default connection in this process (``dj.config`` and env).

        Effective for pipeline modules imported afterwards (modules that create their own
        ``dj.Connection(url=...)`` keep theirs).
        """
        import joinflow as dj

        url = self.url.get_secret_value()
        dj.config["database.url"] = url
        os.environ["JOINFLOW_DATABASE_URL"] = url  # child processes started from here


def apply_database_block(name: str | None) -> None:
    """Load the named block and apply it, once per process (a no-op for ``None``)."""
    if not name:
        return
    with _lock:
        if name in _applied:
            return
        block = JoinflowDatabase.load(name)
        block.apply()
        _applied[name] = "applied"
