"""`joinflow copy` brings each copied Computed/Imported table's job queue along: errors stay
visible with their messages, ignored keys stay ignored; reservations of source workers do not."""

from __future__ import annotations

import pytest

import joinflow as dj
from joinflow import testing
from joinflow.copy import CopyError, copy_schemas

from lab import declare_pipeline


@pytest.fixture
def source(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.db'}"
    cfg = dj.config.copy()
    cfg["safemode"] = False
    conn = dj.Connection(url=url, config=cfg)
    schema = dj.Schema("pipe", connection=conn)
    Source, Square = declare_pipeline(schema, fail_on=(3,))
    Source.insert([{"source_id": i, "value": float(i + 1)} for i in range(8)])
    Square.populate({"source_id": 0}, reserve_jobs=True)
    Square.populate({"source_id": 3}, reserve_jobs=True, suppress_errors=True)  # an error row with its traceback
    Square.jobs.refresh()
    Square.jobs.ignore({"source_id": 5})
    Square.jobs.reserve({"source_id": 6})  # a source worker's lease: not copied
    yield {"url": url, "conn": conn, "Square": Square}
    conn.close()


def statuses(conn, full_name: str) -> dict[int, str]:
    rows = conn.query(f"SELECT source_id, status FROM {full_name}")
    return {int(k): str(s) for k, s in rows}


def test_copy_brings_the_job_queue_without_leases(source, backend, tmp_path):
    target_url = testing.database_url(backend, tmp_path)
    name = testing.unique_schema_name("cpjobs")
    Square = source["Square"]
    before = statuses(source["conn"], Square.jobs.full_table_name)
    assert before[3] == "error" and before[5] == "ignore" and before[6] == "reserved"
    try:
        report = copy_schemas({"pipe": name}, source["url"], target_url, progress=False)
        assert report.jobs_copied == len(before) - 1 == report.as_dict()["jobs_copied"]
        cfg = dj.config.copy()
        cfg["safemode"] = False
        with dj.Connection(url=target_url, config=cfg) as conn:
            module = dj.virtual_schema(name, connection=conn)
            copied = module.Square.jobs
            after = statuses(conn, copied.full_table_name)
            assert after == {k: s for k, s in before.items() if s != "reserved"}
            error = (copied & {"source_id": 3}).to_dicts()[0]
            assert "cannot square 3" in error["error_message"] and b"ValueError" in bytes(error["error_stack"])
            # the copied queue works: errors and ignored keys are skipped, the lease's key is pending again
            _, Square2 = declare_pipeline(dj.Schema(name, connection=conn))
            result = Square2.populate(reserve_jobs=True)
            assert result["success_count"] == 5
            assert sorted(k["source_id"] for k in Square2.keys()) == [0, 1, 2, 4, 6, 7]
    finally:
        testing.drop_schemas(target_url, [name])


def test_copy_refuses_a_target_job_table_with_rows_and_leaves_the_target_as_it_was(source, tmp_path):
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    from joinflow import copy as copy_module
    from joinflow.jobs import Job

    real = copy_module._copy_jobs

    def with_a_stale_queue(src, target, plan, *args):
        for p in plan:
            if p.table == "__square":  # a worker filled the new job table meanwhile
                jobs = Job(dj.FreeTable(target, p.target_full)).ensure()
                jobs.insert1({"source_id": 99, "status": "pending", "priority": 5})
        return real(src, target, plan, *args)

    copy_module._copy_jobs = with_a_stale_queue
    try:
        with pytest.raises(CopyError, match="already has rows"):
            copy_schemas(["pipe"], source["url"], target_url, progress=False)
    finally:
        copy_module._copy_jobs = real
    with dj.Connection(url=target_url) as conn:
        assert conn.backend.list_schemas(conn) == []  # everything the copy made is gone again
