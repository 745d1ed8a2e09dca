"""`auto_increment` attributes number rows on every backend as on MySQL: numbers start at 1,
explicit values are accepted and later numbers go past them, and the definition survives
describe() and `joinflow copy`."""

from __future__ import annotations

import pytest

import joinflow as dj
from joinflow import errors, testing
from joinflow.copy import copy_schemas


def declare_note(schema):
    @schema
    class Note(dj.Manual):
        definition = """
        note_id : int auto_increment
        ---
        text : varchar(100)
        """

    return Note


def test_rows_are_numbered_and_explicit_values_move_the_counter(schema):
    Note = declare_note(schema)
    assert Note.heading["note_id"].autoincrement
    Note.insert1({"text": "a"})
    Note.insert([{"text": "b"}, {"text": "c"}])
    Note.insert1({"note_id": 10, "text": "explicit"})
    Note.insert1({"text": "after"})
    rows = {r["text"]: r["note_id"] for r in Note.to_dicts()}
    assert rows == {"a": 1, "b": 2, "c": 3, "explicit": 10, "after": 11}
    with pytest.raises(errors.DuplicateError):
        Note.insert1({"note_id": 10, "text": "again"})
    assert len(Note()) == 5


def test_describe_keeps_auto_increment_and_redeclares(schema):
    Note = declare_note(schema)
    definition = Note.describe()
    assert any(line.startswith("note_id") and "auto_increment" in line for line in definition.splitlines())

    Copy = schema(type("Copy", (dj.Manual,), {"definition": definition}))
    assert Copy.heading["note_id"].autoincrement
    Copy.insert1({"text": "x"})
    assert Copy.fetch1("note_id") == 1


def test_sqlite_refuses_auto_increment_in_a_composite_key(connection, schema):
    if connection.dialect != "sqlite":
        pytest.skip("the composite-key rule is SQLite's (its row counter is the one-column rowid)")

    @schema
    class Subject(dj.Manual):
        definition = """
        subject : varchar(8)
        """

    with pytest.raises(errors.DeclarationError, match=r"only a primary key of one attribute.*`trial_id`"):
        @schema
        class Trial(dj.Manual):
            definition = """
            -> Subject
            trial_id : int auto_increment
            """
    assert "trial" not in schema.list_tables()


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_copy_from_sqlite_keeps_numbering(server, tmp_path):
    source_url = f"sqlite:///{tmp_path / 'notes.db'}"
    with dj.Connection(url=source_url) as conn:
        Note = declare_note(dj.Schema("notes", connection=conn))
        Note.insert([{"text": t} for t in "abc"])
    target_url = testing.database_url(server, tmp_path)
    name = testing.unique_schema_name("notes")
    try:
        copy_schemas({"notes": name}, source_url, target_url, progress=False)
        with dj.Connection(url=target_url) as conn:
            copied = declare_note(dj.Schema(name, connection=conn))
            assert copied.heading["note_id"].autoincrement
            copied.insert1({"text": "d"})  # numbered after the copied rows
            assert sorted(copied.to_arrays("note_id").tolist()) == [1, 2, 3, 4]
    finally:
        testing.drop_schemas(target_url, [name])
