"""Isolated configuration + connection pairs (for orchestrator workers and threads)."""

from __future__ import annotations

import os

from . import settings
from .errors import ThreadSafetyError


def thread_safe_mode() -> bool:
    return os.environ.get("DJ_THREAD_SAFE", "").strip().lower() in ("1", "true", "yes")


def check_thread_safe(what: str) -> None:
    if thread_safe_mode():
        raise ThreadSafetyError(
            f"{what} uses global state, which is disabled because DJ_THREAD_SAFE is set. "
            "Use dj.Instance(...) and its .Schema / .FreeTable instead."
        )


class Instance:
    """Its own config (a copy of ``dj.config`` plus the arguments) and its own connection."""

    def __init__(self, host=None, user=None, password=None, port=None, use_tls=None, backend=None, **kwargs):
        from .connection import Connection

        self.config = settings.config.copy()
        for key, value in kwargs.items():
            self.config[key.replace("__", ".")] = value
        self.connection = Connection(host, user, password, port, use_tls, backend=backend, config=self.config)

    def Schema(self, schema_name=None, context=None, **kwargs):  # noqa: N802 - DataJoint's name
        from .schemas import Schema, _caller_context

        if context is None:
            context = _caller_context()
        return Schema(schema_name, context, connection=self.connection, **kwargs)

    def FreeTable(self, full_table_name: str):  # noqa: N802
        from .table import FreeTable

        return FreeTable(self.connection, full_table_name)

    def close(self) -> None:
        self.connection.close()
