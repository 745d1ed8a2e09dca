"""The ``joinflow`` Airflow connection type and its hook."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseHook

ENV_URL = "JOINFLOW_DATABASE_URL"
DEFAULT_DIALECT = "postgresql+psycopg"


def _is_not_found(exc: BaseException) -> bool:
    # airflow.exceptions and airflow.sdk.exceptions each define their own class of this name
    return type(exc).__name__ == "AirflowNotFoundException"


class JoinflowHook(BaseHook):
    """Resolves the SQLAlchemy URL of a joinflow database, keeping credentials out of DAG files.

    Lookup order: the Airflow connection ``joinflow_conn_id`` (conn type ``joinflow``), then
    the ``JOINFLOW_DATABASE_URL`` environment variable, then nothing (joinflow's own
    ``dj.config`` defaults apply).  A connection gives the URL either whole, as the extra
    ``{"url": "sqlite:////data/lab.db"}``, or in fields: host, port, login, password, schema
    (the database name) and the extra ``dialect`` (default ``postgresql+psycopg``).  As an
    environment variable::

        AIRFLOW_CONN_JOINFLOW_DEFAULT='{"conn_type": "joinflow", "host": "db", "port": 5432,
            "login": "lab", "password": "...", "schema": "lab"}'
    """

    conn_name_attr = "joinflow_conn_id"
    default_conn_name = "joinflow_default"
    conn_type = "joinflow"
    hook_name = "joinflow"

    def __init__(self, joinflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.joinflow_conn_id = joinflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"schema": "Database"},
            "placeholders": {
                "extra": '{"dialect": "postgresql+psycopg"}  or  {"url": "sqlite:////data/lab.db"}',
                "host": "db.example.org",
                "port": "5432",
            },
        }

    def _connection(self):
        if not self.joinflow_conn_id:
            return None
        try:
            return self.get_connection(self.joinflow_conn_id)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise

    def get_url(self) -> str | None:
        """The database URL, or None when neither the connection nor the env var gives one."""
        conn = self._connection()
        if conn is not None:
            url = url_from_connection(conn)
            if url:
                return url
        return os.environ.get(ENV_URL) or None

    def get_conn(self) -> str | None:
        """Airflow's hook entry point; for joinflow the 'connection' is its URL."""
        return self.get_url()

    def test_connection(self) -> tuple[bool, str]:
        url = self.get_url()
        if not url:
            return False, f"no URL: define connection {self.joinflow_conn_id!r} or set {ENV_URL}"
        try:
            import joinflow as dj

            conn = dj.Connection(url=url)
            conn.close()
        except Exception as exc:  # report, don't raise: this runs from the UI
            return False, str(exc)
        return True, "connected"


def url_from_connection(conn) -> str | None:
    """The SQLAlchemy URL described by an Airflow connection of type ``joinflow``."""
    extra = conn.extra_dejson or {}
    if extra.get("url"):
        return str(extra["url"])
    if not (conn.host or conn.schema):
        return None
    from sqlalchemy.engine import URL

    dialect = extra.get("dialect") or DEFAULT_DIALECT
    return URL.create(dialect, username=conn.login or None, password=conn.password or None,
                      host=conn.host or None, port=conn.port or None,
                      database=conn.schema or None).render_as_string(hide_password=False)


def resolve_database(conn_id: str | None) -> str:
    """Apply the database of ``conn_id`` in this worker before a pipeline module is imported, and
    return how to name that setting in errors.

    ``conn_id`` None: joinflow's own settings (``JOINFLOW_DATABASE_URL``, ``dj.config``,
    ``joinflow.toml``).  A ``conn_id`` that is not defined (a typo, a worker without the
    connection) and no ``JOINFLOW_DATABASE_URL`` fails here: never joinflow's defaults, which
    would create a new SQLite file in the worker's working directory.
    """
    if not conn_id:
        return f"{ENV_URL} (or dj.config / joinflow.toml; the DAG has conn_id=None)"
    url = JoinflowHook(conn_id).get_url()
    if not url:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"joinflow: the Airflow connection {conn_id!r} is not defined (or gives neither a URL nor a host or "
            f"database) and {ENV_URL} is not set, so this worker does not know the pipeline's database. Define the "
            f"connection (type joinflow; e.g. AIRFLOW_CONN_{conn_id.upper()}), set {ENV_URL}, or build the DAG with "
            "conn_id=None to use joinflow's own settings (dj.config / joinflow.toml).")
    apply_url(url)
    return f"the Airflow connection {conn_id!r} (or {ENV_URL})"


def apply_url(url: str | None) -> None:
    """Make ``url`` joinflow's default database in this process (and its children)."""
    if not url:
        return
    import joinflow as dj

    dj.config["database.url"] = url
    os.environ[ENV_URL] = url
