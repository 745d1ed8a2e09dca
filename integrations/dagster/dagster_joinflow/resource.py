"""The Dagster resource through which joinflow assets populate their tables."""

from __future__ import annotations

import os
import time
from typing import Optional

import dagster as dg
from joinflow.errors import DataJointError
from joinflow.pipeline import Step, WrongDatabaseError, load_step
from pydantic import Field
from sqlalchemy.engine import make_url


def _same_database(a, b) -> bool:
    """Whether two SQLAlchemy URLs name the same database (driver and password ignored)."""
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return os.path.realpath(a.database or "") == os.path.realpath(b.database or "")
    return (a.host or "localhost", a.port, a.database or "", a.username or "") == \
        (b.host or "localhost", b.port, b.database or "", b.username or "")


class JoinflowResource(dg.ConfigurableResource):
    """Runs joinflow steps for Dagster assets.

    A joinflow pipeline module binds its tables to a connection when it is imported (as
    in DataJoint), so the code location and every run worker must import it with the
    same database configuration, e.g. ``JOINFLOW_DATABASE_URL`` set in the environment.
    ``database_url`` (typically ``EnvVar("JOINFLOW_DATABASE_URL")``) states which database
    the runs must use: a step whose module is bound elsewhere fails before computing
    anything, instead of writing to the wrong database.
    """

    database_url: Optional[str] = Field(
        default=None,
        description="SQLAlchemy URL of the pipeline's database; steps bound to another database are refused.",
    )

    def get_step(self, name: str, database: Optional[dict] = None) -> Step:
        """The step ``module:Class``, imported (and bound) as in any worker process.

        ``database``: the pipeline's ``{"backend", "host", "name"}`` (recorded when the assets were
        built).  A worker with no database configured (joinflow's defaults alone would create a new
        SQLite file), a missing SQLite file, or another database fails the step before any work,
        without a retry; so does a step bound elsewhere than ``database_url``.
        """
        setting = ("JoinflowResource.database_url / JOINFLOW_DATABASE_URL of the code location and the run "
                   "worker (or dj.config / joinflow.toml)")
        try:
            step = load_step(name, database, setting=setting)
        except WrongDatabaseError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        if self.database_url:
            bound = step.table.connection.url
            wanted = make_url(self.database_url)
            if not _same_database(bound, wanted):
                raise dg.Failure(
                    description=(
                        f"joinflow step {name} is bound to {bound.render_as_string(hide_password=True)} but "
                        f"JoinflowResource.database_url is {wanted.render_as_string(hide_password=True)}. "
                        "Set JOINFLOW_DATABASE_URL (or dj.config) for the code location so that the pipeline "
                        "module is imported with the same database."
                    ),
                    allow_retries=False,
                )
        return step

    def populate(self, name: str, *, restriction: Optional[dict] = None, retry_errors: bool = False,
                 max_calls: Optional[int] = None, database: Optional[dict] = None) -> dict:
        """Populate the pending keys of one step through its job table (exactly once per key).

        ``restriction`` (e.g. ``{"session": 3}``) limits the run to the matching keys (one
        partition).  ``retry_errors`` re-pends the errors of these keys first.  Returns the
        step's summary: rows_added, errors, error_count, pending_left, duration.
        """
        step = self.get_step(name, database)
        keys = None
        if retry_errors and restriction is not None:  # errors are not pending: re-pend this partition's first
            step.retry_errors(restriction)
        if restriction is not None:
            keys = [key for batch in step.pending_keys(10_000, restriction) for key in batch]
        for attempt in range(3):
            try:
                return step.run(keys, retry_errors=retry_errors, max_calls=max_calls)
            except DataJointError as exc:
                # Workaround: two workers that touch a step's job table for the first time at
                # once can both try to create it; on PostgreSQL the loser gets "type ...
                # already exists" (the table's row type or its enum type).  Make errors never
                # escape run(), so this came from creating the job table, before any key was
                # reserved.  The table exists now: run again.
                if attempt == 2 or "already exists" not in str(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")
