#!/usr/bin/env python
"""Soak: leases under SIGKILL, SIGSTOP/SIGCONT past the lease, and a client clock step.

N worker processes run populate(reserve_jobs=True) on keys whose make lasts longer than
``jobs.lease_timeout`` (most of them, by up to 2.5 times).  While they work, a supervisor
SIGKILLs workers (and starts new ones), stops workers with SIGSTOP for three leases and lets
them go on with SIGCONT, and one worker's clock steps ahead by hours mid-run (``time.time``
and ``datetime.datetime`` shifted inside that process: no root clock change).  Every make
logs when it starts and ends, and every commit logs the keys it committed, to a shared file.

Figures (the script stops with an AssertionError if a key is lost or committed twice):

- ``keys_committed_twice``: keys whose rows two commits wrote (must be 0)
- ``keys_made_twice``: keys whose make() ran to its end in two workers, neither of them killed
  (a key taken over from a stopped or late worker; the fencing rolls the second back, but the
  work was done twice)
- ``keys_lost``: keys not made at the end, or left reserved/errored (must be 0)
- ``recomputed_after_kill``: keys made again because their worker was SIGKILLed mid-make
  (expected: the kill threw that make away)
- ``rolled_back_makes``: makes that ran to their end and were rolled back (the fencing found the
  lease taken over, or the insert found the key made by another worker)

Usage:  python benchmarks/soak_leases.py [--backend sqlite] [--workers 3] [--keys 40] [--lease 1.0]
            [--seconds 150] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import multiprocessing
import os
import random
import signal
import time

from soak_common import report, scratch_schema

import joinflow as dj  # noqa: E402

STEP = 3 * 3600.0  # the clock step of one worker: three hours ahead


def declare(schema, log: str, lease: float):
    @schema
    class Unit(dj.Manual):
        definition = """
        unit : int32
        ---
        seconds : float64   # how long its make takes
        """

    @schema
    class Slow(dj.Computed):
        definition = """
        -> Unit
        ---
        pid : int32
        """

        def make(self, key):
            write(log, "start", key["unit"])
            time.sleep((Unit & key).fetch1("seconds"))
            write(log, "end", key["unit"])  # computed (before the insert, which may find the key made)
            _made.append(key["unit"])
            self.insert1(dict(key, pid=os.getpid()))

    return Unit, Slow


_made: list[int] = []  # keys made in the open transaction of this worker
_log: list[str] = []


def write(log: str, what: str, unit: int) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{what} {unit} {os.getpid()}\n".encode())
    os.close(fd)


def step_clock(seconds: float) -> None:
    """Shift this process's wall clock as Python sees it (time.time, datetime.now/utcnow)."""
    real_time, real_datetime = time.time, datetime.datetime

    class Stepped(real_datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime.now(tz) + datetime.timedelta(seconds=seconds)

        @classmethod
        def utcnow(cls):
            return real_datetime.utcnow() + datetime.timedelta(seconds=seconds)

        @classmethod
        def today(cls):
            return cls.now()

    time.time = lambda: real_time() + seconds
    datetime.datetime = Stepped
    write(_log[0], "step", -1)


def worker(table, log: str, clock_step_after: float | None) -> None:
    from joinflow.connection import Connection

    _log.append(log)
    conn = table.connection
    conn.engine.dispose(close=False)  # never talk over the parent's socket
    conn.connect()
    commit, cancel = Connection.commit_transaction, Connection.cancel_transaction

    def commit_logged(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        for unit in _made:
            write(log, "commit", unit)
        _made.clear()

    def cancel_logged(self, *args, **kwargs):
        cancel(self, *args, **kwargs)
        for unit in _made:
            write(log, "rollback", unit)
        _made.clear()

    Connection.commit_transaction, Connection.cancel_transaction = commit_logged, cancel_logged
    if clock_step_after is not None:
        import threading

        threading.Timer(clock_step_after, step_clock, args=(STEP,)).start()
    lease = float(conn.config["jobs.lease_timeout"])
    try:
        while True:
            table.populate(reserve_jobs=True, suppress_errors=True, refresh=False)
            if not len(table.jobs.pending) and not len(table.jobs.reserved):
                break
            time.sleep(lease / 2)  # keys of stopped workers may come back
    finally:
        os._exit(0)


def run(schema, tmp_path, *, workers: int, keys: int, lease: float, seconds: float, seed: int,
        make: tuple[float, float] = (0.3, 2.5), faults: bool = True) -> dict:
    rng = random.Random(seed)
    conn = schema.connection
    conn.config["jobs.lease_timeout"] = lease
    log = str(tmp_path / "makes.log")
    Unit, Slow = declare(schema, log, lease)
    # most makes outlast the lease, some by 2.5 times
    Unit.insert([{"unit": i, "seconds": round(lease * rng.uniform(*make), 3)} for i in range(keys)])
    Slow.jobs.refresh()
    ctx = multiprocessing.get_context("fork")
    procs: dict[int, multiprocessing.Process] = {}
    killed: set[int] = set()
    figures = collections.Counter()

    def start(clock_step_after=None):
        p = ctx.Process(target=worker, args=(Slow, log, clock_step_after))
        p.start()
        procs[p.pid] = p
        return p

    started = time.monotonic()
    # this worker's clock jumps 3 h ahead after two leases
    stepped = start(clock_step_after=2 * lease if faults else None)
    figures["clock_steps"] = int(faults)
    for _ in range(workers - 1):
        start()
    deadline = started + seconds
    next_fault = started + 1.5 * lease
    stopped: dict[int, float] = {}  # pid -> when to SIGCONT
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = time.monotonic()
        for pid, until in list(stopped.items()):
            if now >= until:
                os.kill(pid, signal.SIGCONT)
                del stopped[pid]
        alive = [p for p in procs.values() if p.is_alive()]
        done = len(Slow()) == keys
        if done and not stopped:
            break
        if not done and len([p for p in alive if p.pid not in stopped]) < workers:
            start()  # keep N workers at work (one was killed, or ran out of keys while others held them)
        if faults and now >= next_fault and not done:
            candidates = [p for p in alive if p.pid not in stopped and p.pid not in killed]
            if candidates:
                victim = rng.choice(candidates)
                if rng.random() < 0.5 and victim is not stepped:  # the stepped clock runs to the end
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.add(victim.pid)
                    figures["sigkills"] += 1
                else:
                    os.kill(victim.pid, signal.SIGSTOP)
                    stopped[victim.pid] = now + 3 * lease  # stopped three leases long
                    figures["sigstops"] += 1
            next_fault = now + rng.uniform(1.0, 2.5) * lease
    for pid in stopped:
        os.kill(pid, signal.SIGCONT)
    for p in procs.values():
        p.join(timeout=60)
        if p.exitcode is None:  # pragma: no cover - never leave a worker behind
            os.kill(p.pid, signal.SIGKILL)
            p.join()
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["worker_processes"] = len(procs)
    figures["clock_stepped_worker_alive_at_end"] = int(stepped.pid not in killed)
    # mop up what the run left (keys whose workers were killed near the end)
    time.sleep(lease + 0.2)
    Slow.populate(reserve_jobs=True, suppress_errors=True)
    if os.environ.get("JF_SOAK_KEEP_LOG"):  # for a look at the events of one run
        import shutil

        shutil.copy(log, os.environ["JF_SOAK_KEEP_LOG"])
    events = collections.defaultdict(list)
    after_step = False
    for line in open(log).read().split("\n"):
        if line:
            what, unit, pid = line.split()
            if what == "step":
                after_step = True
                continue
            events[int(unit)].append((what, int(pid)))
            if after_step and what == "start" and int(pid) == stepped.pid:
                figures["makes_by_the_stepped_worker_after_its_step"] += 1
    committed_twice = made_twice = recomputed = 0
    for unit, evs in events.items():
        commits = sum(1 for what, _ in evs if what == "commit")
        ends = [pid for what, pid in evs if what == "end" and pid not in killed]
        starts_killed = [pid for what, pid in evs if what == "start" and pid in killed]
        figures["rolled_back_makes"] += sum(1 for what, _ in evs if what == "rollback")
        committed_twice += commits > 1
        made_twice += len(ends) > 1
        recomputed += bool(starts_killed) and sum(1 for what, _ in evs if what == "start") > 1
    progress = Slow.jobs.progress()
    made = {k["unit"] for k in Slow.keys()}
    lost = keys - len(made) + progress["reserved"] + progress["error"] + progress["pending"]
    figures.update(keys=keys, workers=workers, lease=lease, make_calls=sum(
        1 for evs in events.values() for what, _ in evs if what == "start"),
        keys_committed_twice=committed_twice, keys_made_twice=made_twice, keys_lost=lost,
        recomputed_after_kill=recomputed)
    assert committed_twice == 0 and lost == 0, dict(figures)
    return dict(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql", "mysql"])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--lease", type=float, default=1.0, help="jobs.lease_timeout in seconds")
    parser.add_argument("--seconds", type=float, default=150, help="stop injecting faults after this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--make", type=float, nargs=2, default=(0.3, 2.5), metavar=("LOW", "HIGH"),
                        help="make lasts uniform(LOW, HIGH) leases")
    parser.add_argument("--no-faults", action="store_true", help="no kills, stops or clock step: slow makes only")
    args = parser.parse_args()
    with scratch_schema(args.backend) as (schema, tmp_path):
        figures = run(schema, tmp_path, workers=args.workers, keys=args.keys, lease=args.lease,
                      seconds=args.seconds, seed=args.seed, make=tuple(args.make), faults=not args.no_faults)
    report(f"soak_leases[{args.backend}] OK", figures)


if __name__ == "__main__":
    main()
