"""Per-table job queues (``~~<table>``) with leases.

The layout is DataJoint 2.x's, so DataJoint and joinflow workers can share a queue.  A
reservation is a *lease*: ``reserved_time`` is renewed by a heartbeat while ``make`` runs,
and a reservation whose ``reserved_time`` is older than ``jobs.lease_timeout`` seconds
may be taken over by any worker.  No extra column is needed, so job tables created by
DataJoint work unchanged.  ``Claims`` is one populate() call's side of the queue: batch
claims, batch completion and the statements it runs, compiled once (``Prepared``).
"""

from __future__ import annotations

import logging
import os
import platform
import random
import tempfile
import threading
from typing import Sequence

import sqlalchemy as sa

from .backends.base import VALUE, bound
from .condition import Not
from .errors import DataJointError
from .settings import check_lease_timeout
from .table import Table

logger = logging.getLogger("joinflow")

STATUSES = ("pending", "reserved", "success", "error", "ignore")
ERROR_MESSAGE_LENGTH = 2047
TRUNCATION = "...truncated"
TRUNCATION_APPENDIX = TRUNCATION  # DataJoint 2.x's name
WORKER_TOKEN = random.getrandbits(62)  # Job.reserve()'s mark in connection_id (populate uses Claims.token)


def lease_timeout(config) -> float:
    """``jobs.lease_timeout`` in seconds, checked again where it is used (a number above 0)."""
    return check_lease_timeout(config["jobs.lease_timeout"])


class LeaseLost(DataJointError):
    """Internal to populate(): another worker took the key over; this worker's make is rolled back."""


# -- liveness of the workers on this machine ------------------------------------------------------
# A worker holding leases keeps a file named by its token locked (flock) in a folder of the
# temporary directory.  The kernel drops the lock when the process dies (even by SIGKILL), and a
# stopped (SIGSTOP) or busy process keeps it.  An expired lease of a worker on this machine whose
# file is still locked is not taken over: its worker is alive, only late with its heartbeat.
MARK_FOLDER = os.path.join(tempfile.gettempdir(), "joinflow-workers")
HOST = platform.node()[:255]


def _mark_path(token: int) -> str:
    return os.path.join(MARK_FOLDER, f"{int(token)}.lock")


class WorkerMark:
    """This worker's sign of life for the other workers on this machine (see ``owner_alive``)."""

    def __init__(self, token: int):
        self.path = _mark_path(token)
        self.fd: int | None = None
        try:
            import fcntl

            if not os.path.isdir(MARK_FOLDER):
                os.makedirs(MARK_FOLDER, exist_ok=True)
                try:
                    os.chmod(MARK_FOLDER, 0o1777)  # shared by every user, as /tmp is
                except OSError:
                    pass
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.fd = fd
        except (ImportError, OSError) as exc:  # no mark: other workers treat this one as gone after the lease
            logger.debug("joinflow worker mark %s not made: %s", self.path, exc)
            return
        if random.random() < 0.05:  # now and then: the marks of killed workers whose keys nobody took
            _sweep_marks()

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)  # releases the lock
            self.fd = None


def _sweep_marks(older_than: float = 86400.0, at_most: int = 200) -> None:
    """Remove marks a day old whose worker is gone (not locked)."""
    import fcntl
    import time

    try:
        names = os.listdir(MARK_FOLDER)[:at_most]
    except OSError:
        return
    limit = time.time() - older_than
    for name in names:
        path = os.path.join(MARK_FOLDER, name)
        try:
            if os.stat(path).st_mtime > limit:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


def owner_alive(host: str | None, token) -> bool:
    """True if the worker that wrote ``token`` runs on this machine and is alive (its mark is locked).

    False when it is gone, or runs elsewhere, or cannot be told: then only its lease decides."""
    if not token or host != HOST:
        return False
    try:
        import fcntl

        fd = os.open(_mark_path(token), os.O_RDONLY)
    except (ImportError, OSError, ValueError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        os.unlink(_mark_path(token))  # a dead worker's mark
    except OSError:
        pass
    return False


def _new_worker_token() -> None:
    global WORKER_TOKEN
    WORKER_TOKEN = random.getrandbits(62)


if hasattr(os, "register_at_fork"):  # a forked worker is a worker of its own
    os.register_at_fork(after_in_child=_new_worker_token)


def job_table_name(target_name: str) -> str:
    return "~~" + target_name.lstrip("_")


# the job table's own columns (DataJoint 2.x's layout), after the target's primary key
JOB_COLUMNS = ("status", "priority", "created_time", "scheduled_time", "reserved_time", "completed_time",
               "duration", "error_message", "error_stack", "user", "host", "pid", "connection_id", "version")


class JobColumns:
    """The names of a job table's own columns: ``cols.status`` is the column that holds the status.

    They are DataJoint's names (``status``, ``version``, ...) unless the target's primary key has an
    attribute of that name: then the job column is ``job_<name>`` (``job_job_<name>`` if that is
    taken too), since the key attributes must keep their names for the job table to join with
    the target.  DataJoint 2.3.5 cannot create such a job table at all, so no shared queue is lost.
    """

    def __init__(self, primary_key: Sequence[str]):
        taken = set(primary_key)
        self.renamed: dict[str, str] = {}
        for name in JOB_COLUMNS:
            column = name
            while column in taken:
                column = "job_" + column
            taken.add(column)
            setattr(self, name, column)
            if column != name:
                self.renamed[name] = column

    def __getitem__(self, name: str) -> str:
        return getattr(self, name)


class Prepared:
    """A statement compiled once for one connection's dialect, then run many times with new values.

    Values are given for the statement's named parameters (``sa.bindparam("name")``); every other
    parameter keeps the value it was compiled with.  Skips SQLAlchemy's per-call statement
    building and caching, which cost more than the round trip for the small statements populate()
    runs per key.
    """

    __slots__ = ("sql", "defaults", "names", "table")

    def __init__(self, conn, statement, table: str | None = None):
        compiled = statement.compile(dialect=conn.engine.dialect, compile_kwargs={"render_postcompile": True})
        self.sql = compiled.string
        self.defaults = dict(compiled.params)
        self.names = tuple(compiled.positiontup) if compiled.positional else None
        self.table = table

    def with_values(self, **values) -> "Prepared":
        """The same compiled statement with some parameters set for good (a cached statement made
        specific to one caller, e.g. one worker's token)."""
        bound_copy = object.__new__(Prepared)
        bound_copy.sql, bound_copy.names, bound_copy.table = self.sql, self.names, self.table
        bound_copy.defaults = {**self.defaults, **values}
        return bound_copy

    def run(self, conn, values: dict | None = None):
        params = {**self.defaults, **values} if values else self.defaults
        if self.names is not None:
            params = tuple(params[name] for name in self.names)
        return conn.run_sql(self.sql, params, table=self.table)  # reconnects, retries deadlocks, translates errors


def key_lists(restrictions: Sequence, primary_key: Sequence[str]) -> list[list[dict]]:
    """The restrictions of a populate() call that are keys of its job table: a dict, or a list of
    dicts, naming primary-key attributes only (what the orchestrator adapters pass).  Claims apply
    them to the job table directly as well as through the key source."""
    pk = set(primary_key)
    found = []
    for restriction in restrictions:
        rows = [restriction] if isinstance(restriction, dict) else restriction
        if (isinstance(rows, (list, tuple)) and rows
                and all(isinstance(row, dict) and row and set(row) <= pk for row in rows)):
            found.append(list(rows))
    return found


def key_source_names(target) -> list[str]:
    """The primary key of ``target``'s key source (the keys its make() is given), in the order of
    the target's attributes.  For a table without a key source (a FreeTable): the part of its
    primary key that comes from its primary-key parents (DataJoint's job-table key)."""
    if hasattr(target, "_key_source"):
        source = set(target._jobs_to_do(()).primary_key)  # refused there if it names attributes the target lacks
        return [name for name in target.heading.names if name in source]
    conn = target.connection
    deps = conn.dependencies
    name = target.full_table_name
    if not deps._loaded or name not in deps.graph:
        deps.load()
    inherited = set()
    for info in deps.parents(name).values():
        if info["primary"]:
            for attr_map in info["attr_maps"]:
                inherited.update(attr_map)
    found = [k for k in target.primary_key if k in inherited]
    return found or list(target.primary_key)


def made_keys(target, names: Sequence[str]):
    """The keys (attributes ``names``) that ``target`` has rows for: its primary key, plus the
    key-source attributes that are secondary attributes of the target."""
    extra = [name for name in names if name not in target.primary_key]
    return target.proj(*extra)


def _param(name: str) -> sa.BindParameter:
    return sa.bindparam(name, type_=VALUE)


class Job(Table):
    """The job queue of one auto-populated table."""

    def __init__(self, target: Table, key_names: Sequence[str] | None = None):
        self._target = target
        self._connection = target.connection
        self.database = target.database
        self._table_name = job_table_name(target.table_name)
        self._restrictions = ()
        if key_names is not None:
            self._key_names = list(key_names)

    @property
    def table_name(self) -> str:
        return self._table_name

    @property
    def class_name(self) -> str:
        return "Job"

    @property
    def target(self) -> Table:
        return self._target

    @property
    def cols(self) -> JobColumns:
        """The names of this job table's own columns (``cols.status`` ...): DataJoint's, except
        where the target's primary key has an attribute of the same name (see JobColumns)."""
        found = self.__dict__.get("_cols")
        if found is None:
            found = self._cols = JobColumns(self.key_names)
        return found

    @property
    def key_names(self) -> list[str]:
        """The job table's primary key: the attributes of the keys make() is given.

        A job table in the database keeps the key it was made with (by joinflow or by DataJoint).
        A new one is keyed by the primary key of the target's key source, in the target's attribute
        order: the target's primary key for most tables, its foreign-key part when the target adds
        primary-key attributes of its own (one make() inserting several rows), as DataJoint's job
        tables are."""
        found = self.__dict__.get("_key_names")
        if found is None:
            if self.is_declared:
                found = list(self.heading.primary_key)
            else:
                found = key_source_names(self._target)
            self._key_names = found
        return found

    def check_key_source(self) -> None:
        """Raise if the job table is keyed otherwise than the target's key source is now."""
        target = self._target
        if not hasattr(target, "_key_source"):
            return
        wanted = key_source_names(target)
        if set(wanted) != set(self.key_names):
            raise DataJointError(
                f"The job table {self.full_table_name} is keyed by {self.key_names}, but the key source of "
                f"{target.class_name} now has the primary key {wanted} (the key source or the table changed "
                f"since the job table was made). Drop the job table ({target.class_name}.jobs.drop(); its "
                "error and ignore records go with it) and populate again."
            )

    def column(self, name: str) -> str:
        """The column of this job table that holds ``name`` (``"status"``, ``"host"``, ...)."""
        return self.cols[name]

    @property
    def definition(self) -> str:  # type: ignore[override]
        target = self._target
        n = self.cols
        lines = [f"# Job queue for {target.full_table_name}"]
        for name in self.key_names:
            lines.append(f"{name} : {target.heading[name].type}")
        lines += [
            "---",
            f"{n.status} : enum('pending', 'reserved', 'success', 'error', 'ignore')",
            f"{n.priority} : int8",
            f"{n.created_time} = CURRENT_TIMESTAMP(3) : datetime(3)",
            f"{n.scheduled_time} = CURRENT_TIMESTAMP(3) : datetime(3)",
            f"{n.reserved_time} = null : datetime(3)",
            f"{n.completed_time} = null : datetime(3)",
            f"{n.duration} = null : float64",
            f'{n.error_message} = "" : varchar(2047)',
            f"{n.error_stack} = null : bytes",
            f'{n.user} = "" : varchar(255)',
            f'{n.host} = "" : varchar(255)',
            f"{n.pid} = 0 : int32",
            f"{n.connection_id} = 0 : int64",
            f'{n.version} = "" : varchar(64)',
            f"index ({n.status}, {n.priority}, {n.scheduled_time})",
        ]
        return "\n".join(lines)

    def ensure(self) -> "Job":
        """Declare the job table if it does not exist (tolerating a worker doing the same)."""
        if not self.is_declared:
            try:
                self.declare({})
            except DataJointError:
                self.connection.forget_catalog()
                if not self.is_declared:  # not a lost race: a real problem
                    raise
        return self

    # -- time and identity ------------------------------------------------------------------
    def _clock(self, shift=None):
        """The server's clock as SQL (``Backend.lease_clock``), shifted by ``shift`` seconds: leases,
        schedules and completion times are written and compared in the statements themselves, never
        with this process's clock."""
        return self.connection.backend.lease_clock(shift)

    def _key_clause(self, tc, key: dict):
        backend = self.connection.backend
        clauses = []
        for name in self.key_names:
            attr = self.heading[name]
            encode = backend.encoder(attr)
            value = key[name]
            clauses.append(tc.c[name] == bound(encode(value) if encode else value))
        return sa.and_(*clauses)

    def _tc(self):
        return self._table_clause()

    # -- queue operations ---------------------------------------------------------------------
    def refresh(self, *restrictions, delay: float = 0, priority: int | None = None,
                stale_timeout: float | None = None, orphan_timeout: float | None = None) -> dict:
        """Add pending jobs for new keys (one INSERT ... SELECT) and clean up stale rows."""
        self.ensure()
        conn = self.connection
        target = self._target
        cfg = conn.config
        priority = cfg["jobs.default_priority"] if priority is None else priority
        stale_timeout = cfg["jobs.stale_timeout"] if stale_timeout is None else stale_timeout
        self.check_key_source()
        todo = target._jobs_to_do(restrictions)
        pk = list(self.key_names)
        made = made_keys(target, pk)
        new = todo.restrict(Not(made), semantic_check=False).restrict(Not(self.proj()), semantic_check=False)
        n = self.cols
        compiled = new._compile()
        select = sa.select(
            *[compiled.cols[k] for k in pk],
            sa.literal_column("'pending'"),
            bound(int(priority)),
            self._clock(float(delay)),
        ).select_from(compiled.from_).where(*compiled.where)
        columns = pk + [n.status, n.priority, n.scheduled_time]
        stmt = conn.backend.insert(self._table_clause(columns), columns, pk, "skip", select=select)
        added = conn.rowcount(stmt, table=self.full_table_name)
        tc = self._tc()
        # jobs finished elsewhere (the key is in the target now) are no longer pending
        done = self.restrict(made, semantic_check=False)
        removed = 0
        stale = done & f"{n.status} in ('pending', 'reserved')"
        if stale:
            removed += stale.delete_quick(get_count=True) or 0
        # rows whose key left the key source, older than stale_timeout
        left = self.restrict(Not(todo), semantic_check=False) & f"{n.status} <> 'ignore'"
        cutoff = self._clock(-float(stale_timeout))
        old_left = left & [{n.status: "error"}, {n.status: "success"}, {n.status: "pending"}]
        compiled = old_left._compile()
        created = compiled.from_.c[n.created_time]
        result = conn.execute(sa.delete(compiled.from_).where(*compiled.where, created < cutoff))
        removed += result.rowcount or 0
        re_pended = 0
        if orphan_timeout is not None:
            cutoff = self._clock(-float(orphan_timeout))
            result = conn.execute(
                sa.update(tc).where(tc.c[n.status] == "reserved", tc.c[n.reserved_time] < cutoff)
                .values({n.status: "pending", n.reserved_time: None})
            )
            re_pended = result.rowcount or 0
        return {"added": added or 0, "removed": removed, "orphaned": re_pended, "re_pended": re_pended}

    def _claimable(self, tc, lease: float):
        n = self.cols
        return sa.or_(
            sa.and_(tc.c[n.status] == "pending", tc.c[n.scheduled_time] <= self._clock()),
            sa.and_(tc.c[n.status] == "reserved", tc.c[n.reserved_time] < self._clock(-lease)),
        )

    def candidates(self, restriction=None, limit: int = 20, priority: int | None = None) -> list[dict]:
        """Keys that can be reserved now (pending, or reserved with an expired lease), most urgent first."""
        conn = self.connection
        lease = lease_timeout(conn.config)
        expr = self if restriction is None else self.restrict(restriction, semantic_check=False)
        compiled = expr._compile()
        tc = compiled.from_
        where = list(compiled.where) + [self._claimable(tc, lease)]
        n = self.cols
        if priority is not None:
            where.append(tc.c[n.priority] <= priority)
        names = self.key_names
        stmt = (sa.select(*[tc.c[k] for k in names]).select_from(tc).where(*where)
                .order_by(tc.c[n.priority], tc.c[n.scheduled_time], *[tc.c[k] for k in names])
                .limit(limit))
        decoders = self._decoders(names)
        keys = []
        for row in conn.execute(stmt).fetchall():
            key = {}
            for name, value, decode in zip(names, row, decoders):
                key[name] = decode(value) if decode and value is not None else value
            keys.append(key)
        random.shuffle(keys)  # workers that start together should not all try the same key first
        return keys

    def reserve(self, key: dict) -> bool:
        """Atomically take the lease on ``key``; True if this worker now holds it."""
        self.ensure()
        conn = self.connection
        lease = lease_timeout(conn.config)
        tc = self._tc()
        n = self.cols
        stmt = sa.update(tc).where(self._key_clause(tc, key), self._claimable(tc, lease)).values({
            n.status: "reserved", n.reserved_time: self._clock(), n.host: platform.node()[:255], n.pid: os.getpid(),
            n.connection_id: WORKER_TOKEN, n.user: (conn.get_user() or "")[:255], n.error_message: "",
        })
        return conn.execute(stmt, table=self.full_table_name).rowcount == 1

    def heartbeat(self, key: dict, connection=None) -> bool:
        """Renew this worker's lease on ``key``; False if the lease was lost."""
        conn = connection or self.connection
        tc = self._tc()
        n = self.cols
        stmt = sa.update(tc).where(
            self._key_clause(tc, key), tc.c[n.status] == "reserved", tc.c[n.connection_id] == WORKER_TOKEN
        ).values({n.reserved_time: conn.backend.lease_clock()})
        return conn.execute(stmt).rowcount == 1

    def release(self, key: dict) -> None:
        """Give a reserved key back (pending again), e.g. on SIGTERM."""
        tc = self._tc()
        n = self.cols
        self.connection.execute(
            sa.update(tc).where(self._key_clause(tc, key), tc.c[n.status] == "reserved",
                                tc.c[n.connection_id] == WORKER_TOKEN).values({n.status: "pending",
                                                                               n.reserved_time: None})
        )

    def complete(self, key: dict, duration: float | None = None) -> None:
        tc = self._tc()
        conn = self.connection
        if conn.config["jobs.keep_completed"]:
            n = self.cols
            conn.execute(sa.update(tc).where(self._key_clause(tc, key)).values(
                {n.status: "success", n.completed_time: self._clock(), n.duration: duration}))
        else:
            conn.execute(sa.delete(tc).where(self._key_clause(tc, key)))

    def error(self, key: dict, error_message: str, error_stack: str | None = None, *,
              token: int | None = None) -> bool:
        """Record ``key`` as an error job.  With ``token`` (a worker's lease token), only while that
        worker still holds the key: a worker whose lease was taken over does not overwrite the new
        owner's reservation.  False if nothing was recorded for that reason."""
        from .settings import mask_text  # a password in a make()'s error must not be stored for all to read

        error_message = mask_text(error_message)
        error_stack = mask_text(error_stack) if isinstance(error_stack, str) else error_stack
        if len(error_message) > ERROR_MESSAGE_LENGTH:
            error_message = error_message[: ERROR_MESSAGE_LENGTH - len(TRUNCATION)] + TRUNCATION
        return self._set_status(key, "error", token=token, error_message=error_message,
                                error_stack=error_stack.encode() if isinstance(error_stack, str) else error_stack)

    def ignore(self, key: dict) -> None:
        self._set_status(key, "ignore")

    def _set_status(self, key: dict, status: str, token: int | None = None, **values) -> bool:
        self.ensure()
        conn = self.connection
        tc = self._tc()
        row = {k: key[k] for k in self.key_names}
        n = self.cols
        values = {n[k]: v for k, v in values.items()}  # error_message=... -> its column
        where = [self._key_clause(tc, row)]
        if token is not None:
            where += [tc.c[n.status] == "reserved", tc.c[n.connection_id] == token]
        with conn.transaction_if_needed():
            result = conn.execute(sa.update(tc).where(*where).values(
                {n.status: status, n.completed_time: self._clock(), **values}))
            if result.rowcount == 0:
                if token is not None:
                    logger.warning("%s: the lease on %s was taken over by another worker; its error is not "
                                   "recorded in the job table.", self.full_table_name, row)
                    return False
                self.insert1({**row, n.status: status, n.priority: conn.config["jobs.default_priority"],
                              **{k: v.decode() if isinstance(v, bytes) and k != n.error_stack else v
                                 for k, v in values.items()}})
        return True

    # -- views ---------------------------------------------------------------------------------
    def progress(self) -> dict:
        """Counts per status, plus ``total`` (one query)."""
        self.ensure()
        tc = self._tc()
        status = tc.c[self.cols.status]
        rows = self.connection.execute(sa.select(status, sa.func.count()).group_by(status)).fetchall()
        counts = {s: 0 for s in STATUSES}
        counts.update({status: int(n) for status, n in rows})
        counts["total"] = sum(counts[s] for s in STATUSES)
        return counts

    @property
    def pending(self):
        return self & {self.cols.status: "pending"}

    @property
    def reserved(self):
        return self & {self.cols.status: "reserved"}

    @property
    def errors(self):
        return self & {self.cols.status: "error"}

    @property
    def ignored(self):
        return self & {self.cols.status: "ignore"}

    @property
    def completed(self):
        return self & {self.cols.status: "success"}

    def delete(self, *args, **kwargs) -> int:  # job rows have no dependents
        return self.delete_quick(get_count=True) or 0

    def drop(self, prompt=None, part_integrity="enforce") -> None:
        self.drop_quick()


class Heartbeat:
    """Renews the lease of the key being computed, from its own thread and connection."""

    def __init__(self, jobs: Job, claims: "Claims | None" = None):
        self._jobs = jobs
        self._claims = claims
        self._key: dict | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connection = None
        self._thread: threading.Thread | None = None
        self.lost = False

    def __enter__(self) -> "Heartbeat":
        # four beats per lease: a beat that waits for a lock (SQLite's write lock) or fails leaves
        # the next ones time to renew before the lease runs out
        interval = max(0.05, lease_timeout(self._jobs.connection.config) / 4)
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True, name="joinflow-heartbeat")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._connection is not None:
            self._connection.close()

    def watch(self, key: dict | None) -> None:
        with self._lock:
            self._key = dict(key) if key is not None else None

    def _run(self, interval: float) -> None:
        from .connection import Connection

        wait = interval
        while not self._stop.wait(wait):
            wait = interval
            with self._lock:
                key = self._key
            if key is None and not (self._claims is not None and self._claims.held):
                continue
            try:
                if self._connection is None:
                    parent = self._jobs.connection
                    self._connection = Connection(url=parent.url.render_as_string(hide_password=False),
                                                  config=parent.config)
                if self._claims is not None:
                    self._claims.renew(self._connection)
                elif not self._jobs.heartbeat(key, connection=self._connection):
                    self.lost = True
            except Exception as exc:  # a missed beat is not fatal; the lease has slack: try again soon
                wait = min(interval, 0.1)
                logger.warning("Heartbeat for %s failed: %s", key, exc)


# keys claimed in one statement at most; a batch also holds about BATCH_SECONDS of work at most, so a
# killed worker strands little work until its lease ends
MAX_BATCH = 64
BATCH_SECONDS = 0.1  # a batch holds about this much work, so slow makes claim one key at a time


class Claims:
    """One worker's leases during populate(): keys are claimed in batches under a token of its own.

    A claim is two statements whatever the batch size (the candidates, then one conditional
    UPDATE that writes this worker's token into ``connection_id``).  The job rows of the keys
    made are deleted by one statement per batch (``flush``); with ``jobs.keep_completed`` each
    becomes ``success`` inside its key's transaction instead.  On exit, keys claimed and not
    made go back to pending.  Every statement is compiled once per populate() call.
    """

    def __init__(self, jobs: Job, restriction=None, priority: int | None = None, keys: Sequence = ()):
        self.jobs = jobs
        n = self.cols = jobs.cols
        conn = self.connection = jobs.connection
        self.token = random.getrandbits(62) or 1
        self.pk = list(jobs.key_names)
        self.name = jobs.full_table_name
        self.decoders = jobs._decoders(self.pk)
        self.lease = lease_timeout(conn.config)
        self.mark: WorkerMark | None = None  # locked while this worker may hold leases (owner_alive)
        # where BEGIN cannot wait, the fencing at commit suffices; tripartite makes compute before
        # their transaction begins: a lease lost meanwhile is noticed before make_insert
        self.check_at_begin = bool(conn.backend.begin_waits_for_writers or jobs.target._is_tripartite())
        self.keep_completed = bool(conn.config["jobs.keep_completed"])
        self.priority = priority
        self.held: dict[tuple, dict] = {}  # raw key -> key, claimed and not finished
        self.claimed = False  # a claim was sent since the last release_all
        self.exhausted = False  # the last claim took every claimable key there was: no need to ask again
        self.lost = False
        expr = jobs if restriction is None else jobs.restrict(restriction, semantic_check=False)
        for key_list in keys:  # keys of the job table itself: looked up in its primary key, not by scanning the queue
            expr = expr.restrict(key_list, semantic_check=False)
        compiled = expr._compile()
        self._candidates = Prepared(conn, self._candidate_select(compiled.from_, list(compiled.where), bool(keys)),
                                    self.name)
        tc = self.tc = jobs._tc()
        target = jobs.target._table_clause(self.pk)
        # the statements below depend on the job table alone (this worker's token and identity are
        # parameters): compiled once per connection and table, not once per populate() call
        self._sql_cache = conn.__dict__.setdefault("_jf_claims_sql", {})
        self._sql_key = (self.name, target.name, tuple(self.pk), self.keep_completed)
        self._mine_values = {"jf_token": self.token}
        self._owner_values = {"jf_token": self.token, "jf_host": HOST, "jf_pid": os.getpid(),
                              "jf_user": (conn.get_user() or "")[:255]}
        clock = conn.backend.lease_clock  # the server's clock: leases never use this process's clock
        one_key = sa.and_(*[tc.c[k] == _param(f"jf_k{j}") for j, k in enumerate(self.pk)])

        def complete():
            if self.keep_completed:
                return sa.update(tc).where(one_key).values({n.status: "success", n.completed_time: clock(),
                                                            n.duration: _param("jf_duration")})
            return sa.delete(tc).where(one_key)

        mine = sa.and_(tc.c[n.status] == "reserved", tc.c[n.connection_id] == _param("jf_token"))
        # fencing: inside a key's make transaction, the lease is renewed only if it is still this
        # worker's; the rows of a key whose lease was taken over are rolled back, never committed
        self._fence = self._cached("fence", lambda: sa.update(tc).where(one_key, mine).values(
            {n.reserved_time: clock()}), self._mine_values)
        self._holds = self._cached("holds", lambda: sa.select(sa.literal(1)).select_from(tc).where(one_key, mine),
                                   self._mine_values)
        made = sa.exists(sa.select(sa.literal(1)).select_from(target).where(
            *[target.c[k] == tc.c[k] for k in self.pk]))
        self._complete = self._cached("complete", complete)
        # made keys' job rows are removed in one statement per batch, not one per key; a worker that
        # dies before that leaves rows whose lease runs out, and whoever claims one sees it is made
        self._finish = self._cached("finish", lambda: sa.delete(tc).where(mine, made), self._mine_values)
        self._release = self._cached("release", lambda: sa.update(tc).where(mine, ~made).values(
            {n.status: "pending", n.reserved_time: None}), self._mine_values)
        self.unfinished = 0  # made keys whose job rows are still to be removed
        self.taken_over: set[tuple] = set()  # claimed from an expired lease: maybe made already
        self._renew = self._cached("renew", lambda: sa.update(tc).where(mine).values({n.reserved_time: clock()}),
                                   self._mine_values)
        self._claim: dict[int, tuple[Prepared, Prepared]] = {}  # by batch size

    def _cached(self, kind, build, values: dict | None = None) -> Prepared:
        """The statement ``build()`` compiled once per connection and job table, with ``values`` set."""
        key = (*self._sql_key, kind)
        found = self._sql_cache.get(key)
        if found is None:
            found = self._sql_cache[key] = Prepared(self.connection, build(), self.name)
        return found.with_values(**values) if values else found

    def _now(self):
        return self.connection.backend.lease_clock()

    def _expired(self):
        return self.connection.backend.lease_clock(-sa.bindparam("jf_lease", type_=sa.Float))

    def _claimable(self, tc):
        n = self.cols
        return sa.or_(
            sa.and_(tc.c[n.status] == "pending", tc.c[n.scheduled_time] <= self._now()),
            sa.and_(tc.c[n.status] == "reserved", tc.c[n.reserved_time] < self._expired()),
        )

    def _candidate_select(self, src, where: list, by_keys: bool = False):
        """The most urgent claimable keys: (pk..., status, priority, host, connection_id), at most
        ``jf_limit`` of them.

        Pending keys and keys whose lease ran out are looked up separately, each in the order of
        the index (status, priority, scheduled_time), and merged: a single OR of the two scans and
        sorts the whole queue every time a worker claims a batch.  When the claim is restricted to
        a list of keys (``by_keys``), those few rows are found by primary key and sorted instead:
        an ordered scan of the queue would pass over every other pending key first.
        """
        n = self.cols
        if self.priority is not None:
            where = where + [src.c[n.priority] <= _param("jf_priority")]
        limit = sa.bindparam("jf_limit", type_=sa.Integer)
        order = (n.priority, n.scheduled_time)  # the index order: no sort of the whole queue

        def branch(condition):
            select = (sa.select(*[src.c[k] for k in self.pk], src.c[n.status], src.c[n.priority],
                                src.c[n.scheduled_time], src.c[n.host], src.c[n.connection_id])
                      .select_from(src).where(*where, condition))
            if not by_keys:
                select = select.order_by(*[src.c[k] for k in order]).limit(limit)
            return select.subquery()

        pending = branch(sa.and_(src.c[n.status] == "pending", src.c[n.scheduled_time] <= self._now()))
        expired = branch(sa.and_(src.c[n.status] == "reserved", src.c[n.reserved_time] < self._expired()))
        merged = sa.union_all(sa.select(pending), sa.select(expired)).subquery()
        return (sa.select(*[merged.c[k] for k in self.pk], merged.c[n.status], merged.c[n.priority],
                          merged.c[n.host], merged.c[n.connection_id])
                .order_by(*[merged.c[k] for k in order]).limit(limit))

    def _claim_statements(self, n: int) -> tuple[Prepared, Prepared]:
        found = self._claim.get(n)
        if found is None:
            tc = self.tc

            def keys():
                if len(self.pk) == 1:  # an IN list: every server looks the keys up in the primary key
                    return tc.c[self.pk[0]].in_([_param(f"jf_k{i}_0") for i in range(n)])
                return sa.or_(*[sa.and_(*[tc.c[k] == _param(f"jf_k{i}_{j}") for j, k in enumerate(self.pk)])
                                for i in range(n)])

            c = self.cols
            owner = {c.status: bound("reserved"), c.reserved_time: self._now(), c.host: _param("jf_host"),
                     c.pid: _param("jf_pid"), c.connection_id: _param("jf_token"), c.user: _param("jf_user"),
                     c.error_message: bound("")}
            claim = self._cached(("claim", n), lambda: sa.update(tc).where(keys(), self._claimable(tc)).values(owner),
                                 self._owner_values)
            mine = self._cached(("mine", n), lambda: sa.select(*[tc.c[k] for k in self.pk]).where(
                keys(), tc.c[c.status] == "reserved", tc.c[c.connection_id] == _param("jf_token")), self._mine_values)
            found = self._claim[n] = (claim, mine)
        return found

    def _times(self) -> dict:
        return {"jf_lease": self.lease}

    def any_claimable(self) -> bool:
        values = {**self._times(), "jf_limit": 1, "jf_priority": self.priority}
        return bool(self._candidates.run(self.connection, values).fetchall())

    def claim(self, n: int) -> list[tuple[dict, tuple]]:
        """Up to ``n`` keys this worker now holds, as (key, raw key); [] when nothing is claimable."""
        conn = self.connection
        if self.mark is None:  # before the first lease: the other workers here can tell this one is alive
            self.mark = WorkerMark(self.token)
        misses = 0
        npk = len(self.pk)
        # a few more candidates than wanted: workers pick at random among them, so they rarely collide
        limit = 2 * n + 8
        while True:
            times = self._times()
            rows = self._candidates.run(conn, {**times, "jf_limit": limit, "jf_priority": self.priority}).fetchall()
            # an expired lease of a worker that is alive on this machine (stopped by SIGSTOP, or its
            # heartbeat late behind a lock) is not taken over: that worker makes the key when it goes on
            usable = [r for r in rows if r[npk] != "reserved" or not owner_alive(r[npk + 2], r[npk + 3])]
            if not usable:
                if len(rows) < limit or limit >= 4096:
                    self.exhausted = True
                    return []
                limit *= 2  # every candidate was a live worker's key: look further
                continue
            best = usable[0][npk + 1]
            pool = [tuple(r[:npk]) for r in usable if r[npk + 1] == best]  # most urgent first; spread workers
            pick = random.sample(pool, min(n, len(pool)))
            expired = {tuple(r[:npk]) for r in usable if r[npk] == "reserved"}
            claim, mine = self._claim_statements(len(pick))
            values = dict(times)
            for i, raw in enumerate(pick):
                for j, v in enumerate(raw):
                    values[f"jf_k{i}_{j}"] = v
            self.claimed = True  # from here on a signal may leave rows with our token: release_all looks
            got = claim.run(conn, values).rowcount
            if got != len(pick) and got:
                pick = [tuple(r) for r in mine.run(conn, values).fetchall()]
            elif not got:
                misses += 1  # another worker was faster: look again
                if misses > 2:
                    threading.Event().wait(random.random() * 0.01 * min(misses, 10))
                continue
            # every claimable key was a candidate, all of one priority, and this worker got them all
            self.exhausted = len(rows) < limit and len(pool) == len(usable) == len(rows) == len(pick) == got
            claimed = []
            for raw in pick:
                key = {name: (decode(v) if decode and v is not None else v)
                       for name, v, decode in zip(self.pk, raw, self.decoders)}
                self.held[raw] = key
                if raw in expired:
                    self.taken_over.add(raw)
                claimed.append((key, raw))
            return claimed

    def complete(self, raw: tuple, duration: float | None = None) -> None:
        """A held key was made (called inside its make transaction).

        With ``jobs.keep_completed`` the job row becomes ``success`` in that transaction;
        otherwise the rows of made keys are deleted together by ``flush()``.
        """
        if self.keep_completed:
            values = {f"jf_k{j}": v for j, v in enumerate(raw)}
            values.update(jf_duration=duration)
            self._complete.run(self.connection, values)
        else:
            self.unfinished += 1

    def _key_values(self, raw: tuple) -> dict:
        return {f"jf_k{j}": v for j, v in enumerate(raw)}

    def check(self, raw: tuple) -> None:
        """Raise ``LeaseLost`` if this worker no longer holds ``raw`` (called when its make transaction
        starts: on SQLite that is when the write lock is ours, so no one can take the key over until
        the commit; a worker that waited for the lock past its lease does not make the key again)."""
        if self.check_at_begin and self._holds.run(self.connection, self._key_values(raw)).first() is None:
            raise LeaseLost(f"{self.name}: the lease on {self.held.get(raw, raw)} was taken over by another worker.")

    def fence(self, raw: tuple) -> None:
        """Renew the lease on ``raw`` inside its make transaction, just before the commit, if it is still
        this worker's; raise ``LeaseLost`` otherwise (the caller rolls the key's rows back).

        The renewal locks the job row until the commit, so a takeover either committed before it (then
        nothing of this worker is committed) or waits for the commit and finds a fresh lease: a key's
        rows are never committed by two workers."""
        if self._fence.run(self.connection, self._key_values(raw)).rowcount != 1:
            raise LeaseLost(f"{self.name}: the lease on {self.held.get(raw, raw)} was taken over by another worker; "
                            "its rows were rolled back.")

    def error(self, raw: tuple, key: dict, message: str, stack: str | None) -> None:
        """Record a held key as an error job, unless its lease was taken over meanwhile."""
        self.jobs.error(key, message, stack, token=self.token)
        self.done(raw)

    def done(self, raw: tuple) -> None:
        """The key is no longer held (made, errored or given back)."""
        self.held.pop(raw, None)
        self.taken_over.discard(raw)

    def flush(self) -> None:
        """Remove the job rows of the keys made so far (one statement)."""
        if self.unfinished:
            self.unfinished = 0
            self._finish.run(self.connection)

    def release_all(self) -> None:
        """Finish the made keys and give back every other key this worker still holds."""
        try:
            self.flush()
            if self.held or self.claimed:
                self.held.clear()
                self.taken_over.clear()
                self.claimed = False
                self._release.run(self.connection)
        finally:
            if self.mark is not None:  # no lease left: nothing for other workers to wait for
                self.mark.close()
                self.mark = None

    def renew(self, connection) -> None:
        """Heartbeat: push out the lease of every held key (from the heartbeat's own connection)."""
        held = len(self.held)
        if not held:
            return
        renewed = self._renew.run(connection).rowcount
        if renewed < held and len(self.held) >= held:
            self.lost = True
            logger.warning("%s: %d lease(s) of this worker were taken over by another worker.",
                           self.name, held - renewed)
