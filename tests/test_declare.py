"""The definition language (DataJoint 2.x §2) on SQLite, PostgreSQL and MySQL/MariaDB.

Covers: table comment, primary/secondary split, defaults, every core type's insert -> fetch
round trip (Python type and extreme values), overflow rejection, native-type passthrough,
foreign keys in all their forms, indexes, singleton tables, hidden attributes, heading
properties and the describe() round trip.
"""

from __future__ import annotations

import datetime
import logging
import math
import uuid
from decimal import Decimal

import pytest

import joinflow as dj
from joinflow.errors import DataJointError, DuplicateError, IntegrityError, MissingAttributeError


def _unquote(text):
    return None if text is None else text.strip("'\"")


# ---------------------------------------------------------------------------------------------
# table comment, primary key / secondary split, heading properties
# ---------------------------------------------------------------------------------------------


def test_table_comment_and_key_split(schema):
    @schema
    class Subject(dj.Manual):
        definition = """
        # lab animals: mice & rats, it's "tested"
        subject_id : varchar(16)    # unique name
        species : enum('mouse', 'rat')  # part of the key
        ---
        weight = null : float32     # grams
        dob : date
        """

    heading = Subject.heading
    assert heading.names == ["subject_id", "species", "weight", "dob"]
    assert heading.primary_key == ["subject_id", "species"]
    assert Subject.primary_key == ["subject_id", "species"]
    assert heading.secondary_attributes == ["weight", "dob"]
    assert Subject.describe().splitlines()[0] == '# lab animals: mice & rats, it\'s "tested"'


def test_heading_attribute_properties(schema):
    @schema
    class Probe(dj.Manual):
        definition = """
        probe_id : int32            # serial number
        ---
        model : varchar(32)         # maker's model: free text
        channels = 64 : int16       # recording sites
        gain = null : float64
        kind = 'silicon' : enum('silicon', 'tetrode')
        """

    attrs = Probe.heading.attributes
    assert attrs["probe_id"].type == "int32"
    assert attrs["probe_id"].comment == "serial number"
    assert attrs["probe_id"].in_key and not attrs["probe_id"].nullable

    assert attrs["model"].type == "varchar(32)"
    assert attrs["model"].comment == "maker's model: free text"
    assert not attrs["model"].nullable and attrs["model"].default is None

    assert attrs["channels"].type == "int16"
    assert _unquote(attrs["channels"].default) == "64"
    assert not attrs["channels"].nullable

    assert attrs["gain"].type == "float64"
    assert attrs["gain"].nullable
    assert attrs["gain"].comment == ""

    assert attrs["kind"].type.replace(" ", "") == "enum('silicon','tetrode')"
    assert _unquote(attrs["kind"].default) == "silicon"


def test_comment_lines_inside_definition_are_ignored(schema):
    @schema
    class Note(dj.Manual):
        definition = """
        # the table comment
        note_id : int32
        # a remark about the key, not an attribute
        ---
        # a remark about the secondary attributes
        body : varchar(255)
        """

    assert Note.heading.names == ["note_id", "body"]
    assert Note.describe().splitlines()[0] == "# the table comment"


# ---------------------------------------------------------------------------------------------
# defaults
# ---------------------------------------------------------------------------------------------


def test_defaults_fill_missing_values(schema):
    @schema
    class Settings(dj.Manual):
        definition = """
        setting_id : int32
        ---
        count = 5 : int32
        ratio = 1.5 : float64
        label = "hello" : varchar(16)
        path = 'a:b # c' : varchar(16)     # quotes protect : and #
        level = 'mid' : enum('low', 'mid', 'high')
        enabled = 1 : bool
        price = 9.99 : decimal(6,2)
        start = "2020-01-01" : date
        maybe = null : int32
        note = null : varchar(8)
        created = CURRENT_TIMESTAMP : datetime
        """

    Settings.insert1({"setting_id": 1})
    row = Settings.fetch1()
    assert row["count"] == 5 and type(row["count"]) is int
    assert row["ratio"] == 1.5 and isinstance(row["ratio"], float)
    assert row["label"] == "hello"
    assert row["path"] == "a:b # c"
    assert row["level"] == "mid"
    assert row["enabled"] is True
    assert row["price"] == Decimal("9.99") and isinstance(row["price"], Decimal)
    assert row["start"] == datetime.date(2020, 1, 1)
    assert row["maybe"] is None
    assert row["note"] is None
    created = row["created"]
    assert isinstance(created, datetime.datetime)
    now_local, now_utc = datetime.datetime.now(), datetime.datetime.utcnow()
    assert min(abs(created - now_local), abs(created - now_utc)) < datetime.timedelta(minutes=5)

    heading = Settings.heading
    assert heading["maybe"].nullable and heading["note"].nullable
    assert not heading["count"].nullable
    assert heading["created"].default.upper().startswith("CURRENT_TIMESTAMP")
    assert _unquote(heading["label"].default) == "hello"


def test_explicit_values_override_defaults_and_none_means_default(schema):
    @schema
    class Thing(dj.Manual):
        definition = """
        thing_id : int32
        ---
        count = 5 : int32
        tag = null : varchar(8)
        """

    Thing.insert([{"thing_id": 1, "count": 7, "tag": "x"}, {"thing_id": 2, "count": None, "tag": None}])
    rows = Thing.to_dicts(order_by="thing_id")
    assert rows == [{"thing_id": 1, "count": 7, "tag": "x"}, {"thing_id": 2, "count": 5, "tag": None}]


# ---------------------------------------------------------------------------------------------
# core types: round trip with the right Python type, extreme values
# ---------------------------------------------------------------------------------------------

U0 = uuid.UUID(int=0)
U1 = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")

ROUND_TRIP = [
    ("int8", [-128, 0, 127], int),
    ("int16", [-(2**15), 2**15 - 1], int),
    ("int32", [-(2**31), 2**31 - 1], int),
    ("int64", [-(2**63), 2**63 - 1], int),
    ("float32", [1.5, -0.25, 0.0], float),
    ("float64", [math.pi, -1e300, 2.2250738585072014e-308], float),
    ("bool", [True, False], bool),
    ("decimal(8,3)", [Decimal("12345.678"), Decimal("-0.001"), Decimal("0.000")], Decimal),
    ("char(3)", ["abc", "x y"], str),
    ("varchar(20)", ["hello world", "", "ünïcødé ✓ 'q' \"d\""], str),
    ("enum('low', 'mid', 'high')", ["low", "high"], str),
    ("date", [datetime.date(2024, 2, 29), datetime.date(1900, 1, 1)], datetime.date),
    ("datetime", [datetime.datetime(2024, 2, 29, 23, 59, 59), datetime.datetime(1970, 1, 1)], datetime.datetime),
    ("datetime(3)", [datetime.datetime(2024, 1, 2, 3, 4, 5, 123000)], datetime.datetime),
    ("uuid", [U1, U0], uuid.UUID),
    ("json", [{"a": [1, 2.5, None, "x"], "b": {"c": True}}, [1, "two", {"three": 3}]], (dict, list)),
    ("bytes", [b"\x00\x01\xff", b"", bytes(range(256)) * 8], bytes),
]


@pytest.mark.parametrize("core_type,values,pytype", ROUND_TRIP, ids=[t[0] for t in ROUND_TRIP])
def test_core_type_round_trip(schema, core_type, values, pytype):
    @schema
    class Holder(dj.Manual):
        definition = f"""
        holder_id : int32
        ---
        val : {core_type}
        """

    Holder.insert([{"holder_id": i, "val": v} for i, v in enumerate(values)])
    fetched = [r["val"] for r in Holder.to_dicts(order_by="holder_id")]
    assert len(fetched) == len(values)
    for got, want in zip(fetched, values):
        assert isinstance(got, pytype), f"{core_type}: {got!r} is {type(got).__name__}"
        if pytype is int:
            assert type(got) is int  # not bool, not numpy
        if pytype is datetime.date:
            assert not isinstance(got, datetime.datetime)
        assert got == want
    # the attribute keeps its declared core type
    assert Holder.heading["val"].type.replace(" ", "") == core_type.replace(" ", "")
    # an exact value finds its row again (equality restriction encodes like insert does)
    if not core_type.startswith(("json", "float")):
        for i, v in enumerate(values):
            assert (Holder & {"val": v}).keys() == [{"holder_id": i}], f"restriction by {v!r}"


KEY_TYPES = [t for t in ROUND_TRIP if not t[0].startswith(("float", "json", "bytes"))]


@pytest.mark.parametrize("core_type,values,pytype", KEY_TYPES, ids=[t[0] for t in KEY_TYPES])
def test_core_type_as_primary_key(schema, core_type, values, pytype):
    @schema
    class Keyed(dj.Manual):
        definition = f"""
        k : {core_type}
        """

    Keyed.insert([{"k": v} for v in values])
    got = sorted((r["k"] for r in Keyed.keys()), key=repr)
    assert got == sorted(values, key=repr)
    assert all(isinstance(v, pytype) for v in got)
    with pytest.raises(DuplicateError):
        Keyed.insert1({"k": values[0]})


def test_datetime_precision_is_enforced(schema):
    @schema
    class Stamp(dj.Manual):
        definition = """
        stamp_id : int32
        ---
        ms : datetime(3)
        sec : datetime(0)
        """

    Stamp.insert1({"stamp_id": 1, "ms": datetime.datetime(2024, 1, 2, 3, 4, 5, 123456),
                   "sec": datetime.datetime(2024, 1, 2, 3, 4, 5, 200000)})
    row = Stamp.fetch1()
    # datetime(3) keeps milliseconds only; datetime(0) keeps whole seconds (as MySQL and PostgreSQL do)
    assert row["ms"] == datetime.datetime(2024, 1, 2, 3, 4, 5, 123000)
    assert row["sec"] == datetime.datetime(2024, 1, 2, 3, 4, 5)


def test_nan_and_empty_string_become_null_in_numeric_columns(schema):
    @schema
    class Measure(dj.Manual):
        definition = """
        measure_id : int32
        ---
        x = null : float64
        y = null : float32
        n = null : int32
        """

    Measure.insert([{"measure_id": 1, "x": float("nan"), "y": float("nan"), "n": ""},
                    {"measure_id": 2, "x": 2.0, "y": 0.5, "n": 3}])
    rows = Measure.to_dicts(order_by="measure_id")
    assert rows[0] == {"measure_id": 1, "x": None, "y": None, "n": None}
    assert rows[1] == {"measure_id": 2, "x": 2.0, "y": 0.5, "n": 3}
    assert len(Measure & "x is null") == 1


OVERFLOW = [
    ("int8", 200),
    ("int8", -129),
    ("int16", 2**15),
    ("int32", 2**31),
    ("int64", 2**63),
    ("varchar(4)", "too long"),
    ("char(2)", "abc"),
    ("enum('a', 'b')", "c"),
    ("decimal(5,2)", Decimal("1000.00")),
    ("uuid", "not-a-uuid"),
    ("date", "2021-02-30"),
    ("bool", "maybe"),
]


@pytest.mark.parametrize("core_type,bad", OVERFLOW, ids=[f"{t}={b!r}" for t, b in OVERFLOW])
def test_value_that_does_not_fit_is_rejected(schema, core_type, bad):
    @schema
    class OverflowTarget(dj.Manual):
        definition = f"""
        row_id : int32
        ---
        the_value : {core_type}
        """

    with pytest.raises(DataJointError) as info:
        OverflowTarget.insert1({"row_id": 1, "the_value": bad})
    assert type(info.value) is not DataJointError, "expected a specific DataJointError subclass"
    message = str(info.value)
    assert "the_value" in message or "overflow_target" in message, message
    assert len(OverflowTarget()) == 0


# ---------------------------------------------------------------------------------------------
# native types
# ---------------------------------------------------------------------------------------------


def test_native_types_pass_through_with_a_warning(schema, backend, caplog):
    caplog.set_level(logging.WARNING, logger="joinflow")
    integer_type = "smallint" if backend == "postgresql" else "mediumint"

    @schema
    class Legacy(dj.Manual):
        definition = f"""
        legacy_id : int32
        ---
        body : text
        level : {integer_type}
        """

    warnings = [r for r in caplog.records if r.name == "joinflow" and r.levelno == logging.WARNING]
    text = "\n".join(r.getMessage() for r in warnings)
    assert "'text'" in text and "body" in text
    assert f"'{integer_type}'" in text and "level" in text
    assert not any("legacy_id" in r.getMessage() for r in warnings)  # core types do not warn

    long_text = "x" * 5000
    Legacy.insert1({"legacy_id": 1, "body": long_text, "level": 1000})
    row = Legacy.fetch1()
    assert row["body"] == long_text
    assert row["level"] == 1000 and type(row["level"]) is int
    assert Legacy.heading["body"].type == "text"


# ---------------------------------------------------------------------------------------------
# foreign keys
# ---------------------------------------------------------------------------------------------


def test_foreign_key_in_primary_key(schema):
    @schema
    class Subject(dj.Manual):
        definition = """
        subject_id : varchar(16)   # animal name
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session_idx : int16
        ---
        note = '' : varchar(64)
        """

    heading = Session.heading
    assert heading.primary_key == ["subject_id", "session_idx"]
    assert heading["subject_id"].type == "varchar(16)"
    assert not heading["subject_id"].nullable
    assert Session.parents() == [Subject.full_table_name]

    with pytest.raises(IntegrityError):
        Session.insert1({"subject_id": "ghost", "session_idx": 1})
    assert len(Session()) == 0
    Subject.insert1({"subject_id": "m1"})
    Session.insert1({"subject_id": "m1", "session_idx": 1})
    assert Session.keys() == [{"subject_id": "m1", "session_idx": 1}]


def test_foreign_key_in_secondary_section(schema):
    @schema
    class Rig(dj.Lookup):
        definition = """
        rig : varchar(8)
        """
        contents = [("A",), ("B",)]

    @schema
    class Run(dj.Manual):
        definition = """
        run_id : int32
        ---
        -> Rig
        """

    assert Run.heading.primary_key == ["run_id"]
    assert Run.heading.secondary_attributes == ["rig"]
    assert not Run.heading["rig"].nullable
    with pytest.raises(MissingAttributeError, match="rig"):
        Run.insert1({"run_id": 1})
    with pytest.raises(IntegrityError):
        Run.insert1({"run_id": 1, "rig": "Z"})
    Run.insert1({"run_id": 1, "rig": "A"})
    assert Run.fetch1("rig") == "A"
    with pytest.raises(IntegrityError):  # the parent row is protected while referenced
        (Rig & {"rig": "A"}).delete_quick()


def test_nullable_foreign_key(schema):
    @schema
    class Rig(dj.Lookup):
        definition = """
        rig : varchar(8)
        """
        contents = [("A",)]

    @schema
    class Run(dj.Manual):
        definition = """
        run_id : int32
        ---
        -> [nullable] Rig
        """

    assert Run.heading["rig"].nullable
    Run.insert1({"run_id": 1})
    Run.insert1({"run_id": 2, "rig": None})
    Run.insert1({"run_id": 3, "rig": "A"})
    with pytest.raises(IntegrityError):
        Run.insert1({"run_id": 4, "rig": "Z"})
    assert [r["rig"] for r in Run.to_dicts(order_by="run_id")] == [None, None, "A"]


def test_unique_foreign_key_is_enforced(schema):
    @schema
    class Animal(dj.Manual):
        definition = """
        animal_id : int32
        """

    @schema
    class Implant(dj.Manual):
        definition = """
        implant_id : int32
        ---
        -> [unique] Animal
        """

    Animal.insert([{"animal_id": 1}, {"animal_id": 2}])
    Implant.insert1({"implant_id": 10, "animal_id": 1})
    with pytest.raises(DuplicateError):
        Implant.insert1({"implant_id": 11, "animal_id": 1})
    Implant.insert1({"implant_id": 12, "animal_id": 2})
    assert Implant.to_dicts(order_by="implant_id") == [
        {"implant_id": 10, "animal_id": 1}, {"implant_id": 12, "animal_id": 2}]
    assert "-> [unique] Animal" in Implant.describe()


def test_unique_nullable_foreign_key_allows_many_nulls(schema):
    @schema
    class Animal(dj.Manual):
        definition = """
        animal_id : int32
        """

    @schema
    class Tag(dj.Manual):
        definition = """
        tag_id : int32
        ---
        -> [nullable, unique] Animal
        """

    Animal.insert1({"animal_id": 1})
    Tag.insert([{"tag_id": 1}, {"tag_id": 2}])
    Tag.insert1({"tag_id": 3, "animal_id": 1})
    with pytest.raises(DuplicateError):
        Tag.insert1({"tag_id": 4, "animal_id": 1})
    assert len(Tag()) == 3
    assert Tag.heading["animal_id"].nullable


def test_projected_foreign_key(schema):
    @schema
    class Neuron(dj.Manual):
        definition = """
        neuron_id : int32     # cell number
        """

    @schema
    class Synapse(dj.Manual):
        definition = """
        -> Neuron.proj(pre='neuron_id')
        -> Neuron.proj(post='neuron_id')
        ---
        strength : float64
        """

    heading = Synapse.heading
    assert heading.primary_key == ["pre", "post"]
    assert heading["pre"].type == heading["post"].type == "int32"
    assert "neuron_id" not in heading.names
    Neuron.insert([{"neuron_id": 1}, {"neuron_id": 2}])
    Synapse.insert1({"pre": 1, "post": 2, "strength": 0.5})
    with pytest.raises(IntegrityError):
        Synapse.insert1({"pre": 1, "post": 3, "strength": 0.5})
    with pytest.raises(IntegrityError):
        Synapse.insert1({"pre": 3, "post": 1, "strength": 0.5})
    assert len(Synapse()) == 1
    text = Synapse.describe()
    assert "Neuron.proj(pre='neuron_id')" in text.replace('"', "'")
    assert "Neuron.proj(post='neuron_id')" in text.replace('"', "'")


def test_part_table_references_master(schema):
    @schema
    class Recording(dj.Manual):
        definition = """
        rec_id : int32
        ---
        label : varchar(16)
        """

        class Channel(dj.Part):
            definition = """
            -> master
            channel : int16
            ---
            gain : float32
            """

    assert Recording.Channel.heading.primary_key == ["rec_id", "channel"]
    assert Recording.Channel.table_name == "recording__channel"
    assert Recording.Channel.master is Recording
    with pytest.raises(IntegrityError):
        Recording.Channel.insert1({"rec_id": 1, "channel": 0, "gain": 1.0})
    Recording.insert1({"rec_id": 1, "label": "r"})
    Recording.Channel.insert([{"rec_id": 1, "channel": c, "gain": 1.0} for c in range(4)])
    assert len(Recording.Channel()) == 4
    assert Recording.Channel.parents() == [Recording.full_table_name]


def test_foreign_key_to_table_in_another_schema(connection, schema_names):
    lab = dj.Schema(schema_names(), connection=connection)
    exp = dj.Schema(schema_names(), connection=connection)

    @lab
    class Person(dj.Manual):
        definition = """
        person : varchar(32)
        """

    @exp
    class Experiment(dj.Manual):
        definition = """
        experiment_id : int32
        ---
        -> Person
        """

    assert Experiment.database == exp.database != Person.database
    assert Experiment.heading["person"].type == "varchar(32)"
    assert Experiment.parents() == [Person.full_table_name]
    with pytest.raises(IntegrityError):
        Experiment.insert1({"experiment_id": 1, "person": "nobody"})
    Person.insert1({"person": "ada"})
    Experiment.insert1({"experiment_id": 1, "person": "ada"})
    assert (Experiment * Person).to_dicts() == [{"experiment_id": 1, "person": "ada"}]
    with pytest.raises(IntegrityError):
        (Person & {"person": "ada"}).delete_quick()


def test_shared_ancestor_attribute_is_declared_once(schema):
    @schema
    class Subject(dj.Manual):
        definition = """
        subject_id : int32
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session : int16
        """

    @schema
    class Scan(dj.Manual):
        definition = """
        -> Subject
        scan : int16
        """

    @schema
    class Match(dj.Manual):
        definition = """
        -> Session
        -> Scan
        """

    assert Match.heading.primary_key == ["subject_id", "session", "scan"]
    Subject.insert1({"subject_id": 1})
    Session.insert1({"subject_id": 1, "session": 1})
    Scan.insert1({"subject_id": 1, "scan": 1})
    Match.insert1({"subject_id": 1, "session": 1, "scan": 1})
    with pytest.raises(IntegrityError):
        Match.insert1({"subject_id": 1, "session": 1, "scan": 2})


# ---------------------------------------------------------------------------------------------
# indexes, singleton, hidden attributes
# ---------------------------------------------------------------------------------------------


def test_index_and_unique_index(schema):
    @schema
    class Person(dj.Manual):
        definition = """
        person_id : int32
        ---
        first : varchar(32)
        last : varchar(32)
        email : varchar(64)
        index (last, first)
        unique index (email)
        """

    Person.insert1({"person_id": 1, "first": "Ada", "last": "Lovelace", "email": "ada@x.org"})
    Person.insert1({"person_id": 2, "first": "Ada", "last": "Lovelace", "email": "ada2@x.org"})
    with pytest.raises(DuplicateError):
        Person.insert1({"person_id": 3, "first": "Bob", "last": "B", "email": "ada@x.org"})
    assert len(Person()) == 2
    assert (Person & {"person_id": 1}).fetch1("email") == "ada@x.org"
    lines = [ln.strip().lower().replace("`", "").replace('"', "") for ln in Person.describe().splitlines()]
    assert "index (last, first)" in lines
    assert "unique index (email)" in lines


def test_singleton_table_holds_at_most_one_row(schema):
    @schema
    class Current(dj.Manual):
        definition = """
        # the one current setting
        ---
        mode : varchar(16)
        """

    assert Current.heading.names == ["mode"]
    assert Current.heading.primary_key == []
    Current.insert1({"mode": "fast"})
    with pytest.raises(DuplicateError):
        Current.insert1({"mode": "slow"})
    assert len(Current()) == 1
    assert Current.fetch1() == {"mode": "fast"}
    assert Current.to_dicts() == [{"mode": "fast"}]


def test_singleton_without_separator(schema):
    @schema
    class Flag(dj.Manual):
        definition = """
        # no key at all
        """

    assert Flag.heading.names == []
    Flag.insert1({})
    with pytest.raises(DuplicateError):
        Flag.insert1({})
    assert len(Flag()) == 1


def test_hidden_attributes_are_excluded_from_heading(schema):
    @schema
    class Only(dj.Manual):
        definition = """
        ---
        value : int32
        """

    heading = Only.heading
    assert "_singleton" not in heading.names
    assert "_singleton" not in heading.primary_key
    assert "_singleton" not in heading.secondary_attributes
    assert [a.name for a in heading] == ["value"]
    Only.insert1({"value": 3})
    assert Only.fetch1() == {"value": 3}
    assert "_singleton" not in Only.describe()


# ---------------------------------------------------------------------------------------------
# describe() round trip
# ---------------------------------------------------------------------------------------------


def _heading_signature(table):
    sig = []
    for a in table.heading.attributes.values():
        sig.append((a.name, a.type.replace(" ", ""), a.in_key, a.nullable,
                    None if a.nullable else _unquote(a.default), a.comment))
    return sig


def test_describe_round_trip(connection, schema_names):
    first = dj.Schema(schema_names(), connection=connection)
    second = dj.Schema(schema_names(), connection=connection)

    @first
    class Subject(dj.Manual):
        definition = """
        subject_id : varchar(16)     # animal name
        """

    @first
    class Rig(dj.Lookup):
        definition = """
        rig_id : int16
        """

    @first
    class Session(dj.Manual):
        definition = """
        # a recording session: with, "quotes" and 'apostrophes'
        -> Subject
        session_idx : int16          # per subject
        ---
        started = CURRENT_TIMESTAMP : datetime
        -> [nullable] Rig
        -> [unique] Rig.proj(backup_rig='rig_id')
        quality = 'good' : enum('good', 'bad')
        gain = 1.5 : float64         # amplifier gain
        count = 3 : int32
        price = 2.50 : decimal(6,2)
        label = null : varchar(32)
        enabled = 1 : bool
        when = null : datetime(3)
        uid = null : uuid
        extra = null : json
        raw = null : bytes
        index (quality, count)
        unique index (label)
        """

    text = Session.describe()
    context = {"Subject": Subject, "Rig": Rig}

    class Copy(dj.Manual):
        definition = text

    second(Copy, context=context)
    assert _heading_signature(Copy) == _heading_signature(Session)
    assert Copy.heading.primary_key == Session.heading.primary_key == ["subject_id", "session_idx"]
    assert Copy.describe().splitlines()[0] == text.splitlines()[0]
    # the copy's description is the same definition (its parents now live in another schema)
    assert Copy.describe().replace(f"{first.database}.", "") == text
    # and it behaves the same: unique index and foreign keys enforced
    Subject.insert1({"subject_id": "m"})
    Rig.insert([{"rig_id": 1}, {"rig_id": 2}])
    Copy.insert1({"subject_id": "m", "session_idx": 1, "backup_rig": 1, "label": "x"})
    with pytest.raises(DuplicateError):
        Copy.insert1({"subject_id": "m", "session_idx": 2, "backup_rig": 1})
    with pytest.raises(DuplicateError):
        Copy.insert1({"subject_id": "m", "session_idx": 3, "backup_rig": 2, "label": "x"})
    with pytest.raises(IntegrityError):
        Copy.insert1({"subject_id": "m", "session_idx": 4, "backup_rig": 9})


def test_describe_of_part_and_simple_tables(schema):
    @schema
    class Scan(dj.Manual):
        definition = """
        scan_id : int32
        ---
        depth : float32     # microns
        """

        class Field(dj.Part):
            definition = """
            -> master
            field_idx : int16
            """

    text = Scan.describe()
    assert text.split() == ["scan_id", ":", "int32", "---", "depth", ":", "float32", "#", "microns"]
    part_text = Scan.Field.describe()
    assert part_text.splitlines()[0].strip() == "-> Scan"
    assert part_text.split()[2:] == ["field_idx", ":", "int16"]


@pytest.mark.backend
def test_describe_lists_foreign_keys_that_share_attributes(schema):
    """Two foreign keys over the same attributes (a redundant link to an ancestor, as in the
    lcms example's PeakSummary) are both described, ancestor first."""

    @schema
    class Run(dj.Manual):
        definition = """
        run_id : int32
        """

    @schema
    class Peaks(dj.Manual):
        definition = """
        -> Run
        ---
        n_peaks : int32
        """

    @schema
    class Summary(dj.Manual):
        definition = """
        -> Run
        -> Peaks
        ---
        total : float64
        """

    text = Summary.describe()
    assert [line.strip() for line in text.splitlines()] == ["-> Run", "-> Peaks", "---", "total : float64"]
    parents = schema.connection.dependencies.load().parents(Summary.full_table_name)
    assert set(parents) == {Run.full_table_name, Peaks.full_table_name}


def test_heading_repr_reads_like_a_definition(schema):
    @schema
    class Reading(dj.Manual):
        definition = """
        # a sensor reading
        reading_id : int32
        ---
        value = null : float32   # volts
        unit = 'V' : varchar(4)
        """

    lines = repr(Reading.heading).splitlines()
    assert lines == ["# a sensor reading", "reading_id : int32", "---", "value = null : float32  # volts",
                     "unit = 'V' : varchar(4)"]
