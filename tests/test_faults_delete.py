"""Delete safety across three schemas.

A cascading delete removes exactly the dependent rows (compared with an expectation
computed independently in Python), part rows go with their masters, hash-addressed objects
still referenced by surviving rows survive, and a delete interrupted by a fault (an
exception in the middle of the cascade, or the server ending the session) leaves every
table exactly as it was.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow import errors
from joinflow.table import Table

SUBJECTS, SESSIONS = 5, 4


@pytest.fixture
def lab(connection, schema_names, tmp_path):
    stores = dict(connection.config["stores"] or {})
    stores["dstore"] = {"protocol": "file", "location": str(tmp_path / "objects")}
    connection.config["stores"] = stores
    a = dj.Schema(schema_names(), connection=connection)
    b = dj.Schema(schema_names(), connection=connection)
    c = dj.Schema(schema_names(), connection=connection)

    @a
    class Subject(dj.Manual):
        definition = """
        subject_id : int32
        ---
        species : varchar(16)
        """

    class Session(dj.Manual):
        definition = """
        -> Subject
        session_id : int16
        ---
        raw : <hash@dstore>      # the same bytes for the same session_id: shared objects
        """

    b(Session, context={"Subject": Subject})

    class Analysis(dj.Manual):
        definition = """
        -> Session
        ---
        result : <blob@dstore>
        """

        class Channel(dj.Part):
            definition = """
            -> master
            channel : int16
            ---
            gain : float64
            """

    class Cohort(dj.Manual):
        definition = """
        cohort : varchar(8)
        -> Subject
        """

    c(Analysis, context={"Session": Session})
    c(Cohort, context={"Subject": Subject})
    Subject.insert([{"subject_id": s, "species": "mouse"} for s in range(SUBJECTS)])
    Session.insert([{"subject_id": s, "session_id": k, "raw": f"raw data of session {k}".encode()}
                    for s in range(SUBJECTS) for k in range(SESSIONS)])
    Analysis.insert([{"subject_id": s, "session_id": k, "result": [s, k]}
                     for s in range(SUBJECTS) for k in range(SESSIONS) if (s + k) % 2 == 0])
    Analysis.Channel.insert([{"subject_id": s, "session_id": k, "channel": ch, "gain": 1.0}
                             for s, k in zip(*Analysis.to_arrays("subject_id", "session_id")) for ch in range(3)])
    Cohort.insert([{"cohort": "even" if s % 2 == 0 else "odd", "subject_id": s} for s in range(SUBJECTS)])
    return {"Subject": Subject, "Session": Session, "Analysis": Analysis, "Channel": Analysis.Channel,
            "Cohort": Cohort}


def snapshot(lab) -> dict:
    return {name: sorted(tuple(sorted(k.items())) for k in table.keys()) for name, table in lab.items()}


def expected_after_deleting(lab, doomed_subjects: set) -> dict:
    """What must remain, derived from the data and the definitions, not from joinflow's graph."""
    keep = {}
    for name, rows in snapshot(lab).items():
        keep[name] = [row for row in rows if dict(row)["subject_id"] not in doomed_subjects]
    return keep


def test_cascade_removes_exactly_the_dependents(lab):
    Subject, Session = lab["Subject"], lab["Session"]
    before = snapshot(lab)
    expected = expected_after_deleting(lab, {1, 3})
    deleted = (Subject & "subject_id in (1, 3)").delete()
    assert deleted == 2
    assert snapshot(lab) == expected
    # every surviving row still fetches its objects, including content shared with deleted rows
    for row in Session.to_dicts():
        assert row["raw"] == f"raw data of session {row['session_id']}".encode()
    for row in lab["Analysis"].to_dicts():
        assert list(row["result"]) == [row["subject_id"], row["session_id"]]
    # garbage collection then removes exactly the objects no surviving row refers to
    from joinflow.gc import GarbageCollector

    schemas = [Subject.connection.schemas[t.database] for t in (Subject, Session, lab["Analysis"])]
    report = GarbageCollector(*schemas, store="dstore", grace_period=0).collect(dry_run=False)
    # the deleted analyses' own results go; the session objects are shared with survivors and stay
    assert report["hash_paths_deleted"] == len(before["Analysis"]) - len(expected["Analysis"]) > 0
    for row in Session.to_dicts():  # the shared session objects survived
        assert row["raw"] == f"raw data of session {row['session_id']}".encode()
    results = lab["Analysis"].to_dicts()
    assert len(results) == len(expected["Analysis"])
    for row in results:
        assert list(row["result"]) == [row["subject_id"], row["session_id"]]
    assert GarbageCollector(*schemas, store="dstore", grace_period=0).collect()["hash_paths_orphaned"] == 0


def test_dry_run_counts_what_the_delete_removes_and_changes_nothing(lab):
    Subject = lab["Subject"]
    before = snapshot(lab)
    expected = expected_after_deleting(lab, {0, 2})
    counts = (Subject & "subject_id in (0, 2)").delete(dry_run=True)
    assert snapshot(lab) == before  # nothing deleted
    tables = {t.full_table_name: name for name, t in lab.items()}
    assert {tables[full]: n for full, n in counts.items()} == {
        name: len(before[name]) - len(expected[name]) for name in lab}
    with pytest.raises(errors.DataJointError, match="part_integrity must be"):
        Subject.delete(dry_run=True, part_integrity="nope")
    with pytest.raises(errors.DataJointError, match="Cannot delete from a Part directly"):
        lab["Channel"].delete(dry_run=True)  # the same refusals as a real delete
    assert snapshot(lab) == before
    assert (Subject & "subject_id in (0, 2)").delete() == 2
    assert snapshot(lab) == expected


def test_dry_run_is_not_blocked_by_another_session_holding_locks(lab):
    """A preview reads without locks: another session's open transaction on the rows does not stop it."""
    import threading

    Subject, Session = lab["Subject"], lab["Session"]
    conn = Subject.connection
    other = dj.Connection(url=conn.url.render_as_string(hide_password=False), config=conn.config)
    try:
        other.start_transaction()  # holds row locks on the sessions it changes, until rollback
        other.query(f"UPDATE {Session.full_table_name} SET session_id = session_id + 100 WHERE subject_id = 1")
        found = {}
        worker = threading.Thread(target=lambda: found.update(
            (Subject & {"subject_id": 1}).delete(dry_run=True)))
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "the dry run waited for another session's locks"
        assert found[Session.full_table_name] == SESSIONS
    finally:
        other.cancel_transaction()
        other.close()


def test_delete_from_the_middle_schema_keeps_the_top(lab):
    Session = lab["Session"]
    before = snapshot(lab)
    (Session & {"session_id": 0}).delete()
    after = snapshot(lab)
    assert after["Subject"] == before["Subject"] and after["Cohort"] == before["Cohort"]
    for name in ("Session", "Analysis", "Channel"):
        assert after[name] == [r for r in before[name] if dict(r)["session_id"] != 0]


def test_exception_in_the_middle_of_the_cascade_deletes_nothing(lab, monkeypatch):
    before = snapshot(lab)
    real = Table.delete_quick
    calls = []

    def failing(self, get_count=False):
        calls.append(self.full_table_name)
        if len(calls) == 3:  # two tables deleted already, inside the delete's transaction
            raise RuntimeError("injected fault in the middle of the cascade")
        return real(self, get_count=get_count)

    monkeypatch.setattr(Table, "delete_quick", failing)
    with pytest.raises(RuntimeError, match="injected fault"):
        (lab["Subject"] & "subject_id < 3").delete()
    monkeypatch.undo()
    assert len(calls) == 3
    assert snapshot(lab) == before  # nothing half-deleted
    assert not lab["Subject"].connection.in_transaction
    (lab["Subject"] & "subject_id < 3").delete()  # and the same delete works afterwards
    assert snapshot(lab) == expected_after_deleting_from(before, {0, 1, 2})


def expected_after_deleting_from(before: dict, doomed: set) -> dict:
    return {name: [r for r in rows if dict(r)["subject_id"] not in doomed] for name, rows in before.items()}


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_session_killed_in_the_middle_of_the_cascade_deletes_nothing(lab, monkeypatch):
    from test_faults_connection import kill_session, session_id

    before = snapshot(lab)
    conn = lab["Subject"].connection
    real = Table.delete_quick
    calls = []

    def killing(self, get_count=False):
        calls.append(self.full_table_name)
        if len(calls) == 3:
            kill_session(conn, session_id(conn))
        return real(self, get_count=get_count)

    monkeypatch.setattr(Table, "delete_quick", killing)
    with pytest.raises(errors.LostConnectionError):
        (lab["Subject"] & "subject_id < 3").delete()
    monkeypatch.undo()
    assert snapshot(lab) == before
    assert conn.execute(sa.text("SELECT 1")).scalar() == 1  # reconnected


def test_declined_prompt_changes_nothing(lab):
    """delete() with the prompt declined rolls back everything it did."""
    import builtins

    before = snapshot(lab)
    original = builtins.input
    builtins.input = lambda prompt="": "no"
    try:
        assert (lab["Subject"] & {"subject_id": 4}).delete(prompt=True) == 0
    finally:
        builtins.input = original
    assert snapshot(lab) == before
