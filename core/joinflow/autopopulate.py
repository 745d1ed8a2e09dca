"""populate(): find pending keys (one anti-join), run make() per key, coordinate workers."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import hashlib
import logging
import os
import pickle
import platform
import queue as queue_module
import random
import signal
import subprocess
import threading
import time
import traceback
from typing import Any

import numpy as np
import sqlalchemy as sa

from .condition import AndList, Not
from .errors import DataJointError, DeadlockError, DuplicateError, LostConnectionError, WorkerDiedError
from .backends.base import VALUE
from .jobs import MAX_BATCH, BATCH_SECONDS, Claims, Heartbeat, Job, LeaseLost, Prepared, key_lists, made_keys
from .table import making

logger = logging.getLogger("joinflow")


# DataJoint 2.x's hidden per-row job record on Computed/Imported tables (jobs.add_job_metadata)
JOB_METADATA = (
    ("_job_start_time", "job_start_time = null : datetime(3) # when computation began"),
    ("_job_duration", "job_duration = null : float32 # computation duration in seconds"),
    ("_job_version", 'job_version = "" : varchar(64) # code version'),
)


def job_metadata_attributes() -> list:
    """The hidden ``_job_*`` attributes added to auto-populated tables declared with
    ``config["jobs.add_job_metadata"]`` on (names and types as DataJoint 2.x declares them)."""
    from .declare import parse_attribute

    return [dataclasses.replace(parse_attribute(line, False, "job metadata"), name=name)
            for name, line in JOB_METADATA]


_GIT_VERSIONS: dict[str, str] = {}  # working directory -> commit, read once per process


def job_version(config) -> str:
    """The code version recorded with jobs and provenance (``jobs.version_method``: None or "git").

    With "git", the commit of the working directory is read once per process and directory: the
    code a process runs is the code it imported, even if someone commits while it works (and a
    ``git`` call per made key or per insert would cost milliseconds each)."""
    method = config["jobs.version_method"]
    if method in (None, "", "none"):
        return ""
    if method == "git":
        where = os.getcwd()
        found = _GIT_VERSIONS.get(where)
        if found is None:
            try:
                out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     timeout=10, check=True)
                found = out.stdout.strip()[:64]
            except (OSError, subprocess.SubprocessError):
                found = ""
            _GIT_VERSIONS[where] = found
        return found
    raise DataJointError(f'jobs.version_method must be None or "git", not {method!r}.')


DEADLOCK_RETRIES = 3  # a key whose transaction the server aborted (deadlock, lock timeout) is made again


class _Retry(Exception):
    """Internal: make the key again (its transaction was rolled back by the server)."""


def _is_nan(value: Any) -> bool:
    """NaN (float, complex, Decimal) or NaT: the values that are not equal to themselves."""
    if isinstance(value, (float, complex, np.floating, np.complexfloating)):
        return value != value
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    return False


def _same(a: Any, b: Any) -> bool:
    """Deep equality for make_fetch results (numpy-aware).  A NaN equals a NaN in the same place
    (fetched twice, the same missing value is the same data); every other difference counts."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return False
        if x.dtype.names or y.dtype.names:  # records (fetch() results): field by field
            return x.dtype.names == y.dtype.names and all(_same(x[n], y[n]) for n in x.dtype.names)
        if x.dtype.kind == "O" or y.dtype.kind == "O":
            return all(_same(u, v) for u, v in zip(x.flat, y.flat))
        try:
            return bool(np.array_equal(x, y, equal_nan=True))
        except TypeError:  # no NaN in this dtype (strings, bytes)
            return bool(np.array_equal(x, y))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a).__module__.startswith("pandas") and type(a) is type(b) and hasattr(a, "equals"):
        return bool(a.equals(b))  # NaN in the same place is equal there
    if _is_nan(a) or _is_nan(b):
        return _is_nan(a) and _is_nan(b)
    try:
        return bool(a == b)
    except Exception:
        return False


@contextlib.contextmanager
def _terminate_on_sigterm():
    """Turn SIGTERM into SystemExit in the main thread, so the current key is abandoned cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit("SIGTERM received")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Upstream:
    """``self.upstream[T]`` inside ``make()``: ancestor table ``T`` restricted to the rows the
    current key derives from, following the foreign keys from this table up to ``T``.

    ``T`` is a table class, a table object or a ``"schema.table"`` name.  Where several
    foreign-key paths lead to ``T``, its rows reached by any of them are kept.
    """

    def __init__(self, table, key: dict):
        self._table = table
        self._key = dict(key)

    def _resolve(self, target) -> tuple[str, Any]:
        from .table import FreeTable
        from .upstream import resolve_table

        conn = self._table.connection
        full, table = resolve_table(conn, target, "self.upstream[T]")
        return full, FreeTable(conn, full) if table is None else table

    def __getitem__(self, target):
        from .upstream import upstream_restrictions

        table = self._table
        conn = table.connection
        name, base = self._resolve(target)
        me = table.full_table_name
        deps = conn.dependencies
        if not deps._loaded or name not in deps.ancestors(me):
            deps.load()
        ancestors = deps.ancestors(me)
        if name not in ancestors:
            raise DataJointError(
                f"Table {name} is not upstream of {table.class_name} ({me}): self.upstream[...] takes a "
                "table that this table depends on through foreign keys (a parent, grandparent, ...)."
            )
        restricted = upstream_restrictions(conn, me, self._key, until=name)
        if name not in restricted:
            raise DataJointError(
                f"Table {name} is upstream of {table.class_name} only through secondary foreign keys, "
                "which the key does not determine; fetch it from the rows that reference it instead."
            )
        return base.restrict(restricted[name], semantic_check=False)

    def __repr__(self) -> str:
        return f"Upstream of {self._table.class_name} for key {self._key}"


class AutoPopulate:
    """Mixin of Imported and Computed tables: ``make()`` derives rows; ``populate()`` runs it."""

    _allow_insert = False
    _current_key: dict | None = None

    @property
    def upstream(self) -> Upstream:
        """Inside ``make()``: ``self.upstream[T]`` is ancestor ``T`` restricted to the current key."""
        key = self._current_key
        if key is None:
            raise DataJointError(
                f"{self.class_name}.upstream is available inside make() (and make_fetch/make_insert) during "
                "populate(); outside it, restrict the ancestor table by a key yourself."
            )
        return Upstream(self, key)

    # -- what is to be done ---------------------------------------------------------------------
    @property
    def key_source(self):
        """Default: the join of the primary-key parents (renamed foreign keys projected)."""
        from .table import FreeTable

        conn = self.connection
        deps = conn.dependencies
        name = self.full_table_name
        if not deps._loaded or name not in deps.graph:  # the graph is re-read after joinflow's own DDL
            deps.load()
        parents = deps.parents(name)
        source = None
        for parent, info in parents.items():
            if not info["primary"]:
                continue
            for attr_map in info["attr_maps"]:
                renames = {child: par for child, par in attr_map.items() if child != par}
                table = FreeTable(conn, parent)
                expr = table.proj(**renames) if renames else table.proj()
                source = expr if source is None else source.join(expr, semantic_check=False)
        if source is None:
            raise DataJointError(
                f"{self.class_name} has no primary-key parents, so it has no key source. Give it a "
                "foreign key in its primary key, or define key_source."
            )
        return source

    def _key_source(self):
        from .expression import _as_expression

        return _as_expression(self.key_source)

    def _jobs_to_do(self, restrictions) -> Any:
        source = self._key_source()
        names = self.heading.names
        missing = [k for k in source.primary_key if k not in names]
        if missing:
            raise DataJointError(
                f"The key source of {self.class_name} has primary-key attributes {missing} that the table lacks: "
                "each key make() is given must name rows of the table. Give the table those attributes, or "
                "project them away in key_source."
            )
        if restrictions:
            source = source.restrict(AndList(restrictions), semantic_check=False)
        return source.proj()

    def pending(self, *restrictions):
        """Keys of the key source not yet in the table: one anti-join."""
        todo = self._jobs_to_do(restrictions)
        return todo.restrict(Not(made_keys(self, todo.primary_key)), semantic_check=False)

    def progress(self, *restrictions, display: bool = False) -> tuple[int, int]:
        """(remaining, total) over the key source."""
        todo = self._jobs_to_do(restrictions)
        total = len(todo)
        remaining = len(todo.restrict(Not(made_keys(self, todo.primary_key)), semantic_check=False))
        if display:
            done = total - remaining
            print(f"{self.class_name:<22} Completed {done} of {total} ({(done / total * 100) if total else 100:.1f}%)")
        return remaining, total

    @property
    def jobs(self) -> Job:
        return Job(self).ensure()

    # -- populate ---------------------------------------------------------------------------------
    def populate(self, *restrictions, suppress_errors: bool = False, return_exception_objects: bool = False,
                 reserve_jobs: bool = False, max_calls: int | None = None, display_progress: bool = False,
                 processes: int = 1, make_kwargs: dict | None = None, priority: int | None = None,
                 refresh: bool | None = None) -> dict:
        """Compute the pending keys; returns ``{"success_count", "error_list"}``."""
        conn = self.connection
        if conn.in_transaction:
            raise DataJointError("populate() cannot be called inside a transaction.")
        if self._restrictions:
            raise DataJointError(
                "Cannot call populate on a restricted table. Instead, pass conditions to populate() as arguments."
            )
        if processes and processes > 1:
            return self._populate_processes(restrictions, processes, suppress_errors, return_exception_objects,
                                            max_calls, make_kwargs, priority, refresh)
        options = dict(suppress_errors=suppress_errors, return_exception_objects=return_exception_objects,
                       make_kwargs=make_kwargs or {}, metadata=self._metadata_writer(),
                       inserted=self._key_rows_check() if conn.config["jobs.check_make_inserted"] else None)
        with _terminate_on_sigterm():
            if reserve_jobs:
                return self._populate_reserved(restrictions, max_calls, priority, refresh, display_progress, options)
            keys = self.pending(*restrictions).keys(limit=max_calls)
            result = {"success_count": 0, "error_list": []}
            exists = self._key_rows_check()
            last = len(keys) - 1
            try:
                for i, key in enumerate(self._progress_bar(keys, display_progress)):
                    self._populate1(key, None, None, result, exists=exists, chain=i < last, **options)
            finally:
                conn.end_chain()
            return result

    def _progress_bar(self, keys, display: bool, total: int | None = None):
        if not display:
            return keys
        from tqdm.auto import tqdm

        return tqdm(keys, desc=self.class_name, total=total)

    def _populate_reserved(self, restrictions, max_calls, priority, refresh, display_progress, options) -> dict:
        conn = self.connection
        jobs = Job(self).ensure()
        jobs.check_key_source()
        claim_filter = self._jobs_to_do(restrictions) if restrictions else None
        claims = Claims(jobs, claim_filter, priority, keys=key_lists(restrictions, jobs.key_names))
        if refresh if refresh is not None else conn.config["jobs.auto_refresh"]:
            self._refresh_once(jobs, claims, restrictions, priority)
        result = {"success_count": 0, "error_list": []}
        exists = self._key_rows_check()
        calls = 0
        batch = 1  # grows while makes are fast, so a claim serves many keys; slow makes claim one at a time
        per_key = None
        bar = self._progress_bar(None, display_progress, total=len(jobs.pending)) if display_progress else None
        with Heartbeat(jobs, claims):
            try:
                while max_calls is None or calls < max_calls:
                    want = batch if max_calls is None else min(batch, max_calls - calls)
                    claimed = claims.claim(want)
                    if not claimed:
                        break
                    last = len(claimed) - 1
                    for i, (key, raw) in enumerate(claimed):
                        started = time.perf_counter()
                        _note_making(key, result)  # a worker process: the parent learns it if this process dies
                        # keys of a batch are made back to back: each commit opens the next key's transaction
                        self._populate1(key, claims, raw, result, exists=exists if raw in claims.taken_over else None,
                                        chain=i < last, **options)
                        _note_making(None, result)
                        calls += 1
                        took = time.perf_counter() - started
                        per_key = took if per_key is None else 0.8 * per_key + 0.2 * took
                        if bar is not None:
                            bar.update(1)
                    claims.flush()
                    if claims.exhausted:  # the last claim took everything claimable: asking again finds nothing
                        break
                    batch = max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(per_key, 1e-6))))
            finally:
                conn.end_chain()
                claims.release_all()  # claimed and not made (error, signal, max_calls): pending again
        if bar is not None:
            bar.close()
        return result

    def _refresh_once(self, jobs: Job, claims: "Claims", restrictions, priority) -> None:
        """Refresh the queue, unless another worker is doing it right now (then use its work).

        Workers that start together take turns on a named lock; one runs the key-source query,
        the others wait for it and find the queue filled, so an expensive key source is not
        evaluated once per worker.
        """
        conn = self.connection
        backend = conn.backend
        query = Prepared(conn, self._jobs_to_do(restrictions)._select())  # this worker's key source, values included
        digest = hashlib.sha1(f"{jobs.full_table_name}|{query.sql}|{sorted(query.defaults.items())!r}".encode())
        name = "joinflow-refresh-" + digest.hexdigest()[:40]
        got = backend.try_lock(conn, name)
        if got is None:  # no named locks here (an in-memory SQLite database): just refresh
            jobs.refresh(*restrictions, priority=priority)
            return
        if not got:
            backend.wait_lock(conn, name)  # another worker is refreshing this queue: wait for it
        try:
            if got or not claims.any_claimable():
                jobs.refresh(*restrictions, priority=priority)
        finally:
            backend.unlock(conn, name)

    def _exists_statement(self, names=None):
        """``key in self`` as one prebuilt statement (populate runs it per key); ``names``: the
        attributes of the key (default: the primary key)."""
        conn = self.connection
        names = list(self.primary_key if names is None else names)
        tc = self._table_clause(names)
        heading = self.heading
        encoders = [conn.backend.encoder(heading[k]) for k in names]
        stmt = Prepared(conn, sa.select(sa.literal(1)).select_from(tc).where(
            *[tc.c[k] == sa.bindparam(f"jf_k{j}", type_=VALUE) for j, k in enumerate(names)]).limit(1),
            self.full_table_name)

        def exists(key: dict) -> bool:
            values = {f"jf_k{j}": (enc(key[k]) if enc else key[k]) for j, (k, enc) in enumerate(zip(names, encoders))}
            return stmt.run(conn, values).first() is not None

        return exists

    def _key_rows_check(self):
        """A function telling whether this table has a row matching ``key`` (the key make() is given:
        its attributes, a part of the primary key when the table adds attributes of its own, or
        secondary attributes when the key source names them), as seen by the open transaction."""
        known = set(self.heading.names)
        statements: dict[tuple, Any] = {}

        def exists(key: dict) -> bool:
            names = tuple(k for k in key if k in known)
            if not names:  # a key source checked by _jobs_to_do always names attributes of the table
                raise DataJointError(f"The key {key} names no attribute of {self.class_name}.")
            check = statements.get(names)
            if check is None:
                check = statements[names] = self._exists_statement(names)
            return check(key)

        return exists

    def _populate1(self, key: dict, claims: Claims | None, raw: tuple | None, result: dict, **options) -> None:
        """Make one key in its own transaction.

        When the server aborts that transaction (deadlock, lock timeout) or the session is lost,
        it is rolled back (on a new session) and the key is made again, after checking that the
        lost transaction did not commit after all.
        """
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                return self._make1(key, claims, raw, result, last=attempt == DEADLOCK_RETRIES, **options)
            except _Retry as retry:
                logger.warning("%s: %s for key %s; making it again.", self.class_name, retry.__cause__, key)
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                options["exists"] = self._key_rows_check()

    def _make1(self, key: dict, claims: Claims | None, raw: tuple | None, result: dict, *,
               suppress_errors: bool, return_exception_objects: bool, make_kwargs: dict,
               exists=None, metadata=None, inserted=None, last: bool = True, chain: bool = False) -> None:
        conn = self.connection
        cls = type(self)
        start = time.time()
        tripartite = self._is_tripartite()
        self._current_key = key
        prov_token = None
        if conn.config["provenance.capture"]:  # rows inserted into Manual tables name this make()
            from .provenance import enter_make

            prov_token = enter_make(self.full_table_name, key, job_version(conn.config))
        try:
            if tripartite:
                fetched = self.make_fetch(dict(key), **make_kwargs)
                computed = self.make_compute(dict(key), *_as_tuple(fetched))
            conn.start_transaction()
            try:
                if exists is not None and exists(key):
                    conn.cancel_transaction()  # made by someone else since the key was found pending
                    if claims is not None:
                        claims.complete(raw)
                        claims.done(raw)
                    return
                if claims is not None:  # taken over while this worker waited (e.g. for SQLite's write lock)?
                    claims.check(raw)
                with making(cls):  # this thread's inserts into cls only, not another thread's
                    if tripartite:
                        again = self.make_fetch(dict(key), **make_kwargs)
                        if not _same(_as_tuple(fetched), _as_tuple(again)):
                            raise DataJointError(
                                "Referential integrity failed! The `make_fetch` data has changed since it was "
                                f"fetched for {key}; the result was not inserted. populate() again to recompute."
                            )
                        self.make_insert(dict(key), *_as_tuple(computed))
                    else:
                        self._make_function()(dict(key), **make_kwargs)
                if inserted is not None and not inserted(key):
                    raise DataJointError(
                        f"{self.class_name}.{'make_insert' if tripartite else 'make'}() did not insert the key it "
                        f"was given: table {self.full_table_name} has no row matching {key} after it. make() must "
                        "insert the key it was given; nothing of this make() was committed and the key stays "
                        "pending. Insert a row for the key (with its attributes as given), or, if this table skips "
                        "keys on purpose, set dj.config['jobs.check_make_inserted'] = False."
                    )
                if metadata is not None:  # hidden _job_* columns, in the same commit as the rows
                    metadata(key, start, time.time() - start)
                if claims is not None:
                    claims.fence(raw)  # commit only while the lease is still ours (LeaseLost: roll back)
                    # keep_completed: the job row's success goes in the same commit
                    claims.complete(raw, duration=time.time() - start)
            except BaseException:
                if conn.in_transaction:
                    conn.cancel_transaction()
                raise
            conn.commit_transaction(chain=chain and not tripartite)  # tripartite: no transaction while computing
            if claims is not None:
                claims.done(raw)
        except DuplicateError as exc:
            if key in self:  # another worker finished it first (lease taken over): nothing lost, nothing doubled
                logger.info("%s: key %s was completed by another worker.", self.class_name, key)
                if claims is not None:
                    claims.complete(raw)
                    claims.done(raw)
                return
            self._record_error(key, claims, raw, exc, result, suppress_errors, return_exception_objects)
            return
        except LeaseLost as exc:  # rolled back above: the key is the other worker's now, not an error
            logger.warning("%s", exc)
            claims.done(raw)
            return
        except (KeyboardInterrupt, SystemExit) as exc:
            # rolled back above.  As DataJoint: the key being made becomes an error job naming the
            # interruption (Ctrl-C, or SIGTERM as SystemExit), so the stop is visible in the job
            # table; always re-raised, so the process stops.  A worker process of
            # populate(processes=N) stopped by its parent gives the key back instead (the key did
            # nothing wrong; the parent stopped the run).
            if claims is not None and _WORKER_SLOT is None:
                self._record_interrupt(key, claims, raw, exc)
            raise
        except (DeadlockError, LostConnectionError) as exc:
            if not last:  # rolled back above; nothing was wrong with the key
                raise _Retry() from exc
            self._record_error(key, claims, raw, exc, result, suppress_errors, return_exception_objects)
            return
        except Exception as exc:
            self._record_error(key, claims, raw, exc, result, suppress_errors, return_exception_objects)
            return
        finally:
            self._current_key = None
            if prov_token is not None:
                from .provenance import exit_make

                exit_make(prov_token)
        result["success_count"] += 1
        made = self.__dict__.get("_jf_made")  # joinflow.pipeline.Step.run counts the rows of these keys
        if made is not None:
            made.append(key)

    def _metadata_writer(self):
        """None, or a function that fills the hidden ``_job_*`` columns of a made key's row."""
        heading = self.heading
        if "_job_start_time" not in heading.all_attributes:
            return None
        conn = self.connection
        columns = [name for name, _ in JOB_METADATA]
        known = set(heading.names)
        statements: dict[tuple, tuple] = {}  # by the key's attributes (a part of the primary key, or all of it)

        def statement(names: tuple) -> tuple:
            found = statements.get(names)
            if found is None:
                tc = self._table_clause(list(names) + columns)
                stmt = Prepared(conn, sa.update(tc).where(
                    *[tc.c[k] == sa.bindparam(f"jf_k{j}", type_=VALUE) for j, k in enumerate(names)]).values(
                    {tc.c[c]: sa.bindparam(f"jf_{c}", type_=VALUE) for c in columns}), self.full_table_name)
                found = statements[names] = (stmt, [conn.backend.encoder(heading[k]) for k in names])
            return found

        encode_time = conn.backend.encoder(heading["_job_start_time"])
        version = job_version(conn.config)[:64]

        def write(key: dict, started: float, duration: float) -> None:
            names = tuple(k for k in key if k in known)
            stmt, encoders = statement(names)
            values = {f"jf_k{j}": (enc(key[k]) if enc else key[k]) for j, (k, enc) in enumerate(zip(names, encoders))}
            start = datetime.datetime.fromtimestamp(started)
            values.update(jf__job_start_time=encode_time(start) if encode_time else start,
                          jf__job_duration=float(duration), jf__job_version=version)
            stmt.run(conn, values)

        return write

    def _make_function(self):
        """``make``, or the legacy ``_make_tuples`` of DataJoint 0.x pipelines when the class defines
        it (DataJoint 2.x calls ``_make_tuples`` then, even beside a ``make``)."""
        legacy = getattr(self, "_make_tuples", None)
        if legacy is not None:
            return legacy
        make = getattr(self, "make", None)
        if make is None:
            raise DataJointError(
                f"{self.class_name} defines no make(key): an auto-populated table computes its rows in make() "
                "(or in make_fetch/make_compute/make_insert)."
            )
        return make

    def _is_tripartite(self) -> bool:
        cls = type(self)
        found = cls.__dict__.get("_jf_tripartite")
        if found is None:
            found = all(hasattr(cls, m) for m in ("make_fetch", "make_compute", "make_insert"))
            cls._jf_tripartite = found
        return found

    def _record_interrupt(self, key, claims, raw, exc) -> None:
        text = str(exc)
        message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        logger.error("%s: make interrupted for key %s: %s", self.class_name, key, message)
        try:
            claims.error(raw, key, message, traceback.format_exc())
        except Exception as failure:  # e.g. the session broke mid-statement: the lease runs out instead
            logger.warning("%s: could not record the interruption of key %s as an error job (%s); its lease "
                           "runs out and the key becomes claimable again.", self.class_name, key, failure)

    def _record_error(self, key, claims, raw, exc, result, suppress_errors, return_exception_objects) -> None:
        message = f"{type(exc).__name__}: {exc}"
        logger.error("%s: make failed for key %s: %s", self.class_name, key, message)
        if claims is not None:  # recorded only while the lease is still this worker's
            claims.error(raw, key, message, traceback.format_exc())
        if not suppress_errors:
            raise exc
        result["error_list"].append((key, exc if return_exception_objects else message))

    def _populate_processes(self, restrictions, processes, suppress_errors, return_exception_objects, max_calls,
                            make_kwargs, priority, refresh) -> dict:
        """Run ``processes`` worker processes that claim keys through the job table.

        SIGTERM (or Ctrl-C) to this process stops the workers: each abandons its key (rolled
        back) and gives its leases back; a worker that does not stop within
        ``WORKER_STOP_SECONDS`` is killed and its unmade keys are given back for it.  A worker
        that dies (killed, out of memory) is a failure: the key it was making becomes an error job
        and is reported (``WorkerDiedError`` raised, or listed in ``error_list`` with
        ``suppress_errors``), the other keys it had claimed are given back, and a new worker
        takes its place.  A worker that dies between keys makes populate() raise.
        """
        conn = self.connection
        jobs = Job(self).ensure()
        import multiprocessing  # here, not at the top: it adds about 25 ms to `import joinflow`

        with _terminate_on_sigterm():  # forked workers inherit it until their own populate() installs it
            if refresh if refresh is not None else conn.config["jobs.auto_refresh"]:
                jobs.refresh(*restrictions, priority=priority)
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            per_worker = None if max_calls is None else -(-max_calls // processes)
            workers = []

            def spawn(calls=per_worker):
                slot = ctx.Array("B", _SLOT_SIZE, lock=False)  # the key the worker is making
                worker = ctx.Process(target=_worker_main, args=(self, restrictions, queue, suppress_errors,
                                                                calls, make_kwargs, priority, slot))
                worker.start()
                worker.jf_slot = slot
                workers.append(worker)
                return worker

            try:
                for _ in range(processes):
                    spawn()
                outcomes, dead = self._wait_for_workers(workers, queue, jobs, spawn, per_worker)
            except BaseException:  # SIGTERM, Ctrl-C, or a failure here: stop the workers, give their keys back
                _stop_workers(workers, jobs)
                raise
        result = {"success_count": 0, "error_list": []}
        failures = []
        for outcome in outcomes.values():
            if "fatal" in outcome:
                failures.append(outcome["fatal"])
            else:
                result["success_count"] += outcome["success_count"]
                result["error_list"] += outcome["error_list"]
        for pid, (how, keys) in dead.items():
            message = (f"{WorkerDiedError.__name__}: worker process {pid} of {self.class_name}.populate() {how} "
                       "while making this key; the key is an error job now (its make() may have killed the "
                       "worker). Clear the error job (Table.jobs.errors.delete() or `joinflow jobs --clear`) "
                       "to compute it again.")
            if not keys:
                failures.append(f"worker process {pid} {how} between keys (the keys it had claimed and not made "
                                "are pending again)")
            if suppress_errors:
                result["error_list"] += [(key, WorkerDiedError(message) if return_exception_objects else message)
                                         for key in keys]
        if any(keys for _, keys in dead.values()) and not suppress_errors:
            keys = [key for _, held in dead.values() for key in held]
            raise WorkerDiedError(
                f"{len(dead)} worker process(es) of {self.class_name}.populate(processes={processes}) died: "
                + "; ".join(f"process {pid} {how} while making key(s) {held}" for pid, (how, held) in dead.items())
                + f". The {len(keys)} key(s) are error jobs now; clear them "
                "(Table.jobs.errors.delete() or `joinflow jobs --clear`) to compute them again."
            )
        if failures:
            raise DataJointError(
                f"{len(failures)} worker process(es) of {self.class_name}.populate(processes={processes}) stopped "
                f"on an error: {'; '.join(failures)}. Keys made before: {result['success_count']}; errors recorded: "
                f"{len(result['error_list'])}."
            )
        return result

    def _wait_for_workers(self, workers, queue, jobs, spawn, per_worker) -> tuple[dict, dict]:
        """Collect each worker's report; a worker that exits without one died: the key it was making
        becomes an error job, the others it had claimed are pending again and a new worker takes its
        place (only after a key failed, so a run that kills every worker still ends).

        Returns ({pid: outcome}, {pid: (how it died, [keys it held])})."""
        outcomes: dict[int, dict] = {}
        dead: dict[int, tuple[str, list]] = {}
        running = {w.pid: w for w in workers}
        while running:
            try:
                outcome = queue.get(timeout=0.2)
            except queue_module.Empty:
                outcome = None
            if outcome is not None:
                outcomes[outcome["pid"]] = outcome
                continue
            for pid, worker in list(running.items()):
                if pid in outcomes:
                    worker.join()
                    del running[pid]
                elif worker.exitcode is not None:
                    try:  # its report may still be on its way through the queue
                        while True:
                            late = queue.get(timeout=0.5)
                            outcomes[late["pid"]] = late
                    except queue_module.Empty:
                        pass
                    if pid not in outcomes:
                        code = worker.exitcode
                        how = (f"died (killed by signal {signal.Signals(-code).name})" if code < 0
                               else f"died (exit code {code}, no report)")
                        made, making = _read_slot(worker.jf_slot)
                        outcomes[pid] = {"pid": pid, "success_count": made, "error_list": []}  # made before it died
                        dead[pid] = (how, _fail_dead_worker_keys(jobs, pid, how, making))
                        calls = None if per_worker is None else per_worker - made - 1  # its share of max_calls
                        if dead[pid][1] and (calls is None or calls > 0):
                            new = spawn(calls)
                            running[new.pid] = new
                    worker.join()
                    del running[pid]
        return outcomes, dead


WORKER_STOP_SECONDS = 10.0  # after SIGTERM, how long workers get to roll back and give their keys back


def _held_by(jobs, tc, pid: int, made: bool = False):
    """The job rows a worker process of this host holds whose key is not made (or is, ``made``)."""
    target = jobs.target._table_clause(list(jobs.key_names))
    in_target = sa.exists(sa.select(sa.literal(1)).select_from(target).where(
        *[target.c[k] == tc.c[k] for k in jobs.key_names]))
    col = jobs.column
    return sa.and_(tc.c[col("status")] == "reserved", tc.c[col("pid")] == int(pid),
                   tc.c[col("host")] == platform.node()[:255], in_target if made else ~in_target)


def _finish_for(jobs, tc, pid: int) -> None:
    """Give back a dead or killed worker's unmade keys, and remove the job rows of those it made
    (rows a live worker removes after each batch)."""
    col = jobs.column
    conn = jobs.connection
    conn.execute(sa.update(tc).where(_held_by(jobs, tc, pid)).values({tc.c[col("status")]: "pending",
                                                                      tc.c[col("reserved_time")]: None}))
    conn.execute(sa.delete(tc).where(_held_by(jobs, tc, pid, made=True)))


_SLOT_SIZE = 1 << 16  # bytes shared per worker process: the pickled key it is making
_WORKER_SLOT = None  # in a worker process of populate(processes=N): its shared slot


def _note_making(key: dict | None, result: dict) -> None:
    """In a worker process, publish to the parent the keys made so far and the key now being
    made (None: between keys), for the report if this process dies."""
    slot = _WORKER_SLOT
    if slot is None:
        return
    data = b"" if key is None else pickle.dumps(dict(key))
    if len(data) + 8 > len(slot):
        data = b""  # a key too large to publish: the parent then treats the death as between keys
    slot[0:4] = int(result["success_count"]).to_bytes(4, "little")
    slot[8:8 + len(data)] = data
    slot[4:8] = len(data).to_bytes(4, "little")


def _read_slot(slot) -> tuple[int, dict | None]:
    """(keys made, key being made) as a dead worker last published them."""
    made = int.from_bytes(bytes(slot[0:4]), "little")
    size = int.from_bytes(bytes(slot[4:8]), "little")
    if not size:
        return made, None
    try:
        return made, pickle.loads(bytes(slot[8:8 + size]))
    except Exception:  # the worker died while writing it
        return made, None


def _fail_dead_worker_keys(jobs, pid: int, how: str, making: dict | None) -> list[dict]:
    """A dead worker's job rows: the key it was making becomes an error job (it may be what killed
    the worker: it is reported, not re-made behind the user's back); the other keys it had
    claimed and not made are pending again.  Returns the failed keys."""
    conn = jobs.connection
    tc = jobs._tc()
    col = jobs.column
    where = _held_by(jobs, tc, pid)
    failed = []
    if making is not None:
        message = f"WorkerDiedError: worker process {pid} {how} while making this key."
        now = jobs._clock()  # the server's clock, as every job-table time
        if conn.execute(sa.update(tc).where(where, jobs._key_clause(tc, making)).values(
                {tc.c[col("status")]: "error", tc.c[col("error_message")]: message[:2047],
                 tc.c[col("completed_time")]: now})).rowcount:
            failed.append({k: making[k] for k in jobs.key_names})
    _finish_for(jobs, tc, pid)  # claimed in the same batch and never started: claimable again
    return failed


def _stop_workers(workers, jobs) -> None:
    """SIGTERM the workers (each rolls back and gives its keys back), kill those that do not stop,
    and give back the keys of the killed ones.  A second SIGTERM meanwhile does not cut this short."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main else None
    try:
        _stop_workers_now(workers, jobs)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _stop_workers_now(workers, jobs) -> None:
    alive = [w for w in workers if w.exitcode is None]
    for w in alive:
        with contextlib.suppress(OSError):
            os.kill(w.pid, signal.SIGTERM)
    deadline = time.monotonic() + WORKER_STOP_SECONDS
    for w in alive:
        w.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.exitcode is None:
            with contextlib.suppress(OSError):
                os.kill(w.pid, signal.SIGKILL)
            w.join()
    conn = jobs.connection
    tc = jobs._tc()
    for w in workers:  # a worker that stopped gracefully gave its keys back already; this finds the others'
        try:
            if conn.in_transaction:
                conn.cancel_transaction()
            _finish_for(jobs, tc, w.pid)
        except Exception as exc:  # the leases run out on their own
            logger.warning("Could not give back the keys of worker process %s: %s", w.pid, exc)


def _worker_main(table, restrictions, queue, suppress_errors, max_calls, make_kwargs, priority, slot) -> None:
    global _WORKER_SLOT
    _WORKER_SLOT = slot
    conn = table.connection
    code = 0
    try:
        conn.engine.dispose(close=False)  # never share the parent's sockets
        conn.connect()
        outcome = table.populate(*restrictions, suppress_errors=suppress_errors, reserve_jobs=True,
                                 max_calls=max_calls, make_kwargs=make_kwargs, priority=priority, refresh=False)
        report = {"pid": os.getpid(), "success_count": outcome["success_count"],
                  "error_list": [(k, str(e)) for k, e in outcome["error_list"]]}
    except BaseException as exc:  # report, never hang the parent
        report = {"pid": os.getpid(), "fatal": f"{type(exc).__name__}: {exc}"}
    try:
        queue.put(report)
        queue.close()
        queue.join_thread()  # flush before the hard exit
    except BaseException:
        code = 3  # the report did not get out: the parent treats this worker as dead
    finally:
        os._exit(code)


def _as_tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)
