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


class ConfigProxy:
    """``dj.config``: the global configuration, refused in thread-safe mode (``DJ_THREAD_SAFE``).

    Every read and write goes to ``settings.config``; with ``DJ_THREAD_SAFE`` set each access
    raises :class:`ThreadSafetyError` so that threads and workers keep their own configuration
    in a ``dj.Instance``.
    """

    __slots__ = ("_target",)

    def __init__(self, target):
        object.__setattr__(self, "_target", target)

    def _config(self):
        check_thread_safe("dj.config")
        return object.__getattribute__(self, "_target")

    def __getattr__(self, name):
        return getattr(self._config(), name)

    def __setattr__(self, name, value):
        setattr(self._config(), name, value)

    def __getitem__(self, key):
        return self._config()[key]

    def __setitem__(self, key, value):
        self._config()[key] = value

    def __delitem__(self, key):
        del self._config()[key]

    def __contains__(self, key):
        return key in self._config()

    def __iter__(self):
        return iter(self._config())

    def __repr__(self):
        return repr(self._config())


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
