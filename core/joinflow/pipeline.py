"""The pipeline interface: the one surface the orchestrator adapters consume.

A :class:`Pipeline` is built from modules, schemas or table classes.  Its *steps* are the
auto-populated (Imported/Computed) tables in topological order.  Each step has an
importable identity (``"module:Class"``) so that any worker process on any machine can
rebuild it with :func:`load_step`, upstream steps, a pending-key count (one anti-join),
pending keys in batches, ``run()`` that populates exactly the given keys (or one hash
shard) through the job table, ``status()`` and a cheap ``change_token()``.

A pipeline's structure can be saved as a *manifest* (:meth:`Pipeline.to_manifest`, or
``python -m joinflow.pipeline manifest MODULE -o pipeline.json``): JSON with the format name
and version, the modules, schemas and database (backend, host, database name; never
credentials), every table (``module:Class`` name, tier, schema, table name, full table name,
parents, parts, ``code_version``; ``"external": true`` for a computed table outside the
selection) in topological order, the steps with their upstream steps (and ``settings`` when a
step has any), ``selection`` when the pipeline is a selection (``select=`` / ``exclude=``,
see :mod:`joinflow.selection`), and ``hash``:
``"sha256:"`` + the SHA-256 of the canonical JSON (sorted keys, separators ``,`` and ``:``,
ASCII) of every other key.  :meth:`Pipeline.from_manifest` rebuilds the nodes and steps from
it without importing a module or connecting (a step imports its class on first use), so an
orchestrator can build its task graph without a database.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import importlib
import json
import os
import sys
import time
import types
from typing import Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa

from .autopopulate import AutoPopulate
from .condition import Not
from .errors import DataJointError, WrongDatabaseError
from .selection import SETTINGS_ATTRIBUTE, Graph, check_settings, code_version, normalize_selectors
from .table import Table
from .user_tables import Part, UserTable

TIERS = ("Lookup", "Manual", "Imported", "Computed")


def step_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def load_class(name: str) -> type:
    """``"package.module:Class"`` (or ``Master.Part``) -> the table class, importing the module."""
    _check_step_name(name)
    module_name, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_step(name: str, database: dict | None = None, *, setting: str | None = None) -> "Step":
    """The step ``"module:Class"`` as an orchestrator's worker runs it: imported and checked.

    The module is imported under :func:`expect_database`: no connection made while it loads may
    come from joinflow's defaults alone (an unconfigured worker), create an SQLite file, or (with
    ``database``, the manifest's ``{"backend", "host", "name"}``) go to another database; then
    the step's table must be bound to that database (:meth:`Step.verify_database`).  Any of these
    raises :class:`~joinflow.errors.WrongDatabaseError` naming both databases and ``setting``
    (the adapter's name for the setting to fix, e.g. its connection id).
    """
    step = Step(name, database=database, setting=setting)
    step.cls  # noqa: B018 - import, bind and verify now
    return step


# -- the database of an orchestrated step -----------------------------------------------------------
DEFAULT_SETTING = ("JOINFLOW_DATABASE_URL (or dj.config / joinflow.toml; in an orchestrator its own "
                   "setting: the Airflow connection, the Prefect JoinflowDatabase block, the Dagster "
                   "JoinflowResource.database_url)")


def database_of(connection_or_url: Any) -> dict:
    """``{"backend", "host", "name"}`` of a connection or SQLAlchemy URL, as the manifest records it
    (never credentials; for SQLite the file's name without its folder, host None)."""
    url = getattr(connection_or_url, "url", connection_or_url)
    return {"backend": url.get_backend_name(), "host": url.host,
            "name": (url.database or "").replace(os.sep, "/").rsplit("/", 1)[-1] or None}


def _backend_of(database: dict):
    from .backends import get_backend

    return get_backend(database.get("backend") or "")


def same_database(a: dict, b: dict) -> bool:
    """Whether two ``{"backend", "host", "name"}`` name the same database (loopback names are one
    host; MySQL's URL database is not compared: its schemas are the server's databases)."""
    backend_a, backend_b = _backend_of(a), _backend_of(b)
    if backend_a.name != backend_b.name:
        return False
    if backend_a.url_database_holds_schemas and (a.get("name") or None) != (b.get("name") or None):
        return False
    return _host(a.get("host")) == _host(b.get("host"))  # SQLite: None on both sides


def _host(host: str | None) -> str:
    host = (host or "").lower().strip("[]")
    return "localhost" if host in ("", "localhost", "127.0.0.1", "::1") else host


def describe_database(database: dict | None) -> str:
    """``PostgreSQL database 'lab' on db.example.org`` / ``SQLite file 'lab.db'`` (no credentials)."""
    if not database:
        return "an unknown database"
    try:
        backend = _backend_of(database).name
    except DataJointError:
        backend = str(database.get("backend"))
    if backend == "sqlite":
        return f"the SQLite file {database.get('name')!r}"
    label = {"postgresql": "PostgreSQL", "mysql": "MySQL"}.get(backend, backend)
    if backend == "mysql":
        return f"the {label} server {database.get('host') or 'localhost'}"
    return f"the {label} database {database.get('name')!r} on {database.get('host') or 'localhost'}"


def _refuse_unconfigured(what: str, path: str, database: dict | None, setting: str) -> None:
    expected = f"; the pipeline's database is {describe_database(database)}" if database else ""
    raise WrongDatabaseError(
        f"{what}: joinflow has no database configured in this worker (no JOINFLOW_DATABASE_URL, no DJ_*/JOINFLOW_* "
        f"database variable, no joinflow.toml, no dj.config database setting), so it would open a new SQLite file "
        f"{path}{expected}. A step run by an orchestrator never creates a database: set {setting}.")


def _check_connection(what: str, database: dict | None, setting: str, backend, url, configured: bool) -> None:
    """Refuse a connection an orchestrated step must not open (see :func:`expect_database`)."""
    new_file = backend.would_create(url)
    if not configured:
        _refuse_unconfigured(what, new_file or url.database or "joinflow.db", database, setting)
    if new_file is not None:
        expected = f"; the pipeline's database is {describe_database(database)}" if database else ""
        raise WrongDatabaseError(
            f"{what}: the SQLite database file {new_file} does not exist{expected}. A step run by an orchestrator "
            f"never creates a database: check {setting} (a wrong path, or a relative path in another working "
            "directory?).")
    actual = database_of(url)
    if database is not None and not same_database(database, actual):
        _refuse_other(what, database, actual, setting)


def _refuse_other(what: str, database: dict, actual: dict, setting: str) -> None:
    raise WrongDatabaseError(
        f"{what}: this worker is configured for {describe_database(actual)}, but the pipeline (its manifest) names "
        f"{describe_database(database)}; refusing to run on another database. Set {setting} to the pipeline's "
        "database, or, if the pipeline moved, regenerate the manifest "
        "(python -m joinflow.pipeline manifest MODULE -o FILE).")


@contextlib.contextmanager
def expect_database(database: dict | None = None, *, what: str = "joinflow pipeline",
                    setting: str | None = None) -> Iterator[None]:
    """While active, every new :class:`~joinflow.Connection` (a pipeline module's ``dj.Schema``
    connecting as it is imported) is checked before anything is opened or created: it must be
    configured (not joinflow's defaults alone), must not create an SQLite file, and, when
    ``database`` is given (``{"backend", "host", "name"}``), must be to that database.  Otherwise
    :class:`~joinflow.errors.WrongDatabaseError` names both databases and ``setting``.

    Orchestrator adapters import pipeline modules under it (:func:`load_step` does).  A pipeline
    module that connects to a second database while it is imported must do so lazily (in make()).
    """
    from .connection import connect_check

    setting = setting or DEFAULT_SETTING

    def check(backend, url, configured):
        _check_connection(what, database, setting, backend, url, configured)

    token = connect_check.set(check)
    try:
        yield
    finally:
        connect_check.reset(token)


def _check_step_name(name: str) -> None:
    module_name, _, qualname = name.partition(":")
    if not module_name or not qualname:
        raise DataJointError(f"Step name {name!r} must look like 'package.module:Class'.")


def _tier(cls: type) -> str:
    for base in cls.__mro__:
        if base.__name__ in TIERS and base.__module__ == "joinflow.user_tables":
            return base.__name__
    return "Part" if issubclass(cls, Part) else "Table"


def shard_of(key: dict, nshards: int) -> int:
    """Stable shard number of a key (same on every machine and Python process)."""
    text = json.dumps({k: str(v) for k, v in sorted(key.items())}, sort_keys=True)
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big") % nshards


class TableNode:
    """Any table of the pipeline (sources included) as the adapters see it.

    ``cls`` is imported on first use when the node comes from a manifest
    (:meth:`Pipeline.from_manifest`); ``name``, ``tier``, ``schema``, ``table_name``,
    ``full_table_name``, ``parents`` and ``parts`` never need the module or the database.
    """

    def __init__(self, name: str, cls: type | None, tier: str, full_table_name: str,
                 parents: Iterable[str] = (), parts: Iterable[str] = (), *,
                 schema: str | None = None, table_name: str | None = None, code_version: str | None = None,
                 external: bool = False):
        self.name = name  # importable "module:Class"
        self._cls = cls
        self._code_version = code_version
        # an Imported/Computed table outside the pipeline's selection: read as a source, never computed
        self.external = external
        self.tier = tier
        self.full_table_name = full_table_name
        self.parents = list(parents)  # full table names
        self.parts = list(parts)
        self.schema = schema if schema is not None or cls is None else cls.database
        self.table_name = table_name if table_name is not None or cls is None else cls().table_name

    def __repr__(self) -> str:
        return f"TableNode({self.name!r}, tier={self.tier!r})"

    @property
    def cls(self) -> type:
        if self._cls is None:
            self._cls = load_class(self.name)
        return self._cls

    @property
    def class_name(self) -> str:
        return self.name.rpartition(":")[2].rpartition(".")[2]

    @property
    def table(self) -> Table:
        return self.cls()

    @property
    def comment(self) -> str:
        return self.cls().heading.table_comment

    @property
    def is_step(self) -> bool:
        """An Imported/Computed table this pipeline computes (not one outside its selection)."""
        return self.tier in ("Imported", "Computed") and not self.external

    @property
    def code_version(self) -> str:
        """Hash of the definition (and parts') and the make()/make_*/key_source source text."""
        if self._code_version is None:
            self._code_version = code_version(self.cls)
        return self._code_version


class Step:
    """One auto-populated table as a unit of orchestrated work.

    ``cls`` is the table class, or its importable name ``"module:Class"``: then the module
    is imported on first use (so a step from a manifest costs nothing until it runs).
    """

    def __init__(self, cls: type | str, upstream: Sequence[str] = (), *, full_table_name: str | None = None,
                 schema: str | None = None, table_name: str | None = None, settings: dict | None = None,
                 code_version: str | None = None, database: dict | None = None, setting: str | None = None):
        # database: {"backend", "host", "name"} the step must run on (a manifest's "database");
        # a step named by a string is loaded by a worker: its import and its table's connection are
        # checked (verify_database) before any work.  setting: what to fix, named in the errors.
        self.database = database
        self.setting = setting
        self._verify = isinstance(cls, str)
        if isinstance(cls, str):
            self.name = cls
            self._cls = None
            _check_step_name(cls)
        else:
            if not (isinstance(cls, type) and issubclass(cls, AutoPopulate)):
                raise DataJointError(f"{cls!r} is not an Imported or Computed table; only those are steps.")
            self._cls = cls
            self.name = step_name(cls)
        self.upstream = list(upstream)
        self._full_table_name = full_table_name
        self.schema = schema
        self.table_name = table_name
        self._code_version = code_version
        # orchestration settings (retries, pool, queue, tags, batch_size, timeout, ...): the class's
        # ``orchestration`` attribute, overridden by Pipeline(settings=); None: not resolved yet
        self._settings = None if settings is None else dict(settings)

    def __repr__(self) -> str:
        return f"Step({self.name!r})"

    @property
    def cls(self) -> type:
        if self._cls is None:
            with self._expect():
                cls = load_class(self.name)
                if not (isinstance(cls, type) and issubclass(cls, AutoPopulate)):
                    raise DataJointError(f"{self.name} is not an Imported or Computed table; only those are steps.")
                self._cls = cls
                try:
                    self.verify_database()
                except Exception:
                    self._cls = None  # checked again (and refused again) on every use
                    raise
        return self._cls

    def _expect(self):
        return expect_database(self.database, what=f"step {self.name}", setting=self.setting)

    def verify_database(self) -> dict:
        """Check that the step's table is bound to the pipeline's database; returns that database.

        Raises :class:`~joinflow.errors.WrongDatabaseError` when the table's connection came from
        joinflow's defaults alone (an unconfigured worker) or, when the step knows its pipeline's
        database (``database``: from the manifest or the pipeline), is to another database.  The
        check reads the connection's URL: no query.  Orchestrated steps (:func:`load_step`,
        :meth:`Pipeline.from_manifest`) run it before any work; call it for steps of your own.
        """
        with self._expect():
            connection = self.cls().connection
        actual = database_of(connection)
        what, setting = f"step {self.name}", self.setting or DEFAULT_SETTING
        if not getattr(connection, "configured", True):
            _refuse_unconfigured(what, connection.url.database or "joinflow.db", self.database, setting)
        if self.database is not None and not same_database(self.database, actual):
            _refuse_other(what, self.database, actual, setting)
        return actual

    @property
    def class_name(self) -> str:
        return self.name.rpartition(":")[2].rpartition(".")[2]

    @property
    def settings(self) -> dict:
        """Per-step orchestration settings (see ``joinflow.selection.SETTINGS``) for adapters."""
        if self._settings is None:
            self._settings = check_settings(getattr(self.cls, SETTINGS_ATTRIBUTE, None),
                                            f"{self.name} ({SETTINGS_ATTRIBUTE} attribute)")
        return dict(self._settings)

    @property
    def code_version(self) -> str:
        """Changes when the table's definition or its make()/make_*/key_source source changes."""
        if self._code_version is None:
            self._code_version = code_version(self.cls)
        return self._code_version

    @property
    def table(self):
        return self.cls()

    @property
    def full_table_name(self) -> str:
        if self._full_table_name is None:
            self._full_table_name = self.cls().full_table_name
        return self._full_table_name

    # -- planning ---------------------------------------------------------------------------
    # A key of the key source is in exactly one state: done (in the table), error or ignored
    # (a job row says so), reserved (a worker holds a live lease on it), or pending: computable
    # now.  Only pending keys are planned, counted as work or wake sensors.
    def _pending(self, *restrictions):
        """Keys computable now: inputs exist, not in the table, no error / ignore / live reservation."""
        table = self.cls()
        jobs = table.jobs
        n = jobs.cols
        lease = float(table.connection.config["jobs.lease_timeout"])
        # the server's clock, as the leases themselves (never this process's clock)
        cutoff = table.connection.execute(sa.select(jobs._clock(-lease))).scalar()
        if isinstance(cutoff, datetime.datetime):
            cutoff = cutoff.isoformat(sep=" ")
        blocked = jobs & (f"{n.status} in ('error', 'ignore') or "
                          f"({n.status} = 'reserved' and {n.reserved_time} >= '{cutoff}')")
        return table.pending(*restrictions).restrict(Not(blocked.proj()), semantic_check=False)

    def pending_count(self, *restrictions) -> int:
        """How many keys are computable now (not done, not in error, ignored or reserved)."""
        return len(self._pending(*restrictions))

    def pending_keys(self, batch_size: int = 100, *restrictions) -> Iterator[list[dict]]:
        """The pending keys in batches of at most ``batch_size`` (one query)."""
        keys = self._pending(*restrictions).keys(order_by="KEY")
        for start in range(0, len(keys), batch_size):
            yield keys[start : start + batch_size]

    def shard_keys(self, shard: int, nshards: int, *restrictions) -> list[dict]:
        if not 0 <= shard < nshards:
            raise DataJointError(f"shard must be in 0..{nshards - 1}, got {shard}.")
        return [k for k in self._pending(*restrictions).keys(order_by="KEY") if shard_of(k, nshards) == shard]

    def plan(self, nshards: int, *restrictions) -> list[dict]:
        """Shard descriptors with work in them: ``{"step", "shard", "nshards", "keys"}`` (keys = count)."""
        counts = [0] * nshards
        for key in self._pending(*restrictions).keys():
            counts[shard_of(key, nshards)] += 1
        return [{"step": self.name, "shard": s, "nshards": nshards, "keys": n} for s, n in enumerate(counts) if n]

    # -- running ----------------------------------------------------------------------------------
    def run(self, keys: Iterable[dict] | None = None, *, shard: int | None = None, nshards: int | None = None,
            restrictions: Sequence = (), retry_errors: bool = False, suppress_errors: bool = True,
            max_calls: int | None = None, count_pending: bool = True) -> dict:
        """Populate exactly ``keys`` (or one shard of the pending keys) through the job table.

        Safe under overlapping runs and retries: the job table reserves each key for one
        worker.  ``retry_errors`` re-pends errors of these keys first (an orchestrator retry).
        The summary (see :meth:`_summary`) counts the rows this run committed, in the table
        and in each part table, and the step's open errors after the run.
        """
        if self._verify:
            self.verify_database()  # before any work: the table may have been rebound since it was loaded
        table = self.cls()
        start = time.time()
        if retry_errors:  # re-pend the errors of exactly the keys this run is about
            errored = self._error_jobs()
            for condition in restrictions:
                errored = errored.restrict(condition, semantic_check=False)
            if keys is not None and shard is None:
                keys = [dict(k) for k in keys]
                self._check_restriction(keys)
                errored = errored.restrict(keys, semantic_check=False) if keys else None
            elif shard is not None:
                pk = table.primary_key
                mine = [k for k in ({a: row[a] for a in pk} for row in errored.to_dicts())
                        if shard_of(k, nshards or 1) == shard]
                errored = errored.restrict(mine, semantic_check=False) if mine else None
            if errored is not None:
                errored.delete_quick()
        if shard is not None:
            keys = self.shard_keys(shard, nshards or 1, *restrictions)
            restrictions = ()
        if keys is not None:
            keys = [dict(k) for k in keys]
            if not keys:
                return self._summary(table, [], [], start, count_pending=count_pending)
        conditions = list(restrictions) + ([keys] if keys is not None else [])
        made: list[dict] = []
        table._jf_made = made  # populate appends each key whose make() committed
        try:
            result = table.populate(*conditions, reserve_jobs=True, suppress_errors=suppress_errors,
                                    max_calls=max_calls)
        finally:
            table._jf_made = None
        return self._summary(table, made, result["error_list"], start, keys, count_pending)

    def _rows_of(self, table, made: list[dict]) -> dict[str, int]:
        """Rows of the table and of each part table that belong to the keys this run made."""
        counts: dict[str, int] = {}
        parts = [table] + [p() for p in _part_classes(type(table))]
        for t in parts:
            total = 0  # no keys made: no query
            for start in range(0, len(made), 500):
                total += len(t.restrict(made[start : start + 500], semantic_check=False))
            counts[t.full_table_name] = total
        return counts

    def _summary(self, table, made: list[dict], errors: list, start: float, keys=None,
                 count_pending: bool = True) -> dict:
        """What one run did.

        ``rows_added``: rows of the step's table committed by this run (its makes that
        succeeded); ``part_rows_added``: the same per part table (full table name -> rows);
        ``keys_made``; ``errors`` / ``error_count``: the keys that failed in this run;
        ``open_errors`` / ``open_error_keys``: every key of the step in error after the run
        (the count, and at most :data:`MAX_ERROR_KEYS` keys), so an orchestrator can keep
        every later run visibly failed until they are retried or ignored;
        ``pending_left``: pending keys (of ``keys`` when given) left after the run.
        """
        rows = self._rows_of(table, made)
        own = rows.pop(table.full_table_name, 0)
        pending = (len(self._pending(keys) if keys is not None else self._pending())
                   if count_pending else None)
        open_errors = len(self._error_jobs())
        return {
            "step": self.name,
            "table": self.full_table_name,
            "rows_added": own,
            "part_rows_added": rows,
            "keys_made": len(made),
            "errors": [{"key": k, "error": str(e)} for k, e in errors],
            "error_count": len(errors),
            "open_errors": open_errors,
            "open_error_keys": self._error_keys(MAX_ERROR_KEYS) if open_errors else [],
            "pending_left": pending,
            "duration": round(time.time() - start, 3),
        }

    # -- operator actions (what DataJoint users do on the jobs table) ---------------------------
    def _job_keys(self, keys) -> list[dict] | None:
        if keys is None:
            return None
        if isinstance(keys, dict):
            keys = [keys]
        pk = self.cls().primary_key
        result = []
        for key in keys:
            key = dict(key)
            missing = [k for k in pk if k not in key]
            if missing:
                raise DataJointError(f"{self.full_table_name}: key {key} lacks primary-key attribute(s) "
                                     f"{missing}; give full keys (see step.errors() or step.status()).")
            result.append({k: key[k] for k in pk})
        return result

    def _error_jobs(self):
        return self.cls().jobs.errors

    def _error_keys(self, limit: int | None = None) -> list[dict]:
        pk = self.cls().primary_key
        return [{k: row[k] for k in pk} for row in self._error_jobs().to_dicts(order_by=list(pk), limit=limit)]

    def _check_restriction(self, keys) -> None:
        """Dict keys must name primary-key attributes only (an unknown name would match every row)."""
        pk = set(self.cls().primary_key)
        for key in [keys] if isinstance(keys, dict) else keys:
            if isinstance(key, dict):
                unknown = [k for k in key if k not in pk]
                if unknown:
                    raise DataJointError(f"{self.full_table_name}: {unknown} in key {key} are not primary-key "
                                         f"attributes ({sorted(pk)}); give keys of this step.")

    def retry_errors(self, keys: Iterable[dict] | dict | None = None) -> int:
        """Make the keys in error pending again (all, or those matching ``keys``: full or partial
        keys); returns how many.  The next run computes them again.

        DataJoint's way is deleting the error rows of the jobs table (``(table.jobs &
        "status='error'").delete()``); this does the same for one step.
        """
        jobs = self._error_jobs()
        if keys is not None:
            keys = [dict(keys)] if isinstance(keys, dict) else [dict(k) for k in keys]
            self._check_restriction(keys)
            if not keys:
                return 0
            jobs = jobs.restrict(keys, semantic_check=False)
        return jobs.delete_quick(get_count=True) or 0

    clear_errors = retry_errors  # DataJoint users say "clear the errors": they become pending again

    def ignore(self, keys: Iterable[dict] | dict) -> int:
        """Mark keys "ignore" in the job table (DataJoint's status): no run computes them, and
        they are no longer open errors; :meth:`unignore` makes them pending again.

        Keys already in the table are left alone (they are done); returns how many were marked.
        """
        table = self.cls()
        jobs = table.jobs
        marked = 0
        for key in self._job_keys(keys):
            if key in table:
                continue
            jobs.ignore(key)
            marked += 1
        return marked

    def unignore(self, keys: Iterable[dict] | dict | None = None) -> int:
        """Make ignored keys (all, or those of ``keys``) pending again; returns how many."""
        jobs = self.cls().jobs.ignored
        if keys is not None:
            keys = [dict(keys)] if isinstance(keys, dict) else [dict(k) for k in keys]
            self._check_restriction(keys)
            if not keys:
                return 0
            jobs = jobs.restrict(keys, semantic_check=False)
        return jobs.delete_quick(get_count=True) or 0

    # -- observing ----------------------------------------------------------------------------------
    def errors(self, keys: Iterable[dict] | None = None, limit: int | None = None) -> list[dict]:
        """Errors recorded in the job table: key, message, stack (text) and time."""
        all_jobs = self.cls().jobs
        n = all_jobs.cols  # the job columns' names (job_<name> where the key has an attribute <name>)
        jobs = all_jobs.errors
        if keys is not None:
            jobs = jobs.restrict([dict(k) for k in keys], semantic_check=False)
        pk = all_jobs.key_names  # the key source's key (a part of the primary key for some tables)
        rows = jobs.to_dicts(order_by=f"{n.completed_time} DESC", limit=limit)
        result = []
        for row in rows:
            stack = row.get(n.error_stack)
            result.append({"key": {k: row[k] for k in pk}, "error_message": row[n.error_message],
                           "error_stack": stack.decode(errors="replace") if isinstance(stack, bytes) else stack,
                           "time": row.get(n.completed_time)})
        return result

    def row_count(self) -> int:
        return len(self.cls())

    def part_row_counts(self) -> dict[str, int]:
        """Rows of each part table of the step (full table name -> rows)."""
        return {p().full_table_name: len(p()) for p in _part_classes(self.cls)}

    def part_names(self) -> dict[str, str]:
        """The step's part tables: full table name -> ``"Master.Part"`` class name."""
        return {p().full_table_name: f"{self.class_name}.{p.__name__}" for p in _part_classes(self.cls)}

    def status(self) -> dict:
        """The step's keys by state, each counted once.

        ``done`` (in the table), ``pending`` (computable now), ``reserved`` (being computed),
        ``error``, ``ignored`` (also as ``ignore``, the job table's word) and ``total`` (the
        key source); ``error_keys``: at most :data:`MAX_ERROR_KEYS` keys in error.
        """
        table = self.cls()
        remaining, total = table.progress()
        jobs = table.jobs.progress()
        pending = self.pending_count()
        return {"done": total - remaining, "pending": pending, "reserved": jobs["reserved"],
                "error": jobs["error"], "ignore": jobs["ignore"], "ignored": jobs["ignore"], "total": total,
                "error_keys": self._error_keys(MAX_ERROR_KEYS) if jobs["error"] else []}

    def change_token(self) -> str:
        """Changes when the step's inputs or outputs change (row counts of it and its parents), or
        when keys leave the error / ignore states; not while the same errors stay."""
        table = self.cls()
        conn = table.connection
        parents = conn.dependencies.load().parents(table.full_table_name)
        from .table import FreeTable

        counts = [len(FreeTable(conn, p)) for p in sorted(parents)] + [len(table)]
        jobs = table.jobs.progress()
        counts += [jobs["error"], jobs["ignore"]]
        return hashlib.md5(json.dumps(counts).encode()).hexdigest()[:16]


MAX_ERROR_KEYS = 20  # keys in error listed by Step.status() and a run's summary


def _part_classes(cls: type) -> list[type]:
    return [m for m in vars(cls).values() if isinstance(m, type) and issubclass(m, Part)]


class Pipeline:
    """The tables of one or more modules/schemas, and their computed steps in topological order.

    ``Pipeline(*modules_or_schemas_or_classes)`` reads the foreign-key graph from the database;
    ``Pipeline.from_manifest(path)`` rebuilds the same nodes and steps from a manifest alone.

    ``select=`` / ``exclude=``: selectors (a string or a list; see :mod:`joinflow.selection`:
    ``Spikes``, ``module:Class``, ``schema:NAME``, ``tier:computed``, ``+X`` with ancestors,
    ``X+`` with descendants) choosing the steps this pipeline computes.  The ancestors of the
    selected tables stay in :attr:`nodes` as sources; an unselected Imported/Computed ancestor
    is *external* (``node.external``, not a step): its rows are read, never computed.
    ``settings=``: ``{selector: {"retries": 2, "pool": "db", ...}}``, per-step orchestration
    settings (:attr:`Step.settings`) applied in order over each class's ``orchestration``
    attribute.
    """

    def __init__(self, *sources: Any, select: Any = None, exclude: Any = None,
                 settings: Mapping[str, Mapping] | None = None):
        classes: list[type] = []
        for source in sources:
            classes.extend(_classes_of(source))
        if not classes:
            raise DataJointError("Pipeline needs modules, schemas or table classes that declare tables.")
        seen: dict[str, type] = {}
        for cls in classes:
            seen.setdefault(cls().full_table_name, cls)
        conn = next(iter(seen.values()))().connection
        deps = conn.dependencies.load()
        order = deps.topological(seen)
        self.connection = conn
        self.nodes: list[TableNode] = []
        for full in order:
            cls = seen[full]
            node = TableNode(step_name(cls), cls, _tier(cls), full,
                             parents=[p for p in deps.parents(full) if p in seen and deps.master_of(full) != p],
                             parts=[p for p in deps.parts_of(full)])
            self.nodes.append(node)
        self._by_table = {n.full_table_name: n for n in self.nodes}
        self.steps: list[Step] = []
        database = database_of(conn)
        for node in self.nodes:
            if node.is_step:
                self.steps.append(Step(node.cls, self._upstream_steps(node.full_table_name, deps),
                                       full_table_name=node.full_table_name, schema=node.schema,
                                       table_name=node.table_name, database=database))
        self.manifest: dict | None = None
        self._database: dict | None = None
        self.selection: dict | None = None  # {"select": [...] | None, "exclude": [...] | None}
        for s in self.steps:  # a bad ``orchestration`` attribute fails here, not in a worker later
            s.settings
        self._configure(select, exclude, settings)

    # -- selection and settings -------------------------------------------------------------------
    def subset(self, select: Any = None, exclude: Any = None,
               settings: Mapping[str, Mapping] | None = None) -> "Pipeline":
        """A copy of this pipeline with a selection and/or settings applied (this one is unchanged)."""
        other = copy.copy(self)
        other._configure(select, exclude, settings)
        return other

    def _configure(self, select: Any, exclude: Any, settings: Mapping[str, Mapping] | None) -> None:
        if settings is not None:
            self._apply_settings(settings)
        if select is not None or exclude is not None:
            self._select(normalize_selectors(select, "select"), normalize_selectors(exclude, "exclude"))

    def _apply_settings(self, settings: Mapping[str, Mapping]) -> None:
        if not isinstance(settings, Mapping):
            raise DataJointError("settings= must map selectors to settings, e.g. "
                                 f"{{'tier:computed': {{'retries': 2}}, 'Spikes': {{'pool': 'gpu'}}}}; not {settings!r}.")
        graph = Graph(self.nodes)
        merged = {s.name: s.settings for s in self.steps}
        for selector, values in settings.items():
            if not isinstance(selector, str) or not selector.strip():
                raise DataJointError(f"settings= keys are selectors (strings), not {selector!r}.")
            checked = check_settings(values, f"settings[{selector!r}]")
            chosen = graph.tables(graph.resolve([selector], "settings"))
            for s in self.steps:
                if s.full_table_name in chosen:
                    merged[s.name].update(checked)
        steps = []
        for s in self.steps:
            s = copy.copy(s)
            s._settings = merged[s.name]
            steps.append(s)
        self.steps = steps
        self.manifest = None

    def _select(self, select: list[str] | None, exclude: list[str] | None) -> None:
        if self.selection is not None:
            raise DataJointError(f"This pipeline is already a selection ({self.selection}); select from the "
                                 "whole pipeline (or its whole manifest) instead of narrowing a selection.")
        graph = Graph(self.nodes)
        units = graph.resolve(select, "select") if select is not None else set(graph.members)
        if exclude:
            units -= graph.resolve(exclude, "exclude")
        selected = graph.tables(units)
        if not any(n.is_step for full, n in graph.nodes.items() if full in selected):
            raise DataJointError(f"select={select!r} exclude={exclude!r} selects no Imported or Computed table: "
                                 "nothing would be computed. Steps of this pipeline: "
                                 f"{', '.join(s.class_name for s in self.steps) or 'none'}.")
        keep = graph.tables(graph.ancestors(units))
        nodes = []
        for node in self.nodes:
            if node.full_table_name not in keep:
                continue
            node = copy.copy(node)
            master = graph.nodes[graph.unit(node.full_table_name)]
            if node.full_table_name not in selected and master.tier in ("Imported", "Computed"):
                node.external = True  # an upstream step outside the selection: a source here
            nodes.append(node)
        upstream = {s.name: s.upstream for s in self.steps}
        chosen = {s.name for s in self.steps if s.full_table_name in selected}

        def nearest(name: str, seen: set) -> set:
            if name in chosen:
                return {name}
            seen.add(name)
            return set().union(*[nearest(u, seen) for u in upstream.get(name, ()) if u not in seen])

        steps = []
        for s in self.steps:
            if s.name in chosen:
                s = copy.copy(s)
                s.upstream = sorted(set().union(*[nearest(u, set()) for u in s.upstream]))
                steps.append(s)
        self.nodes = nodes
        self._by_table = {n.full_table_name: n for n in nodes}
        self.steps = steps
        self.selection = {"select": select, "exclude": exclude}
        self.manifest = None

    def _upstream_steps(self, full: str, deps) -> list[str]:
        """Nearest auto-populated ancestors (through source tables, not through other steps)."""
        found: list[str] = []
        frontier = list(deps.parents(full))
        seen = set()
        while frontier:
            parent = frontier.pop()
            if parent in seen:
                continue
            seen.add(parent)
            node = self._by_table.get(parent)
            master = deps.master_of(parent)
            if node is not None and node.is_step:
                found.append(node.name)
            elif master is not None and master in self._by_table and self._by_table[master].is_step:
                found.append(self._by_table[master].name)  # a part belongs to its master's step
            else:
                frontier.extend(deps.parents(parent))
        return sorted(set(found) - {step_name(self._by_table[full].cls)})

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name or s.class_name == name or s.full_table_name == name:
                return s
        raise DataJointError(f"No step {name!r} in this pipeline; steps: {[s.name for s in self.steps]}")

    def __iter__(self):
        return iter(self.steps)

    def status(self) -> dict[str, dict]:
        return {s.name: s.status() for s in self.steps}

    @property
    def database(self) -> dict | None:
        """``{"backend", "host", "name"}`` of the pipeline's database (the manifest's, or its connection's)."""
        if self.manifest is not None:
            return self.manifest.get("database")
        # a selection of a manifest's pipeline has no manifest of its own yet: the one it was read from
        return database_of(self.connection) if self.connection is not None else self._database

    def verify_database(self) -> dict | None:
        """Check that every step's table is bound to the pipeline's database (for a manifest:
        importing each step's module under :func:`expect_database`); returns that database.

        Raises :class:`~joinflow.errors.WrongDatabaseError` (naming both databases and the
        setting to fix) for an unconfigured worker, a missing SQLite file or another database.
        Adapters call it (or :func:`load_step` with the manifest's database) before any work.
        """
        for s in self.steps:
            s.verify_database()
        return self.database

    def run(self, **kwargs) -> list[dict]:
        """Run every step in order (for scripts and tests; orchestrators call steps themselves)."""
        return [s.run(**kwargs) for s in self.steps]


    # -- manifest: the pipeline's structure without its modules or its database ----------------
    def to_manifest(self) -> dict:
        """The structure as a JSON-able dict (see :data:`MANIFEST_FORMAT`), with a content hash.

        An orchestrator builds its task graph from it (:meth:`from_manifest`) without
        importing the pipeline modules or connecting; tasks import and connect when they run.
        """
        if self.manifest is not None:
            return dict(self.manifest)
        database = self._database if self.connection is None else database_of(self.connection)
        body = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "modules": sorted({n.name.partition(":")[0] for n in self.nodes}),
            "schemas": sorted({n.schema for n in self.nodes if n.schema}),
            "database": database,
            "tables": [{"name": n.name, "tier": n.tier, "schema": n.schema, "table_name": n.table_name,
                        "full_table_name": n.full_table_name, "parents": list(n.parents), "parts": list(n.parts),
                        "code_version": n.code_version, **({"external": True} if n.external else {})}
                       for n in self.nodes],
            "steps": [{"name": s.name, "upstream": list(s.upstream), **({"settings": s.settings} if s.settings else {})}
                      for s in self.steps],
        }
        if self.selection is not None:
            body["selection"] = dict(self.selection)
        return {**body, "hash": _manifest_hash(body)}

    def write_manifest(self, path: str | os.PathLike) -> dict:
        """Write :meth:`to_manifest` to ``path`` (JSON, stable key order); returns it."""
        manifest = self.to_manifest()
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # readers (a DAG parser) never see half a file
        return manifest

    @classmethod
    def from_manifest(cls, manifest: "str | os.PathLike | dict", *, select: Any = None, exclude: Any = None,
                      settings: Mapping[str, Mapping] | None = None) -> "Pipeline":
        """A pipeline rebuilt from a manifest (a dict or a JSON file): no import, no database.

        Nodes and steps have their names, tiers, schemas, tables, parents, parts, upstream
        steps, code versions and settings; a step's class (and with it the database) is loaded
        only when it is used.  ``select`` / ``exclude`` / ``settings`` as for :class:`Pipeline`
        (a manifest that already records a selection cannot be narrowed again).
        """
        data = read_manifest(manifest)
        self = cls.__new__(cls)
        self.connection = None
        self.manifest = data
        self._database = data.get("database")
        self.selection = data.get("selection")
        self.nodes = [TableNode(t["name"], None, t["tier"], t["full_table_name"], t.get("parents", ()),
                                t.get("parts", ()), schema=t.get("schema"), table_name=t.get("table_name"),
                                code_version=t.get("code_version"), external=bool(t.get("external")))
                      for t in data["tables"]]
        self._by_table = {n.full_table_name: n for n in self.nodes}
        by_name = {n.name: n for n in self.nodes}
        self.steps = []
        for entry in data["steps"]:
            node = by_name.get(entry["name"])
            if node is None or not node.is_step:
                raise DataJointError(f"Manifest step {entry['name']!r} is not an Imported/Computed table of its "
                                     "'tables'; regenerate the manifest (python -m joinflow.pipeline manifest ...).")
            self.steps.append(Step(entry["name"], entry.get("upstream", ()), full_table_name=node.full_table_name,
                                   schema=node.schema, table_name=node.table_name,
                                   settings=check_settings(entry.get("settings"), f"manifest step {entry['name']}"),
                                   code_version=node._code_version, database=data.get("database")))
        self._configure(select, exclude, settings)
        return self

    @property
    def manifest_hash(self) -> str:
        return self.to_manifest()["hash"]


MANIFEST_FORMAT = "joinflow-pipeline-manifest"
MANIFEST_VERSION = 1


def _manifest_hash(body: dict) -> str:
    canonical = json.dumps({k: v for k, v in body.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def read_manifest(manifest: "str | os.PathLike | dict") -> dict:
    """Load and check a manifest (format, version, content hash); errors say how to fix it."""
    where = "the manifest dict"
    if not isinstance(manifest, dict):
        where = os.fspath(manifest)
        try:
            with open(where, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise DataJointError(f"Pipeline manifest {where!r} does not exist; create it with "
                                 f"`python -m joinflow.pipeline manifest MODULE -o {where}`.") from None
        except json.JSONDecodeError as exc:
            raise DataJointError(f"Pipeline manifest {where!r} is not valid JSON ({exc}); regenerate it with "
                                 "`python -m joinflow.pipeline manifest MODULE -o FILE`.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataJointError(f"{where} is not a joinflow pipeline manifest (no \"format\": \"{MANIFEST_FORMAT}\").")
    if manifest.get("version") != MANIFEST_VERSION:
        raise DataJointError(f"{where} has manifest version {manifest.get('version')!r}; this joinflow reads "
                             f"version {MANIFEST_VERSION}: regenerate it with this joinflow.")
    missing = [k for k in ("tables", "steps", "hash") if k not in manifest]
    if missing:
        raise DataJointError(f"{where} lacks {missing}; regenerate it.")
    if _manifest_hash(manifest) != manifest["hash"]:
        raise DataJointError(f"{where}: content hash mismatch (edited by hand or truncated); regenerate it with "
                             "`python -m joinflow.pipeline manifest MODULE -o FILE`.")
    return manifest


def manifest_main(argv: Sequence[str] | None = None) -> int:
    """``python -m joinflow.pipeline manifest MODULE [MODULE ...] -o FILE [--url URL]``.

    Imports the modules (which declares their tables on the configured database), loads the
    foreign-key graph once and writes the manifest.  ``-o -`` prints it.  Meant to be reused
    by the ``joinflow`` command line as ``joinflow manifest``.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m joinflow.pipeline",
                                     description="Write a joinflow pipeline manifest (JSON).")
    sub = parser.add_subparsers(dest="command", required=True)
    mf = sub.add_parser("manifest", help="the pipeline's structure as JSON, for orchestrators")
    mf.add_argument("modules", nargs="+", help="importable module names of the pipeline")
    mf.add_argument("-o", "--output", default="-", help="file to write (default: - = stdout)")
    mf.add_argument("--url", default=None, help="database URL (default: JOINFLOW_DATABASE_URL / dj.config)")
    mf.add_argument("--path", action="append", default=[], help="prepend to sys.path (repeatable)")
    mf.add_argument("--select", action="append", default=None,
                    help="only these tables (selectors: Class, module:Class, schema:NAME, tier:TIER, +X, X+)")
    mf.add_argument("--exclude", action="append", default=None, help="leave these tables out (selectors)")
    args = parser.parse_args(argv)
    if args.url:
        from .settings import config

        config["database.url"] = args.url
    for entry in reversed(args.path):
        sys.path.insert(0, entry)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        modules = [importlib.import_module(name) for name in args.modules]
        pipeline = Pipeline(*modules, select=args.select, exclude=args.exclude)
        if args.output == "-":
            print(json.dumps(pipeline.to_manifest(), indent=1, sort_keys=True))
        else:
            manifest = pipeline.write_manifest(args.output)
            print(f"wrote {args.output}: {len(manifest['tables'])} tables, {len(manifest['steps'])} steps, "
                  f"{manifest['hash'][:19]}", file=sys.stderr)
    except (DataJointError, ImportError) as exc:
        print(f"joinflow: {exc}", file=sys.stderr)
        return 2
    return 0


def _classes_of(source: Any) -> list[type]:
    from .schemas import Schema

    if isinstance(source, str):
        source = importlib.import_module(source)
    if isinstance(source, Schema):
        return _with_parts(source.classes)
    if isinstance(source, type) and issubclass(source, UserTable):
        return _with_parts([source])
    if isinstance(source, types.ModuleType):
        found = [v for v in vars(source).values()
                 if isinstance(v, type) and issubclass(v, UserTable) and not issubclass(v, Part)
                 and v.database is not None]
        return _with_parts(found)
    if isinstance(source, (list, tuple)):
        return [c for s in source for c in _classes_of(s)]
    raise DataJointError(f"Cannot build a pipeline from {source!r}: give modules, schemas or table classes.")


def _with_parts(classes: Iterable[type]) -> list[type]:
    result = []
    for cls in classes:
        result.append(cls)
        for member in vars(cls).values():
            if isinstance(member, type) and issubclass(member, Part):
                result.append(member)
    return result


if __name__ == "__main__":  # python -m joinflow.pipeline manifest MODULE -o FILE
    sys.exit(manifest_main())
