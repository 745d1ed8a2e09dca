"""Schemas and dependencies under hostile use (issue 15), on SQLite, PostgreSQL and MySQL/MariaDB.

- ``Schema.drop()`` refuses while tables of another schema reference it, naming them, and
  drops nothing; ``drop(drop_dependents=True)`` drops those tables first.
- A foreign-key cycle among tables joinflow never declared (another schema / database) does
  not stop joinflow; a cycle among the tables an operation works on is refused naming them.
- ``alter()`` refuses a foreign key that would close a cycle, changing nothing.
- ``delete(part_integrity="cascade")`` through a renamed reference between two parts removes
  exactly the rows the rules require.

Foreign tables in a cycle are made with plain SQL in a schema of their own, dropped by the
``schema_names`` fixture (PostgreSQL ``DROP SCHEMA ... CASCADE``, MySQL ``DROP DATABASE``,
SQLite: the per-test file) whatever the test's outcome.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow.errors import DataJointError

pytestmark = pytest.mark.backend


def _tables(connection, schema):
    return set(connection.backend.list_tables(connection, schema))


def _two_schemas(connection, schema_names):
    """``lab`` (Subject) and ``ephys`` (Session -> lab.Subject, and Rig, independent)."""
    lab = dj.Schema(schema_names(), connection=connection)

    @lab
    class Subject(dj.Manual):
        definition = """
        subject_id : int32
        """

    ephys = dj.Schema(schema_names(), connection=connection)

    @ephys
    class Session(dj.Manual):
        definition = """
        -> Subject
        session : int16
        """

    @ephys
    class Rig(dj.Manual):
        definition = """
        rig : int16
        """

    Subject.insert([{"subject_id": 1}, {"subject_id": 2}])
    Session.insert([{"subject_id": 1, "session": 1}, {"subject_id": 2, "session": 1}])
    Rig.insert1({"rig": 7})
    return lab, ephys, Subject, Session, Rig


def test_schema_drop_refuses_while_another_schema_references_it(connection, schema_names):
    lab, ephys, Subject, Session, Rig = _two_schemas(connection, schema_names)
    lab_tables, ephys_tables = _tables(connection, lab.database), _tables(connection, ephys.database)

    with pytest.raises(DataJointError, match=r"(?s)Cannot drop schema .*session.*Nothing was dropped"):
        lab.drop(prompt=False)

    # nothing changed: both schemas, every table, every row, and the foreign key still holds
    assert lab.exists and ephys.exists
    assert _tables(connection, lab.database) == lab_tables
    assert _tables(connection, ephys.database) == ephys_tables
    assert sorted(Subject.to_dicts(), key=str) == [{"subject_id": 1}, {"subject_id": 2}]
    assert len(Session()) == 2 and len(Rig()) == 1
    with pytest.raises(dj.errors.IntegrityError):
        Session.insert1({"subject_id": 99, "session": 1})
    assert lab.dependents() == [Session.full_table_name]

    # dependents first, then the schema: allowed
    ephys.drop(prompt=False)
    lab.drop(prompt=False)
    assert not lab.exists and not ephys.exists


def test_schema_drop_dependents_drops_only_the_dependent_tables(connection, schema_names):
    lab, ephys, Subject, Session, Rig = _two_schemas(connection, schema_names)
    lab.drop(prompt=False, drop_dependents=True)
    assert not lab.exists
    assert ephys.exists
    # Session depended on the dropped schema and went with it; Rig did not and keeps its row
    assert _tables(connection, ephys.database) - {"~lineage"} == {"rig"}
    assert Rig.to_dicts() == [{"rig": 7}]
    assert ("session", "subject_id") not in {
        (t, a) for t, a in (k.split(".")[1:] for k in ephys.lineage)}


def _foreign_cycle(connection, name, child_of=None):
    """Two plain tables ``a`` and ``b`` in schema ``name`` that reference each other (plain SQL);
    with ``child_of`` (a full table name with an ``subject_id`` key), ``a`` references it too."""
    backend = connection.backend
    backend.create_schema(connection, name)
    a, b = backend.full_table_name(name, "a"), backend.full_table_name(name, "b")
    extra = ", subject_id INTEGER" if child_of else ""
    if backend.name == "sqlite":  # no ALTER TABLE ... ADD FOREIGN KEY; forward references are allowed
        ref = f", FOREIGN KEY (subject_id) REFERENCES {child_of} (subject_id)" if child_of else ""
        connection.execute(sa.text(f"CREATE TABLE {a} (id INTEGER NOT NULL PRIMARY KEY, b_id INTEGER{extra}, "
                                   f"FOREIGN KEY (b_id) REFERENCES {b} (id){ref})"))
        connection.execute(sa.text(f"CREATE TABLE {b} (id INTEGER NOT NULL PRIMARY KEY, a_id INTEGER, "
                                   f"FOREIGN KEY (a_id) REFERENCES {a} (id))"))
        return a, b
    connection.execute(sa.text(f"CREATE TABLE {a} (id INTEGER NOT NULL PRIMARY KEY, b_id INTEGER{extra})"))
    connection.execute(sa.text(f"CREATE TABLE {b} (id INTEGER NOT NULL PRIMARY KEY, a_id INTEGER, "
                               f"FOREIGN KEY (a_id) REFERENCES {a} (id))"))
    connection.execute(sa.text(f"ALTER TABLE {a} ADD FOREIGN KEY (b_id) REFERENCES {b} (id)"))
    if child_of:
        connection.execute(sa.text(f"ALTER TABLE {a} ADD FOREIGN KEY (subject_id) REFERENCES {child_of} (subject_id)"))
    return a, b


def test_foreign_key_cycle_elsewhere_does_not_stop_joinflow(connection, schema_names):
    _foreign_cycle(connection, schema_names())  # dropped by the fixture, pass or fail
    lab, ephys, Subject, Session, Rig = _two_schemas(connection, schema_names)

    assert lab.list_tables() == ["subject"]
    assert Subject.descendants() == [Subject.full_table_name, Session.full_table_name]
    assert Session.parents() == [Subject.full_table_name]
    assert "-> " in Session.describe()
    assert (Subject & {"subject_id": 1}).delete(prompt=False) == 1
    assert Subject.to_dicts() == [{"subject_id": 2}]
    assert Session.to_dicts() == [{"subject_id": 2, "session": 1}]
    ephys.drop(prompt=False)
    lab.drop(prompt=False)


def test_a_cycle_the_operation_reaches_is_refused_naming_the_tables(connection, schema_names):
    lab, ephys, Subject, Session, Rig = _two_schemas(connection, schema_names)
    a, b = _foreign_cycle(connection, schema_names(), child_of=Subject.full_table_name)

    with pytest.raises(DataJointError, match="form a cycle") as info:
        (Subject & {"subject_id": 1}).delete(prompt=False)
    assert a in str(info.value) and b in str(info.value)
    assert len(Subject()) == 2 and len(Session()) == 2  # nothing deleted
    # what does not reach the cycle still works
    assert Session.parents() == [Subject.full_table_name]
    assert (Session & {"subject_id": 1}).delete(prompt=False) == 1


def test_alter_refuses_a_foreign_key_that_closes_a_cycle(connection, schema):
    @schema
    class Probe(dj.Manual):
        definition = """
        probe : int32
        ---
        label = '' : varchar(20)
        """

    @schema
    class Shank(dj.Manual):
        definition = """
        shank : int32
        ---
        -> Probe
        """

    Probe.insert1({"probe": 1, "label": "p"})
    Shank.insert1({"shank": 5, "probe": 1})
    heading_before = Probe.heading.names
    describe_before = Probe.describe()
    Probe.definition = Probe.definition.replace("---\n", "---\n-> [nullable] Shank\n")

    with pytest.raises(DataJointError, match=r"(?s)cycle.*unchanged") as info:
        Probe.alter(prompt=False, context={"Shank": Shank, "Probe": Probe})
    message = str(info.value)
    assert Probe.full_table_name in message and Shank.full_table_name in message

    connection.forget_catalog()
    assert Probe.heading.names == heading_before
    assert Probe.describe() == describe_before
    assert Probe.parents() == [] and Shank.parents() == [Probe.full_table_name]
    assert Probe.to_dicts() == [{"probe": 1, "label": "p"}]
    assert schema.list_tables() == ["probe", "shank"]


@pytest.fixture
def parts(schema):
    @schema
    class Recording(dj.Manual):
        definition = """
        id : int32
        """

        class Channel(dj.Part):
            definition = """
            -> master
            ch : int32
            """

        class Link(dj.Part):  # a channel of (usually) another recording, under a renamed key
            definition = """
            -> master
            link : int32
            ---
            -> master.Channel.proj(other_id='id')
            """

    Recording.insert([{"id": i} for i in (1, 2, 3)])
    Recording.Channel.insert([{"id": i, "ch": 1} for i in (1, 2, 3)])
    return Recording


def _state(Recording):
    return (sorted(r["id"] for r in Recording.to_dicts()),
            sorted((r["id"], r["ch"]) for r in Recording.Channel.to_dicts()),
            sorted((r["id"], r["link"], r["other_id"]) for r in Recording.Link.to_dicts()))


def test_cascade_part_integrity_through_a_renamed_part_reference_deletes_one_master(parts):
    Recording = parts
    # recording 2 links to a channel of recording 1; nothing refers to recording 2's parts
    Recording.Link.insert1({"id": 2, "link": 1, "other_id": 1, "ch": 1})
    doomed = Recording.Link & {"id": 2, "link": 1}
    plan = doomed.delete(part_integrity="cascade", dry_run=True)
    assert sorted(plan.values()) == [1, 1, 1]
    doomed.delete(prompt=False, part_integrity="cascade")
    # the link's master goes with its parts; recording 1 (only referenced) stays whole
    assert _state(Recording) == ([1, 3], [(1, 1), (3, 1)], [])


def test_cascade_part_integrity_follows_a_link_into_another_master(parts):
    Recording = parts
    # recording 2 links to recording 1's channel and recording 1 links to recording 2's
    Recording.Link.insert([{"id": 2, "link": 1, "other_id": 1, "ch": 1},
                           {"id": 1, "link": 1, "other_id": 2, "ch": 1}])
    (Recording.Link & {"id": 2, "link": 1}).delete(prompt=False, part_integrity="cascade")
    # recording 2 goes, so its channel, so recording 1's link to it, so (its part deleted)
    # recording 1: no master is left missing a part.  Recording 3 is untouched.
    assert _state(Recording) == ([3], [(3, 1)], [])
