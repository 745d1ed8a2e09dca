"""Crash safety: SIGKILL a worker at chosen points and at random moments, then check that
nothing partial is left and that every key is computed once the leases expire.

Kill points (the worker kills itself with SIGKILL when it reaches the point the
``JF_FAULT=point:n`` environment variable names, the n-th time):

- ``before_reserve``  just before the worker claims a key
- ``during_make``     inside make(), after the inputs are fetched
- ``between_inserts`` inside make(), after the master row, before the part rows
- ``during_upload``   while an object is written to the store (before its final rename)
- ``before_commit``   all rows and the job update sent, COMMIT not yet
- ``after_commit``    COMMIT sent, before the worker hears back
- ``random``          no self-kill: the parent SIGKILLs the worker at a random moment

The soak variant (50 and more kills): ``python benchmarks/soak_crash.py --kills 50``.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import signal
import time
import uuid

import numpy as np
import pytest

import joinflow as dj
from joinflow import storage
from joinflow.connection import Connection
from joinflow import jobs as jobs_module
from joinflow.jobs import Job

POINTS = ["before_reserve", "during_make", "between_inserts", "during_upload", "before_commit", "after_commit",
          "random"]
_hits: collections.Counter = collections.Counter()


def will_fire(point: str) -> bool:
    """Count a visit of ``point``; True when JF_FAULT says the process dies here."""
    name, _, count = os.environ.get("JF_FAULT", "").partition(":")
    if name != point:
        return False
    _hits[point] += 1
    return _hits[point] >= int(count or 1)


def fault(point: str) -> None:
    """SIGKILL this process if JF_FAULT names ``point`` and its count is reached."""
    if will_fire(point):
        os.kill(os.getpid(), signal.SIGKILL)


def declare_crash_pipeline(schema, calls_file: str, make_sleep: float = 0.0):
    @schema
    class Reading(dj.Manual):
        definition = """
        reading_id : int32
        ---
        level : float64
        """

    @schema
    class Analysis(dj.Computed):
        definition = """
        -> Reading
        ---
        total : float64
        trace : <blob@crashstore>
        """

        class Sample(dj.Part):
            definition = """
            -> master
            sample : int16
            ---
            amount : float64
            """

        def make(self, key):
            fd = os.open(calls_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"{key['reading_id']}\n".encode())
            os.close(fd)
            level = (Reading & key).fetch1("level")
            fault("during_make")
            if make_sleep:
                time.sleep(random.uniform(0, make_sleep))
            n = 1 + key["reading_id"] % 4
            trace = np.arange(n, dtype=float) * level + key["reading_id"]  # distinct content per key
            self.insert1(dict(key, total=level * n, trace=trace))
            fault("between_inserts")
            self.Sample.insert([dict(key, sample=i, amount=level) for i in range(n)])

    return Reading, Analysis


def _worker(table, fault_spec: str) -> None:
    """A populate worker process (forked) that dies at the requested point."""
    if fault_spec:
        os.environ["JF_FAULT"] = fault_spec
    conn = table.connection
    conn.engine.dispose(close=False)  # never talk over the parent's socket
    conn.connect()
    claims_cls = getattr(jobs_module, "Claims", None)  # batch claims (newer populate) or Job.reserve
    owner, method = (claims_cls, "claim") if claims_cls is not None else (Job, "reserve")
    reserve, commit, put = getattr(owner, method), Connection.commit_transaction, storage.Store.put

    def reserve_hook(self, *args, **kwargs):
        fault("before_reserve")
        return reserve(self, *args, **kwargs)

    def commit_hook(self, *args, **kwargs):
        fault("before_commit")
        commit(self, *args, **kwargs)
        fault("after_commit")

    def put_hook(self, path, data):
        if will_fire("during_upload"):  # die with half of the object in a temporary file beside it
            self.fs.pipe_file(f"{self.full_path(path)}.tmp-{uuid.uuid4().hex}", data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        put(self, path, data)

    setattr(owner, method, reserve_hook)
    Connection.commit_transaction, storage.Store.put = commit_hook, put_hook
    try:
        table.populate(reserve_jobs=True, suppress_errors=True)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def store_config(cfg, root: str) -> None:
    stores = dict(cfg["stores"] or {})
    stores["crashstore"] = {"protocol": "file", "location": root}
    cfg["stores"] = stores


def store_files(root: str) -> set[str]:
    found = set()
    for folder, _, files in os.walk(root):
        for name in files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return {f for f in found if not f.startswith("_joinflow/")}  # objects, not the list of databases


def run_crashes(schema, tmp_path, *, kills: int, keys: int, rng: random.Random, make_sleep: float = 0.02) -> dict:
    """Kill ``kills`` workers, each at a point, then finish and check.  Returns the figures."""
    conn = schema.connection
    root = str(tmp_path / "objects")
    store_config(conn.config, root)
    conn.config["jobs.lease_timeout"] = 0.6
    calls = str(tmp_path / "calls.txt")
    Reading, Analysis = declare_crash_pipeline(schema, calls, make_sleep)
    Reading.insert([{"reading_id": i, "level": float(i) + 0.5} for i in range(keys)])
    Analysis.jobs.refresh()
    ctx = multiprocessing.get_context("fork")
    killed = collections.Counter()
    workers = []  # (fault spec, exit code, keys made so far): shown when an injected kill did not happen
    points = [POINTS[i % len(POINTS)] for i in range(kills)]
    rng.shuffle(points)
    lease = float(conn.config["jobs.lease_timeout"])
    for point in points:
        if len(Analysis()) == keys:  # a worker that outran its kill made every key: give the next one work
            Reading.insert([{"reading_id": i, "level": float(i) + 0.5} for i in range(keys, keys + 8)])
            Analysis.jobs.refresh()
            keys += 8
        if not len(Analysis.jobs.pending):  # a killed worker holds the rest: its leases must expire first
            time.sleep(lease + 0.1)
        spec = "" if point == "random" else f"{point}:{rng.randint(1, 2)}"
        worker = ctx.Process(target=_worker, args=(Analysis, spec))
        worker.start()
        if point == "random":
            time.sleep(rng.uniform(0.05, 0.3))
            os.kill(worker.pid, signal.SIGKILL)
        worker.join(timeout=60)
        if worker.exitcode is None:  # pragma: no cover - never leave a worker behind
            os.kill(worker.pid, signal.SIGKILL)
            worker.join()
        if worker.exitcode == -signal.SIGKILL:
            killed[point] += 1
        workers.append((spec or "random", worker.exitcode, len(Analysis())))
    # the dead workers' leases expire; a normal worker takes the keys over without any refresh (on a
    # loaded machine a lease may still run when it first looks: it looks again, as a scheduler would)
    time.sleep(lease + 0.2)
    result = {"success_count": 0, "error_list": []}
    deadline = time.monotonic() + 20 * lease
    while True:
        more = Analysis.populate(reserve_jobs=True, suppress_errors=True, refresh=False)
        result["success_count"] += more["success_count"]
        result["error_list"] += more["error_list"]
        if not len(Analysis.jobs.reserved) or time.monotonic() > deadline:
            break
        time.sleep(lease / 2)
    Analysis.populate(reserve_jobs=True, suppress_errors=True)  # keys whose job row was lost with a kill
    made = collections.Counter(int(x) for x in open(calls).read().split()) if os.path.exists(calls) else {}
    figures = {"kills": sum(killed.values()), "by_point": dict(killed), "keys": keys,
               "final_success": result["success_count"], "make_calls": sum(made.values()),
               "recomputed_keys": sum(1 for n in made.values() if n > 1), "workers": workers}
    # every key computed and committed once, with all its parts and its object
    assert result["error_list"] == [], result["error_list"][:3]
    assert sorted(k["reading_id"] for k in Analysis.keys()) == list(range(keys)), figures
    samples = collections.Counter(Analysis.Sample.to_arrays("reading_id"))
    assert samples == {i: 1 + i % 4 for i in range(keys)}, "a master without all of its parts"
    assert len(Analysis.Sample()) == sum(1 + i % 4 for i in range(keys))
    progress = Analysis.jobs.progress()
    assert progress["reserved"] == 0 and progress["pending"] == 0 and progress["error"] == 0, progress
    referenced = {meta["path"] for meta in _stored_meta(Analysis)}
    files = store_files(root)
    assert referenced <= files  # no row refers to a missing object
    figures["unreferenced_before_gc"] = len(files - referenced)
    from joinflow.gc import GarbageCollector

    GarbageCollector(schema, store="crashstore", grace_period=0).collect(dry_run=False)
    files = store_files(root)
    assert referenced <= files  # gc deleted no live object
    leftovers = files - referenced
    figures["half_written_temp_files_after_gc"] = sum(1 for f in leftovers if ".tmp-" in f)
    assert all(".tmp-" in f for f in leftovers), f"orphaned objects after gc: {sorted(leftovers)[:5]}"
    for row in Analysis.to_dicts():  # and every row still fetches its object
        i = row["reading_id"]
        assert np.array_equal(row["trace"], np.arange(1 + i % 4, dtype=float) * (i + 0.5) + i)
    return figures


def _stored_meta(table):
    """The stored metadata of the ``trace`` objects (read without decoding)."""
    import json

    tc = table()._table_clause(["trace"])
    rows = table.connection.execute(tc.select()).fetchall()
    return [json.loads(r[0]) if isinstance(r[0], (str, bytes)) else r[0] for r in rows]


def test_sigkill_at_every_point_loses_nothing(schema, tmp_path):
    figures = run_crashes(schema, tmp_path, kills=len(POINTS), keys=24, rng=random.Random(10))
    assert set(figures["by_point"]) >= set(POINTS) - {"random"}, figures  # every injected kill happened
