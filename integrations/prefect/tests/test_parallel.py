"""Parallel make() calls in task threads: each thread has its own session, so makes overlap."""

from __future__ import annotations

import importlib
import textwrap
import threading
import uuid

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_joinflow import joinflow_flow
from prefect_joinflow.threads import is_per_thread, per_thread, sessions

MODULE = textwrap.dedent('''
    import threading, time
    import joinflow as dj

    config = dj.config.copy()
    config["safemode"] = False
    connection = dj.Connection(url={url!r}, config=config)
    schema = dj.Schema({schema!r}, connection=connection)
    together = threading.Condition()
    inside = [0]


    def meet():
        """Wait (bounded) until another make() is inside too: with makes serialized, nobody comes."""
        with together:
            inside[0] += 1
            together.notify_all()
            together.wait_for(lambda: inside[0] >= 2, timeout=5)


    @schema
    class Source(dj.Manual):
        definition = """
        k : int32
        """


    @schema
    class Slow(dj.Computed):  # a plain make(): its whole body runs in the transaction
        definition = """
        -> Source
        ---
        thread : int64
        started : float64
        ended : float64
        """

        def make(self, key):
            started = time.time()
            meet()
            self.insert1(dict(key, thread=threading.get_ident(), started=started, ended=time.time()))


    @schema
    class SlowCompute(dj.Computed):  # make_fetch/make_compute run outside the transaction
        definition = """
        -> Source
        ---
        thread : int64
        started : float64
        ended : float64
        """

        def make_fetch(self, key):
            return (key["k"],)

        def make_compute(self, key, k):
            started = time.time()
            meet()
            return (threading.get_ident(), started, time.time())

        def make_insert(self, key, thread, started, ended):
            self.insert1(dict(key, thread=thread, started=started, ended=ended))
''')


@pytest.fixture
def slow_module(tmp_path, db_url, schema_name, monkeypatch):
    name = f"jfp_slow_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODULE.format(url=db_url, schema=schema_name))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    module.connection.close()


def test_makes_in_task_threads_overlap(slow_module, backend):
    """Four keys, one per task, four threads: at least two make()s run at the same time, in
    different threads (each on its own session).  On SQLite a transaction holds the write lock,
    so there the overlapping part is make_compute (outside the transaction)."""
    m = slow_module
    table = m.SlowCompute if backend == "sqlite" else m.Slow
    m.Source.insert([{"k": k} for k in range(4)])
    flow = joinflow_flow([m.Source, table], batch_size=1, task_runner=ThreadPoolTaskRunner(max_workers=4))
    state = flow(return_state=True)
    assert state.is_completed(), state.message
    rows = table.to_dicts(order_by="started")
    assert [r["k"] for r in sorted(rows, key=lambda r: r["k"])] == [0, 1, 2, 3]  # every key once
    assert len({r["thread"] for r in rows}) >= 2
    overlapping = [(a["k"], b["k"]) for i, a in enumerate(rows) for b in rows[i + 1:]
                   if b["started"] < a["ended"] and a["thread"] != b["thread"]]
    assert overlapping, rows


def test_per_thread_gives_each_thread_its_own_session(slow_module):
    m = slow_module
    conn = m.connection
    assert per_thread(conn) and per_thread(conn)  # idempotent
    m.Source.insert1({"k": 1})
    seen = {}
    both_alive = threading.Barrier(2, timeout=30)  # a finished thread's identity can be reused by the next

    def use(tag):
        seen[tag] = (len(m.Source()), object.__getattribute__(conn, "__dict__")["_jf_local"].connection)
        both_alive.wait()

    threads = [threading.Thread(target=use, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[0][0] == seen[1][0] == 1  # the same database, seen through two other sessions
    assert seen[0][1] is not seen[1][1] and seen[0][1] is not conn
    assert sessions(conn) == 2
    assert len(m.Source()) == 1  # this (the owning) thread still uses the original
    conn.close()
    assert sessions(conn) == 0


def test_in_memory_sqlite_stays_behind_the_lock():
    import joinflow as dj

    conn = dj.Connection(url="sqlite://", config=dj.config.copy())
    try:
        assert per_thread(conn) is False and not is_per_thread(conn)
    finally:
        conn.close()


def test_tasks_share_a_bounded_pool_of_sessions(slow_module):
    """A task takes a pooled session for its duration: many task threads, at most `limit` sessions."""
    from prefect_joinflow.threads import session

    m = slow_module
    conn = m.connection
    m.Source.insert1({"k": 1})
    assert per_thread(conn, limit=2)
    used, lock, inside, most = set(), threading.Lock(), [0], [0]

    def task():
        with session(conn):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            used.add(id(object.__getattribute__(conn, "__dict__")["_jf_local"].connection))
            assert len(m.Source()) == 1
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=task) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] <= 2 and len(used) <= 2 and sessions(conn) <= 2  # pooled, reused, bounded
    conn.close()
    assert sessions(conn) == 0
