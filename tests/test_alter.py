"""Table.alter() (DataJoint 2.x §2.1) on SQLite, PostgreSQL and MySQL/MariaDB.

The user edits a class's ``definition`` and calls ``Class.alter()``: secondary attributes and
the table comment change, secondary foreign keys and indexes are added and dropped, the rows
stay; primary-key changes are refused with DataJoint's wording and leave the table as it was.
"""

from __future__ import annotations

import pytest

import joinflow as dj
from joinflow.errors import DataJointError


def _declare(schema):
    @schema
    class Subject(dj.Manual):
        definition = """
        # lab animals
        subject_id : int32
        ---
        species : varchar(30)       # what it is
        weight = null : float32     # grams
        notes = '' : varchar(100)
        scan = null : <blob>        # raw scan
        index (species)
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session : int16
        ---
        quality = 0 : int32
        """

    Subject.insert([dict(subject_id=1, species="mouse", weight=20.5, notes="a", scan=[1, 2, 3]),
                    dict(subject_id=2, species="rat", weight=None, notes="b", scan=None)])
    Session.insert1(dict(subject_id=1, session=1))
    return Subject, Session


def test_alter_secondary_attributes_keeps_rows(schema):
    Subject, Session = _declare(schema)
    Subject.definition = """
    # lab animals, weighed
    subject_id : int32
    ---
    animal : varchar(40)        # {species} what it is
    weight = null : float64     # grams, precise
    age = 3 : int32             # weeks
    scan = null : <blob>        # raw scan, v2
    index (animal)
    """
    Subject.alter(prompt=False)

    heading = Subject.heading
    assert heading.table_comment == "lab animals, weighed"
    assert heading.secondary_attributes == ["animal", "weight", "scan", "age"]
    assert heading["animal"].type == "varchar(40)" and heading["animal"].comment == "what it is"
    assert heading["weight"].type == "float64" and heading["weight"].comment == "grams, precise"
    assert heading["scan"].type == "<blob>" and heading["scan"].codec is not None  # :<blob>: kept
    assert "notes" not in heading.names
    rows = {r["subject_id"]: r for r in Subject.to_dicts()}
    assert rows[1] == dict(subject_id=1, animal="mouse", weight=20.5, scan=[1, 2, 3], age=3)
    assert rows[2]["animal"] == "rat" and rows[2]["weight"] is None and rows[2]["age"] == 3
    text = Subject.describe()
    assert "# lab animals, weighed" in text
    assert "animal : varchar(40)  # what it is" in text
    assert "age = " in text and ": int32  # weeks" in text
    assert "index (animal)" in text and "notes" not in text
    # the child's foreign key still works both ways
    Session.insert1(dict(subject_id=2, session=1))
    with pytest.raises(dj.errors.IntegrityError):
        Session.insert1(dict(subject_id=99, session=1))
    assert len(Session()) == 2
    # the definition now matches: a second alter has nothing to do (the {species} marker is spent)
    Subject.alter(prompt=False)
    assert Subject.heading.secondary_attributes == ["animal", "weight", "scan", "age"]


def test_alter_default_and_nullability(schema):
    Subject, _ = _declare(schema)
    Subject.definition = Subject.definition.replace(
        "notes = '' : varchar(100)", "notes = null : varchar(100)").replace(
        "weight = null : float32     # grams", "weight = 1.5 : float32     # grams")
    with pytest.raises(DataJointError, match=r"the table is unchanged.*weight"):
        Subject.alter(prompt=False)  # subject 2 has no weight: it cannot become NOT NULL
    assert Subject.heading["weight"].nullable and not Subject.heading["notes"].nullable
    assert len(Subject()) == 2
    Subject.update1(dict(subject_id=2, weight=30.0))
    Subject.alter(prompt=False)
    assert Subject.heading["notes"].nullable
    assert not Subject.heading["weight"].nullable
    Subject.insert1(dict(subject_id=3, species="rat"))
    assert (Subject & "subject_id = 3").fetch1("weight") == 1.5
    assert (Subject & "subject_id = 3").fetch1("notes") is None
    assert (Subject & "subject_id = 1").fetch1("weight") == 20.5


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.replace("subject_id : int32", "subject_id : int64"), "cannot alter the primary key (yet)."),
        (lambda d: d.replace("---", "lab : int16\n---"), "cannot alter the primary key (yet)."),
    ],
)
def test_alter_refuses_primary_key_changes(schema, edit, message):
    Subject, _ = _declare(schema)
    before = Subject.describe()
    rows = Subject.to_dicts()
    Subject.definition = edit(Subject.definition)
    with pytest.raises(NotImplementedError, match=r"^table\.alter " + message.replace("(", r"\(").replace(")", r"\)")) as info:
        Subject.alter(prompt=False)
    assert Subject.full_table_name in str(info.value)
    assert Subject.describe() == before and Subject.to_dicts() == rows


def _rig(schema):
    @schema
    class Rig(dj.Lookup):
        definition = """
        rig : int16
        ---
        room : varchar(10)
        """
        contents = [(1, "a"), (2, "b")]

    return Rig


def test_alter_adds_and_drops_nullable_secondary_foreign_key(schema, capsys, monkeypatch):
    Subject, Session = _declare(schema)
    Rig = _rig(schema)
    Session.insert1(dict(subject_id=2, session=1, quality=5))
    rows = Session.to_dicts()
    before = Session.definition
    Session.definition = before.replace("quality = 0 : int32", "quality = 0 : int32\n-> [nullable] Rig")
    shown = []
    monkeypatch.setattr("builtins.input", lambda q: shown.append(capsys.readouterr().out) or "yes")
    Session.alter()  # the preview: the full SQL, then the question
    assert "FOREIGN KEY (`rig`)".replace("`", '"' if schema.connection.backend.name != "mysql" else "`") \
        in shown[0] and Rig.full_table_name in shown[0]  # shown before the question
    assert Session.to_dicts() == [dict(r, rig=None) for r in rows]  # data unchanged, rig empty
    assert "-> [nullable] Rig" in Session.describe()
    assert Rig.full_table_name in Session.parents()
    assert Session.heading["rig"].nullable and Session.heading["rig"].lineage == Rig.heading["rig"].lineage
    assert schema.lineage[f"{schema.database}.session.rig"] == f"{schema.database}.#rig.rig"
    Session.insert1(dict(subject_id=1, session=2, rig=2))
    Session.insert1(dict(subject_id=1, session=3, rig=None))
    with pytest.raises(dj.errors.IntegrityError):
        Session.insert1(dict(subject_id=1, session=4, rig=9))  # no such rig: refused
    (Session & "session = 2").delete(prompt=False)
    Session.alter(prompt=False)  # nothing left to do
    # dropping it again: the constraint and its attribute go, the rows stay
    Session.definition = before
    Session.alter(prompt=False)
    assert "rig" not in Session.heading.names and "Rig" not in Session.describe()
    assert f"{schema.database}.session.rig" not in schema.lineage
    assert Rig.full_table_name not in Session.parents()
    assert sorted(Session.to_dicts(), key=lambda r: (r["subject_id"], r["session"])) == sorted(
        rows + [dict(subject_id=1, session=3, quality=0)], key=lambda r: (r["subject_id"], r["session"]))
    Rig.delete(prompt=False)  # nothing references the rigs any more
    assert len(Rig()) == 0


def test_alter_adds_renamed_foreign_key_and_keeps_declared_attribute(schema):
    Subject, Session = _declare(schema)
    Rig = _rig(schema)
    Session.definition = Session.definition.replace(
        "quality = 0 : int32", "quality = 0 : int32\n-> [nullable] Rig.proj(backup_rig='rig')")
    Session.alter(prompt=False)
    assert Session.heading["backup_rig"].nullable
    assert "-> [nullable] Rig.proj(backup_rig='rig')" in Session.describe()
    Session.update1(dict(subject_id=1, session=1, backup_rig=1))
    with pytest.raises(dj.errors.IntegrityError):
        Session.update1(dict(subject_id=1, session=1, backup_rig=7))
    # the foreign key goes, its attribute stays as an ordinary one because the definition declares it
    Session.definition = Session.definition.replace(
        "-> [nullable] Rig.proj(backup_rig='rig')", "backup_rig = null : int16")
    Session.alter(prompt=False)
    assert Rig.full_table_name not in Session.parents()
    assert (Session & "session = 1").fetch1("backup_rig") == 1
    Session.update1(dict(subject_id=1, session=1, backup_rig=7))  # no longer checked
    Session.alter(prompt=False)  # and nothing is left to do (no stray index either)
    assert "index" not in Session.describe()


def test_alter_refuses_required_foreign_key_on_filled_table(schema):
    Subject, Session = _declare(schema)
    Rig = _rig(schema)  # noqa: F841 - alter() finds it in the caller's namespace
    before, rows = Session.describe(), Session.to_dicts()
    Session.definition = Session.definition.replace("quality = 0 : int32", "quality = 0 : int32\n-> Rig")
    with pytest.raises(DataJointError, match=r"(?s)`rig`.*1 row\(s\).*-> \[nullable\] Rig") as info:
        Session.alter(prompt=False)
    assert Session.full_table_name in str(info.value)
    assert Session.describe() == before and Session.to_dicts() == rows
    (Session & "session = 1").delete(prompt=False)  # on an empty table it is added
    Session.alter(prompt=False)
    assert "-> Rig" in Session.describe() and not Session.heading["rig"].nullable


def test_alter_refuses_changes_to_primary_foreign_keys(schema):
    Subject, Session = _declare(schema)
    before = Session.describe()
    Session.definition = Session.definition.replace("---\n", "---\n-> [nullable] Subject.proj(other='subject_id')\n"
                                                    ).replace("-> Subject\n", "subject_id : int32\n")
    with pytest.raises(NotImplementedError, match=r"^table\.alter cannot alter foreign keys in the primary key"):
        Session.alter(prompt=False)
    assert Session.describe() == before


def test_alter_refuses_nullable_change_of_declared_foreign_key(schema):
    Subject, Session = _declare(schema)
    Rig = _rig(schema)
    Session.definition = Session.definition.replace("quality = 0 : int32", "quality = 0 : int32\n-> [nullable] Rig")
    Session.alter(prompt=False)
    before = Session.describe()
    Session.definition = Session.definition.replace("-> [nullable] Rig", "-> Rig")
    with pytest.raises(NotImplementedError, match=r"^table\.alter cannot alter the \[nullable\] option.*rig"):
        Session.alter(prompt=False)
    assert Session.describe() == before and Rig.full_table_name in Session.parents()


def test_alter_adds_and_drops_indexes(schema):
    Subject, _ = _declare(schema)
    Subject.definition = Subject.definition.replace(
        "index (species)", "index (species, weight)\nunique index (notes)")
    Subject.alter(prompt=False)
    text = Subject.describe()
    assert "index (species, weight)" in text and "unique index (notes)" in text
    assert "index (species)\n" not in text
    with pytest.raises(dj.errors.DuplicateError):
        Subject.insert1(dict(subject_id=3, species="rat", notes="a"))  # the unique index holds
    Subject.definition = Subject.definition.replace("index (species, weight)\nunique index (notes)", "")
    Subject.alter(prompt=False)
    assert "index" not in Subject.describe()
    Subject.insert1(dict(subject_id=3, species="rat", notes="a"))
    assert len(Subject()) == 3


def test_alter_unique_index_violated_by_rows(schema):
    Subject, _ = _declare(schema)
    Subject.insert1(dict(subject_id=3, species="mouse", notes="c"))
    before, rows = Subject.describe(), Subject.to_dicts()
    Subject.definition = Subject.definition.replace("index (species)", "index (species)\nunique index (species)")
    with pytest.raises(DataJointError, match=r"(?s)unique index \(species\).*species='mouse'.*plain "
                                             r"`index \(species\)`.*unchanged") as info:
        Subject.alter(prompt=False)
    assert Subject.full_table_name in str(info.value)
    assert Subject.describe() == before and Subject.to_dicts() == rows


def test_alter_bad_conversion_changes_nothing(schema):
    Subject, _ = _declare(schema)
    before, rows = Subject.describe(), Subject.to_dicts()
    Subject.definition = Subject.definition.replace("species : varchar(30)", "species : int32")
    with pytest.raises(DataJointError, match="the table is unchanged"):
        Subject.alter(prompt=False)
    assert Subject.describe() == before and Subject.to_dicts() == rows


def test_alter_new_required_attribute_on_filled_table(schema):
    Subject, _ = _declare(schema)
    before = Subject.describe()
    Subject.definition = Subject.definition.replace("---", "---\nsex : enum('F', 'M')")
    with pytest.raises(DataJointError, match=r"`sex` has no default and the table has 2 row\(s\)"):
        Subject.alter(prompt=False)
    assert Subject.describe() == before


def test_alter_rename_of_unknown_attribute(schema):
    Subject, _ = _declare(schema)
    before = Subject.describe()
    Subject.definition = Subject.definition.replace("# what it is", "# {specie} what it is").replace(
        "species : varchar", "kind : varchar").replace("index (species)", "index (kind)")
    with pytest.raises(DataJointError, match=r"renamed from `specie`.*Fix the name"):
        Subject.alter(prompt=False)
    assert Subject.describe() == before


def test_alter_refused_inside_transaction(schema):
    Subject, _ = _declare(schema)
    Subject.definition = Subject.definition.replace("# lab animals", "# animals")
    with schema.connection.transaction:
        with pytest.raises(DataJointError, match="inside a transaction"):
            Subject.alter(prompt=False)
    assert Subject.heading.table_comment == "lab animals"


def test_alter_prompt(schema, monkeypatch, capsys):
    Subject, _ = _declare(schema)
    Subject.definition = Subject.definition.replace("# lab animals", "# animals of the lab")
    questions = []
    answers = iter(["no", "yes"])
    monkeypatch.setattr("builtins.input", lambda q: questions.append(q) or next(answers))
    Subject.alter()  # prompt=True by default
    assert questions == ["Proceed? [yes, No]: "]
    assert Subject.heading.table_comment == "lab animals"
    assert "cancelled" in capsys.readouterr().out
    schema.connection.config["safemode"] = True
    Subject.alter(prompt=None)  # safemode asks too
    assert len(questions) == 2
    out = capsys.readouterr().out
    assert "animals of the lab" in out  # the SQL was shown
    assert Subject.heading.table_comment == "animals of the lab"
    Subject.alter()  # nothing left: no question
    assert len(questions) == 2


def test_alter_rename_add_drop_in_place(schema):
    """Renames, new nullable attributes, drops and comments (SQLite: no rebuild needed)."""
    Subject, Session = _declare(schema)
    Subject.definition = """
    # lab animals
    subject_id : int32
    ---
    kind : varchar(30)          # {species} what it is
    weight = null : float32     # grams
    scan = null : <blob>        # the raw scan
    sex = null : enum('F', 'M')
    index (kind)
    """
    Subject.alter(prompt=False)
    heading = Subject.heading
    assert heading.secondary_attributes == ["kind", "weight", "scan", "sex"]
    assert heading["scan"].type == "<blob>" and heading["scan"].comment == "the raw scan"
    assert heading["sex"].type == "enum('F', 'M')" and heading["sex"].nullable
    assert (Subject & "subject_id = 1").fetch1("scan") == [1, 2, 3]
    assert sorted(Subject.to_arrays("kind")) == ["mouse", "rat"]
    assert "index (kind)" in Subject.describe()  # the index followed its column
    Subject.insert1(dict(subject_id=3, kind="rat", sex="F"))
    with pytest.raises(DataJointError):
        Subject.insert1(dict(subject_id=4, kind="rat", sex="X"))  # the enum is enforced
    assert len(Session()) == 1


def test_alter_computed_table_with_job_metadata(schema):
    schema.connection.config["jobs.add_job_metadata"] = True
    Subject, _ = _declare(schema)

    @schema
    class Mass(dj.Computed):
        definition = """
        -> Subject
        ---
        grams : float32
        """

        def make(self, key):
            self.insert1(dict(key, grams=1.0))

    Mass.populate()
    hidden = [n for n in Mass.heading.all_attributes if n.startswith("_job")]
    assert hidden
    Mass.definition = """
    -> Subject
    ---
    grams : float64   # heavier
    kilograms = null : float64
    """
    Mass.alter(prompt=False)
    assert [n for n in Mass.heading.all_attributes if n.startswith("_job")] == hidden
    assert Mass.heading["grams"].type == "float64"
    assert sorted(Mass.to_arrays("grams")) == [1.0, 1.0]
