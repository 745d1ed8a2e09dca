"""populate(): find pending keys (one anti-join), run make() per key, coordinate workers."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
import traceback
from typing import Any

import numpy as np

from .condition import AndList, Not
from .errors import DataJointError, DuplicateError
from .jobs import Heartbeat, Job

logger = logging.getLogger("joinflow")


def _same(a: Any, b: Any) -> bool:
    """Deep equality for make_fetch results (numpy-aware)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
        except TypeError:
            return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
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


class AutoPopulate:
    """Mixin of Imported and Computed tables: ``make()`` derives rows; ``populate()`` runs it."""

    _allow_insert = False

    # -- what is to be done ---------------------------------------------------------------------
    @property
    def key_source(self):
        """Default: the join of the primary-key parents (renamed foreign keys projected)."""
        from .table import FreeTable

        conn = self.connection
        parents = conn.dependencies.load().parents(self.full_table_name)
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
        missing = [k for k in source.primary_key if k not in self.heading.primary_key]
        if missing:
            raise DataJointError(
                f"The key source of {self.class_name} has primary-key attributes {missing} that the table lacks."
            )
        if restrictions:
            source = source.restrict(AndList(restrictions), semantic_check=False)
        return source.proj()

    def pending(self, *restrictions):
        """Keys of the key source not yet in the table: one anti-join."""
        return self._jobs_to_do(restrictions).restrict(Not(self.proj()), semantic_check=False)

    def progress(self, *restrictions, display: bool = False) -> tuple[int, int]:
        """(remaining, total) over the key source."""
        todo = self._jobs_to_do(restrictions)
        total = len(todo)
        remaining = len(todo.restrict(Not(self.proj()), semantic_check=False))
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
                       make_kwargs=make_kwargs or {})
        with _terminate_on_sigterm():
            if reserve_jobs:
                return self._populate_reserved(restrictions, max_calls, priority, refresh, display_progress, options)
            keys = self.pending(*restrictions).keys(limit=max_calls)
            result = {"success_count": 0, "error_list": []}
            for key in self._progress_bar(keys, display_progress):
                self._populate1(key, None, result, **options)
            return result

    def _progress_bar(self, keys, display: bool, total: int | None = None):
        if not display:
            return keys
        from tqdm.auto import tqdm

        return tqdm(keys, desc=self.class_name, total=total)

    def _populate_reserved(self, restrictions, max_calls, priority, refresh, display_progress, options) -> dict:
        conn = self.connection
        jobs = Job(self).ensure()
        if refresh if refresh is not None else conn.config["jobs.auto_refresh"]:
            jobs.refresh(*restrictions, priority=priority)
        claim_filter = self._jobs_to_do(restrictions) if restrictions else None
        result = {"success_count": 0, "error_list": []}
        calls = 0
        bar = self._progress_bar(None, display_progress, total=len(jobs.pending)) if display_progress else None
        with Heartbeat(jobs) as beat:
            exhausted = False
            while not exhausted and (max_calls is None or calls < max_calls):
                batch = jobs.candidates(claim_filter, limit=20, priority=priority)
                if not batch:
                    break
                exhausted = True
                for key in batch:
                    if max_calls is not None and calls >= max_calls:
                        break
                    try:
                        if not jobs.reserve(key):
                            continue  # another worker holds it
                        exhausted = False
                        calls += 1
                        beat.watch(key)
                        self._populate1(key, jobs, result, **options)
                    except (KeyboardInterrupt, SystemExit):
                        jobs.release(key)  # only releases a lease this worker holds
                        raise
                    finally:
                        beat.watch(None)
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return result

    def _populate1(self, key: dict, jobs: Job | None, result: dict, *, suppress_errors: bool,
                   return_exception_objects: bool, make_kwargs: dict) -> None:
        conn = self.connection
        cls = type(self)
        start = time.time()
        tripartite = all(hasattr(self, m) for m in ("make_fetch", "make_compute", "make_insert"))
        try:
            if tripartite:
                fetched = self.make_fetch(dict(key), **make_kwargs)
                computed = self.make_compute(dict(key), *_as_tuple(fetched))
            conn.start_transaction()
            try:
                if jobs is None and key in self:  # a reserved key was pending when claimed
                    conn.cancel_transaction()
                    if jobs is not None:
                        jobs.complete(key)
                    return
                cls._allow_insert = True
                try:
                    if tripartite:
                        again = self.make_fetch(dict(key), **make_kwargs)
                        if not _same(_as_tuple(fetched), _as_tuple(again)):
                            raise DataJointError(
                                "Referential integrity failed! The `make_fetch` data has changed since it was "
                                f"fetched for {key}; the result was not inserted. populate() again to recompute."
                            )
                        self.make_insert(dict(key), *_as_tuple(computed))
                    else:
                        self.make(dict(key), **make_kwargs)
                finally:
                    cls._allow_insert = False
                if jobs is not None:  # the job row goes in the same commit as the rows
                    jobs.complete(key, duration=time.time() - start)
            except BaseException:
                if conn.in_transaction:
                    conn.cancel_transaction()
                raise
            conn.commit_transaction()
        except DuplicateError as exc:
            if key in self:  # another worker finished it first (lease taken over): nothing lost, nothing doubled
                logger.info("%s: key %s was completed by another worker.", self.class_name, key)
                if jobs is not None:
                    jobs.complete(key)
                return
            self._record_error(key, jobs, exc, result, suppress_errors, return_exception_objects)
            return
        except (KeyboardInterrupt, SystemExit):
            if jobs is not None:
                jobs.release(key)
            raise
        except Exception as exc:
            self._record_error(key, jobs, exc, result, suppress_errors, return_exception_objects)
            return
        result["success_count"] += 1

    def _record_error(self, key, jobs, exc, result, suppress_errors, return_exception_objects) -> None:
        message = f"{type(exc).__name__}: {exc}"
        logger.error("%s: make failed for key %s: %s", self.class_name, key, message)
        if jobs is not None:
            jobs.error(key, message, traceback.format_exc())
        if not suppress_errors:
            raise exc
        result["error_list"].append((key, exc if return_exception_objects else message))

    def _populate_processes(self, restrictions, processes, suppress_errors, return_exception_objects, max_calls,
                            make_kwargs, priority, refresh) -> dict:
        """Run ``processes`` worker processes that claim keys through the job table."""
        conn = self.connection
        jobs = Job(self).ensure()
        if refresh if refresh is not None else conn.config["jobs.auto_refresh"]:
            jobs.refresh(*restrictions, priority=priority)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        per_worker = None if max_calls is None else -(-max_calls // processes)
        workers = [
            ctx.Process(target=_worker_main, args=(self, restrictions, queue, suppress_errors, per_worker,
                                                   make_kwargs, priority))
            for _ in range(processes)
        ]
        for w in workers:
            w.start()
        result = {"success_count": 0, "error_list": []}
        failures = []
        outcomes = []
        while len(outcomes) < len(workers):
            try:
                outcomes.append(queue.get(timeout=1))
            except queue_module.Empty:
                if not any(w.is_alive() for w in workers):
                    try:
                        outcomes.append(queue.get(timeout=1))
                    except queue_module.Empty:
                        failures.append("a worker process died without reporting")
                        break
        for outcome in outcomes:
            if "fatal" in outcome:
                failures.append(outcome["fatal"])
            else:
                result["success_count"] += outcome["success_count"]
                result["error_list"] += outcome["error_list"]
        for w in workers:
            w.join()
        if failures and not suppress_errors:
            raise DataJointError(f"{len(failures)} worker(s) stopped on an error: {failures[0]}")
        return result


def _worker_main(table, restrictions, queue, suppress_errors, max_calls, make_kwargs, priority) -> None:
    conn = table.connection
    try:
        conn.engine.dispose(close=False)  # never share the parent's sockets
        conn.connect()
        outcome = table.populate(*restrictions, suppress_errors=suppress_errors, reserve_jobs=True,
                                 max_calls=max_calls, make_kwargs=make_kwargs, priority=priority, refresh=False)
        queue.put({"success_count": outcome["success_count"],
                   "error_list": [(k, str(e)) for k, e in outcome["error_list"]]})
    except BaseException as exc:  # report, never hang the parent
        queue.put({"fatal": f"{type(exc).__name__}: {exc}"})
    finally:
        queue.close()
        queue.join_thread()  # flush before the hard exit
        os._exit(0)


def _as_tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)
