"""Bad input gets a clear, typed error that names the table and/or attribute, and leaves the
database unchanged (no table created, no row inserted or changed).

Runs on SQLite, PostgreSQL and MySQL/MariaDB.
"""

from __future__ import annotations

import re

import pytest

import joinflow as dj
from joinflow.errors import (
    DataJointError,
    DeclarationError,
    DuplicateError,
    IntegrityError,
    MissingAttributeError,
    UnknownAttributeError,
)


def _declare_fails(schema, cls, error, match, context=None):
    """Decorating ``cls`` raises ``error`` matching ``match``; no table appears in the schema."""
    before = set(schema.list_tables())
    with pytest.raises(error, match=match) as info:
        schema(cls, context=context or {})
    assert set(schema.list_tables()) == before
    assert not cls().is_declared
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# malformed definitions
# ---------------------------------------------------------------------------------------------


def test_line_without_colon_is_quoted_in_the_error(schema):
    class Weighing(dj.Manual):
        definition = """
        weighing_id : int32
        ---
        weight float32
        """

    message = _declare_fails(schema, Weighing, DeclarationError, re.escape("weight float32"))
    assert "weighing" in message


def test_two_separators(schema):
    class Twice(dj.Manual):
        definition = """
        twice_id : int32
        ---
        a : int32
        ---
        b : int32
        """

    message = _declare_fails(schema, Twice, DeclarationError, "---")
    assert "twice" in message


@pytest.mark.parametrize("name", ["Name", "1x", "na-me", "camelCase"])
def test_bad_attribute_name(schema, name):
    class BadName(dj.Manual):
        definition = f"""
        bad_name_id : int32
        ---
        {name} : int32
        """

    message = _declare_fails(schema, BadName, DeclarationError, re.escape(name))
    assert "bad_name" in message


def test_underscore_names_are_reserved(schema):
    class Hidden(dj.Manual):
        definition = """
        hidden_id : int32
        ---
        _hidden : int32
        """

    message = _declare_fails(schema, Hidden, DeclarationError, "_hidden")
    assert "reserved" in message


def test_duplicate_attribute_name(schema):
    class Dup(dj.Manual):
        definition = """
        dup_id : int32
        ---
        value : int32
        value : float64
        """

    _declare_fails(schema, Dup, DeclarationError, "value")


def test_nullable_primary_key_attribute(schema):
    class NullKey(dj.Manual):
        definition = """
        x = null : int32
        ---
        y : int32
        """

    message = _declare_fails(schema, NullKey, DeclarationError, "`x`|\\bx\\b")
    assert "null" in message.lower()


def test_nullable_foreign_key_in_primary_key(schema):
    @schema
    class Parent(dj.Manual):
        definition = """
        parent_id : int32
        """

    class Child(dj.Manual):
        definition = """
        -> [nullable] Parent
        child_id : int32
        """

    message = _declare_fails(schema, Child, DeclarationError, "(?i)nullable", {"Parent": Parent})
    assert "child" in message


def test_unknown_foreign_key_option(schema):
    @schema
    class Parent(dj.Manual):
        definition = """
        parent_id : int32
        """

    class Child(dj.Manual):
        definition = """
        child_id : int32
        ---
        -> [optional] Parent
        """

    _declare_fails(schema, Child, DeclarationError, '(?i)invalid foreign key option "optional"', {"Parent": Parent})


@pytest.mark.parametrize("bad_type", ["int24", "uint8", "floaty", "float16", "uint64"])
def test_unknown_or_unsupported_type(schema, bad_type):
    class Typed(dj.Manual):
        definition = f"""
        typed_id : int32
        ---
        amount : {bad_type}
        """

    message = _declare_fails(schema, Typed, DeclarationError, f"Unsupported attribute type {bad_type}")
    assert "amount" in message


def test_auto_populated_table_with_own_key_attribute(schema):
    @schema
    class Source(dj.Manual):
        definition = """
        source_id : int32
        """

    class Result(dj.Computed):
        definition = """
        -> Source
        extra_id : int32
        ---
        value : float64
        """

        def make(self, key):  # pragma: no cover - never populated
            pass

    # allowed by default since DataJoint 2.3.5 accepts it; the strict setting refuses it
    schema.connection.config["jobs.allow_new_pk_fields_in_computed_tables"] = False
    _declare_fails(schema, Result, DeclarationError, "extra_id", {"Source": Source})


# ---------------------------------------------------------------------------------------------
# foreign keys to things that are not declared tables; bad indexes
# ---------------------------------------------------------------------------------------------


def test_foreign_key_to_unknown_name(schema):
    class Orphan(dj.Manual):
        definition = """
        orphan_id : int32
        ---
        -> Nowhere
        """

    message = _declare_fails(schema, Orphan, DeclarationError, "Nowhere")
    assert "orphan" in message


def test_foreign_key_to_something_that_is_not_a_table(schema):
    class Orphan(dj.Manual):
        definition = """
        orphan_id : int32
        ---
        -> helper
        """

    _declare_fails(schema, Orphan, DeclarationError, "helper", {"helper": 42})


def test_foreign_key_to_undecorated_class(schema):
    class Undeclared(dj.Manual):
        definition = """
        undeclared_id : int32
        """

    class Child(dj.Manual):
        definition = """
        child_id : int32
        ---
        -> Undeclared
        """

    _declare_fails(schema, Child, DataJointError, "Undeclared", {"Undeclared": Undeclared})


def test_foreign_key_to_dropped_table(schema):
    @schema
    class Gone(dj.Manual):
        definition = """
        gone_id : int32
        """

    Gone.drop_quick()
    assert "gone" not in schema.list_tables()

    class Child(dj.Manual):
        definition = """
        child_id : int32
        ---
        -> Gone
        """

    _declare_fails(schema, Child, DataJointError, "gone", {"Gone": Gone})


@pytest.mark.parametrize("index", ["index (nope)", "unique index (value, nope)"])
def test_index_over_unknown_attribute(schema, index):
    class Indexed(dj.Manual):
        definition = f"""
        indexed_id : int32
        ---
        value : int32
        {index}
        """

    message = _declare_fails(schema, Indexed, DeclarationError, "nope")
    assert "indexed" in message


# ---------------------------------------------------------------------------------------------
# insert
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def person(schema):
    @schema
    class Person(dj.Manual):
        definition = """
        person_id : int32
        ---
        name : varchar(16)
        age = null : int32
        """

    return Person


@pytest.fixture
def pet(schema, person):
    Person = person  # noqa: N806 - resolved by name in the definition

    @schema
    class Pet(dj.Manual):
        definition = """
        pet_id : int32
        ---
        -> Person
        species : varchar(16)
        """

    return Pet


def test_duplicate_primary_key_keeps_first_row(person):
    person.insert1({"person_id": 1, "name": "first"})
    with pytest.raises(DuplicateError, match="skip_duplicates") as info:
        person.insert1({"person_id": 1, "name": "second"})
    assert "person" in str(info.value)
    assert person.to_dicts() == [{"person_id": 1, "name": "first", "age": None}]
    person.insert1({"person_id": 1, "name": "second"}, skip_duplicates=True)  # opt-in: silently skipped
    assert person.to_dicts() == [{"person_id": 1, "name": "first", "age": None}]


def test_missing_parent_row(person, pet):
    with pytest.raises(IntegrityError) as info:
        pet.insert1({"pet_id": 1, "person_id": 99, "species": "cat"})
    assert "pet" in str(info.value)
    assert len(pet()) == 0


WRONG_TYPES = [
    ("int32", "abc"),
    ("int32", {"a": 1}),
    ("float64", "abc"),
    ("decimal(6,2)", "abc"),
    ("date", "not a date"),
    ("datetime", "not a datetime"),
    ("bool", "perhaps"),
    ("uuid", 12345),
    ("bytes", "text, not bytes"),
    ("varchar(32)", b"raw bytes"),
    ("json", {1, 2, 3}),
]


@pytest.mark.parametrize("core_type,value", WRONG_TYPES, ids=[f"{t}={v!r}" for t, v in WRONG_TYPES])
def test_wrong_value_type_names_the_attribute(schema, core_type, value):
    @schema
    class Reading(dj.Manual):
        definition = f"""
        reading_id : int32
        ---
        measured : {core_type}
        """

    with pytest.raises(DataJointError, match="measured") as info:
        Reading.insert1({"reading_id": 1, "measured": value})
    assert type(info.value) is not DataJointError, "expected a specific DataJointError subclass"
    assert len(Reading()) == 0


def test_unknown_attribute_is_a_key_error(person):
    with pytest.raises(UnknownAttributeError, match="nickname") as info:
        person.insert1({"person_id": 1, "name": "ann", "nickname": "a"})
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, DataJointError)
    assert "nickname" in str(info.value) and "person" in str(info.value)
    assert len(person()) == 0
    with pytest.raises(KeyError):
        person.insert([{"person_id": 2, "name": "bob", "nickname": "b"}])
    assert len(person()) == 0
    person.insert1({"person_id": 1, "name": "ann", "nickname": "a"}, ignore_extra_fields=True)
    assert person.to_dicts() == [{"person_id": 1, "name": "ann", "age": None}]


def test_none_in_primary_key(person):
    with pytest.raises(DataJointError, match="person_id") as info:
        person.insert1({"person_id": None, "name": "ann"})
    assert type(info.value) is not DataJointError
    assert len(person()) == 0


def test_missing_primary_key_attribute(person):
    with pytest.raises(MissingAttributeError, match="person_id"):
        person.insert1({"name": "ann"})
    assert len(person()) == 0


def test_missing_required_secondary_attribute(person):
    with pytest.raises(MissingAttributeError, match="name") as info:
        person.insert1({"person_id": 1, "age": 3})
    assert "`age`" not in str(info.value)  # only the missing attribute is named
    assert len(person()) == 0


def test_none_for_required_secondary_attribute(person):
    with pytest.raises(MissingAttributeError, match="name"):
        person.insert1({"person_id": 1, "name": None})
    assert len(person()) == 0


@pytest.mark.parametrize(
    "rows",
    [
        [{"person_id": 1, "name": "a"}, {"person_id": 2, "name": "b", "age": 3}],
        [{"person_id": 1, "name": "a", "age": 3}, {"person_id": 2, "name": "b"}],
        [{"person_id": 1, "name": "a"}, {"person_id": 2, "age": 4}],
        [(1, "a"), (2, "b", 3)],
    ],
    ids=["extra-field", "missing-field", "other-field", "positional"],
)
def test_rows_with_different_fields(person, rows):
    with pytest.raises(DataJointError, match="different fields"):
        person.insert(rows)
    assert len(person()) == 0


@pytest.mark.parametrize(
    "bad_row",
    [
        {"pet_id": 1, "person_id": 1, "species": "dog"},  # duplicates the first row of the batch
        {"pet_id": 9, "person_id": 99, "species": "dog"},  # no such parent
        {"pet_id": 9, "person_id": 1, "species": "far too long a species name"},  # does not fit
        {"pet_id": 9, "person_id": 1, "species": b"bytes"},  # wrong type
        {"pet_id": 9, "person_id": 1, "species": None},  # missing required value
    ],
    ids=["duplicate", "missing-parent", "too-long", "wrong-type", "null"],
)
def test_batch_with_one_bad_row_inserts_nothing(person, pet, bad_row):
    person.insert1({"person_id": 1, "name": "ann"})
    pet.insert1({"pet_id": 100, "person_id": 1, "species": "fish"})
    good = [{"pet_id": i, "person_id": 1, "species": "cat"} for i in range(1, 4)]
    with pytest.raises(DataJointError):
        pet.insert(good + [bad_row])
    assert pet.keys() == [{"pet_id": 100}]


def test_direct_insert_into_computed_table(schema):
    @schema
    class Source(dj.Manual):
        definition = """
        source_id : int32
        """

    @schema
    class Result(dj.Computed):
        definition = """
        -> Source
        ---
        value : float64
        """

        def make(self, key):  # pragma: no cover - not populated here
            self.insert1({**key, "value": 0.0})

    Source.insert1({"source_id": 1})
    with pytest.raises(DataJointError, match="allow_direct_insert") as info:
        Result.insert1({"source_id": 1, "value": 1.0})
    assert "result" in str(info.value)
    assert len(Result()) == 0
    Result.insert1({"source_id": 1, "value": 1.0}, allow_direct_insert=True)
    assert Result.fetch1("value") == 1.0


# ---------------------------------------------------------------------------------------------
# update1
# ---------------------------------------------------------------------------------------------


def test_update1_without_full_key(schema):
    @schema
    class Cell(dj.Manual):
        definition = """
        plate : int32
        well : int32
        ---
        count : int32
        """

    Cell.insert1({"plate": 1, "well": 1, "count": 5})
    with pytest.raises(DataJointError, match="well"):
        Cell.update1({"plate": 1, "count": 6})
    assert Cell.fetch1("count") == 5


def test_update1_of_missing_row(person):
    person.insert1({"person_id": 1, "name": "ann"})
    with pytest.raises(DataJointError, match="one existing entry"):
        person.update1({"person_id": 2, "name": "bob"})
    assert person.to_dicts() == [{"person_id": 1, "name": "ann", "age": None}]


def test_update1_of_unknown_attribute(person):
    person.insert1({"person_id": 1, "name": "ann"})
    with pytest.raises(UnknownAttributeError, match="nickname"):
        person.update1({"person_id": 1, "nickname": "a"})
    assert person.fetch1("name") == "ann"


def test_update1_with_wrong_value_type(person):
    person.insert1({"person_id": 1, "name": "ann", "age": 30})
    with pytest.raises(DataJointError, match="age") as info:
        person.update1({"person_id": 1, "age": "old"})
    assert type(info.value) is not DataJointError
    assert person.fetch1("age") == 30


# ---------------------------------------------------------------------------------------------
# restriction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", ["nope = 1", "abs(nope) > 1", "age > 1 and nope < 3", "NOPE = 1"])
def test_restriction_string_with_unknown_attribute(person, condition):
    person.insert1({"person_id": 1, "name": "ann", "age": 3})
    with pytest.raises(UnknownAttributeError, match="(?i)nope"):
        (person & condition).to_dicts()
    with pytest.raises(UnknownAttributeError, match="(?i)nope"):
        len(person & condition)
    assert len(person()) == 1


def test_restriction_with_unknown_dict_key_is_ignored(person):
    # DataJoint semantics: keys that are not attributes are silently ignored (not an error)
    person.insert([{"person_id": 1, "name": "ann"}, {"person_id": 2, "name": "bob"}])
    assert len(person & {"nope": 1}) == 2
    assert len(person & {"nope": 1, "person_id": 2}) == 1
