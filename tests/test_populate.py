"""populate(), job tables with leases, workers: on every backend."""

import multiprocessing
import os
import signal
import time

import pytest

import joinflow as dj
from joinflow import errors


def declare_pipeline(schema, calls_file=None, fail_on=(), slow_key=None):
    @schema
    class Source(dj.Manual):
        definition = """
        source_id : int32
        ---
        value : float64
        """

    @schema
    class Square(dj.Computed):
        definition = """
        -> Source
        ---
        squared : float64
        """

        class Digit(dj.Part):
            definition = """
            -> master
            position : int16
            ---
            digit : int16
            """

        def make(self, key):
            if calls_file:
                with open(calls_file, "a") as f:
                    f.write(f"{key['source_id']}\n")
            value = (Source & key).fetch1("value")
            self.insert1(dict(key, squared=value * value))
            if slow_key is not None and slow_key in (key["source_id"], "all") and os.environ.get("JF_TEST_SLOW"):
                time.sleep(60)  # killed here, master row inserted, parts not yet
            if key["source_id"] in fail_on:
                raise ValueError(f"cannot square {key['source_id']}")
            digits = str(int(value))
            self.Digit.insert([dict(key, position=i, digit=int(d)) for i, d in enumerate(digits)])

    return Source, Square


def test_populate_direct_mode(schema):
    Source, Square = declare_pipeline(schema, fail_on={3})
    Source.insert([{"source_id": i, "value": float(i + 10)} for i in range(6)])
    assert Square.progress() == (6, 6)
    with pytest.raises(ValueError, match="cannot square 3"):
        Square.populate()  # default: stop at the first error
    assert 3 not in [k["source_id"] for k in Square.keys()]
    result = Square.populate(suppress_errors=True)
    assert [k for k, _ in result["error_list"]] == [{"source_id": 3}]
    assert "cannot square 3" in result["error_list"][0][1]
    assert len(Square()) == 5 and len(Square.Digit()) == 10  # master and parts together
    assert len(Square.Digit & {"source_id": 3}) == 0  # the failed key left nothing behind
    assert Square.progress() == (1, 6)
    objects = Square.populate(suppress_errors=True, return_exception_objects=True)
    assert isinstance(objects["error_list"][0][1], ValueError)


def test_populate_restrictions_and_max_calls(schema):
    Source, Square = declare_pipeline(schema)
    Source.insert([{"source_id": i, "value": float(i)} for i in range(10)])
    assert Square.populate("source_id < 3")["success_count"] == 3
    assert Square.populate(max_calls=2)["success_count"] == 2
    assert Square.progress() == (5, 10)
    assert Square.progress("source_id >= 8") == (2, 2)
    with pytest.raises(errors.DataJointError, match="restricted table"):
        (Square & "source_id = 1").populate()


def test_direct_insert_guard(schema):
    Source, Square = declare_pipeline(schema)
    Source.insert1({"source_id": 1, "value": 2.0})
    with pytest.raises(errors.DataJointError, match="allow_direct_insert"):
        Square.insert1({"source_id": 1, "squared": 4.0})
    Square.insert1({"source_id": 1, "squared": 4.0}, allow_direct_insert=True)
    assert len(Square()) == 1


def test_reserved_populate_records_errors_and_retries(schema):
    failing = {2}
    Source, Square = declare_pipeline(schema, fail_on=failing)
    Source.insert([{"source_id": i, "value": float(i + 10)} for i in range(5)])
    result = Square.populate(reserve_jobs=True, suppress_errors=True)
    assert result["success_count"] == 4
    jobs = Square.jobs
    assert jobs.table_name == "~~square"
    assert jobs.progress()["error"] == 1 and jobs.progress()["pending"] == 0
    row = jobs.errors.fetch1()
    assert row["source_id"] == 2 and "cannot square 2" in row["error_message"]
    assert b"Traceback" in row["error_stack"] and b"ValueError" in row["error_stack"]
    # an errored key is not retried until its job row is cleared
    assert Square.populate(reserve_jobs=True, suppress_errors=True)["success_count"] == 0
    failing.clear()  # the cause is fixed; clear the error and run again
    (jobs & {"source_id": 2}).delete()
    assert Square.populate(reserve_jobs=True)["success_count"] == 1
    assert len(Square()) == 5 and jobs.progress()["total"] == 0


def test_restricted_reserved_populate_takes_only_matching_keys(schema):
    Source, Square = declare_pipeline(schema)
    Source.insert([{"source_id": i, "value": float(i)} for i in range(30)])
    Square.jobs.refresh()  # every key pending in the queue
    result = Square.populate("source_id in (4, 5, 6)", reserve_jobs=True, refresh=False)
    assert result["success_count"] == 3
    assert sorted(k["source_id"] for k in Square.keys()) == [4, 5, 6]
    assert Square.jobs.progress()["pending"] == 27


def test_tripartite_make_detects_upstream_change(schema):
    @schema
    class Reading(dj.Manual):
        definition = """
        reading_id : int32
        ---
        level : float64
        """

    calls = []

    @schema
    class Doubled(dj.Computed):
        definition = """
        -> Reading
        ---
        doubled : float64
        """

        def make_fetch(self, key):
            return (Reading & key).fetch1("level")

        def make_compute(self, key, level):
            calls.append(key["reading_id"])
            if key["reading_id"] == 2:  # someone changes the input while we compute
                Reading.update1({"reading_id": 2, "level": -1.0})
            return level * 2

        def make_insert(self, key, doubled):
            self.insert1(dict(key, doubled=doubled))

    Reading.insert([{"reading_id": i, "level": float(i)} for i in range(4)])
    result = Doubled.populate(suppress_errors=True)
    assert result["success_count"] == 3
    assert "Referential integrity failed" in result["error_list"][0][1]
    assert len(Doubled & {"reading_id": 2}) == 0
    assert Doubled.populate()["success_count"] == 1
    assert (Doubled & {"reading_id": 2}).fetch1("doubled") == -2.0


def test_concurrent_workers_compute_each_key_exactly_once(schema, tmp_path):
    calls = tmp_path / "calls.txt"
    Source, Square = declare_pipeline(schema, calls_file=str(calls))
    n = 2000
    Source.insert([{"source_id": i, "value": float(i)} for i in range(n)])
    result = Square.populate(reserve_jobs=True, processes=4)
    made = [int(x) for x in calls.read_text().split()]
    assert result["success_count"] == n
    assert len(made) == n and len(set(made)) == n  # none lost, none duplicated
    assert len(Square()) == n and Square.progress() == (0, n)
    assert Square.jobs.progress()["total"] == 0


def _slow_worker(schema, slow_key):
    os.environ["JF_TEST_SLOW"] = "1"
    schema.connection.engine.dispose(close=False)  # never talk over the parent's socket
    schema.connection.connect()
    _, Square = declare_pipeline(schema, slow_key=slow_key)
    Square.populate(reserve_jobs=True, suppress_errors=True)


def test_killed_worker_loses_its_lease(schema):
    Source, Square = declare_pipeline(schema, slow_key="all")
    conn = Square.connection
    conn.config["jobs.lease_timeout"] = 1.5
    Source.insert([{"source_id": i, "value": float(i + 10)} for i in range(3)])
    Square.jobs.refresh()
    worker = multiprocessing.get_context("fork").Process(target=_slow_worker, args=(schema, "all"))
    worker.start()
    deadline = time.time() + 30
    while time.time() < deadline and not len(Square.jobs.reserved):
        time.sleep(0.05)
    assert len(Square.jobs.reserved) == 1  # the worker holds a key and sleeps inside its make
    time.sleep(0.3)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    time.sleep(1.6)  # the lease runs out: no heartbeat any more
    result = Square.populate(reserve_jobs=True)
    assert {k["source_id"] for k in Square.keys()} == {0, 1, 2}
    assert result["success_count"] >= 1
    assert len(Square.Digit()) == 6  # complete: every master with its 2 parts, no partial rows
    assert Square.jobs.progress()["total"] == 0


def test_job_api(schema):
    Source, Square = declare_pipeline(schema)
    Source.insert([{"source_id": i, "value": float(i)} for i in range(4)])
    jobs = Square.jobs
    assert jobs.refresh()["added"] == 4
    assert jobs.refresh()["added"] == 0  # one statement, idempotent
    assert jobs.reserve({"source_id": 1}) is True
    assert jobs.reserve({"source_id": 1}) is False  # held
    jobs.ignore({"source_id": 2})
    jobs.error({"source_id": 3}, "x" * 5000, "stack")
    progress = jobs.progress()
    assert (progress["pending"], progress["reserved"], progress["ignore"], progress["error"]) == (1, 1, 1, 1)
    assert (jobs & {"source_id": 3}).fetch1("error_message").endswith("...truncated")
    jobs.complete({"source_id": 1})
    assert len(jobs.reserved) == 0
    result = Square.populate(reserve_jobs=True)
    # key 1's job row is gone but its row was never made: refresh queues it again;
    # the ignored and the errored keys stay out
    assert result["success_count"] == 2
    assert {k["source_id"] for k in Square.keys()} == {0, 1}


def _terminated_worker(schema, slow_key):
    os.environ["JF_TEST_SLOW"] = "1"
    schema.connection.engine.dispose(close=False)  # never talk over the parent's socket
    schema.connection.connect()
    _, Square = declare_pipeline(schema, slow_key=slow_key)
    try:
        Square.populate(reserve_jobs=True, max_calls=1)
    except SystemExit:
        os._exit(3)  # populate re-raised SystemExit after releasing the key
    os._exit(0)


def test_sigterm_releases_the_lease_and_leaves_nothing(schema):
    Source, Square = declare_pipeline(schema, slow_key="all")
    Source.insert([{"source_id": i, "value": float(i + 10)} for i in range(2)])
    Square.jobs.refresh()
    worker = multiprocessing.get_context("fork").Process(target=_terminated_worker, args=(schema, "all"))
    worker.start()
    deadline = time.time() + 30
    while time.time() < deadline and not len(Square.jobs.reserved):
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(worker.pid, signal.SIGTERM)
    worker.join(timeout=30)
    assert worker.exitcode == 3
    assert len(Square.jobs.reserved) == 0 and len(Square.jobs.pending) == 2  # handed back at once
    assert len(Square()) == 0  # the master row inserted before the signal was rolled back
    assert Square.populate(reserve_jobs=True)["success_count"] == 2
