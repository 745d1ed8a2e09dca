"""Table.validate: rows checked as insert would check them, without inserting anything."""

from __future__ import annotations

import pandas as pd
import pytest

import joinflow as dj
from joinflow.errors import DataJointError

pytestmark = pytest.mark.backend


@pytest.fixture
def Sample(schema):
    @schema
    class Sample(dj.Manual):
        definition = """
        sample_id : int32
        ---
        label : varchar(8)
        kind = "blood" : enum('blood', 'tissue')
        level = null : int8
        weight = null : decimal(5,2)
        taken = null : date
        notes = null : <attach>
        """

    return Sample


GOOD = [
    {"sample_id": 1, "label": "a", "kind": "tissue", "level": 5, "weight": "123.45", "taken": "2024-05-06"},
    {"sample_id": 2, "label": "b", "kind": "blood", "level": None, "weight": None, "taken": None},
]


def test_valid_rows_pass_and_nothing_is_inserted(Sample):
    result = Sample.validate(GOOD)  # through the class, as in DataJoint
    assert result and result.is_valid and result.errors == [] and result.rows_checked == 2
    assert isinstance(result, dj.ValidationResult)
    assert result.summary().startswith("Validation passed: 2 rows checked")  # DataJoint's text
    result.raise_if_invalid()  # no error
    assert len(Sample()) == 0  # validate writes nothing
    Sample.insert(GOOD)  # and insert agrees
    assert len(Sample()) == 2
    assert Sample().validate(pd.DataFrame(GOOD)).rows_checked == 2  # any insert input
    assert Sample.validate([]).is_valid and Sample.validate([]).rows_checked == 0
    one = Sample.validate({"sample_id": 3})  # one row, as insert1 takes it
    assert not one and one.rows_checked == 1 and [e.attribute for e in one.errors] == ["label"]
    assert Sample.validate(Sample.proj("label")).rows_checked == 2  # a query, as insert takes it


def test_each_problem_names_row_attribute_and_fix(Sample, tmp_path):
    rows = [
        {"sample_id": 1, "label": "fine", "level": 3},
        {"sample_id": "x1", "label": "ok", "level": 3},               # not an integer
        {"sample_id": 3, "label": "far too long", "level": 3},        # longer than varchar(8)
        {"sample_id": 4, "label": "c", "level": 300},                 # outside int8
        {"sample_id": 5, "label": "d", "level": 1, "kind": "saliva"},  # not an enum member
        {"sample_id": None, "label": "e", "level": 1},                # primary key None
        {"sample_id": 7, "label": None, "level": 1},                  # not nullable, no default
        {"sample_id": 8, "label": "f", "taken": "yesterday"},         # not a date
        {"sample_id": 9, "label": "g", "weight": "12345.6"},          # too large for decimal(5,2)
        {"sample_id": 10, "label": "h", "notes": str(tmp_path / "missing.txt")},  # <attach> validate() refuses
    ]
    rows = [dict({"kind": "blood", "level": None, "weight": None, "taken": None, "notes": None}, **r) for r in rows]
    result = Sample.validate(rows)
    assert not result and not result.is_valid and result.rows_checked == len(rows)
    found = {(e.row, e.attribute) for e in result.errors}
    assert found == {(1, "sample_id"), (2, "label"), (3, "level"), (4, "kind"), (5, "sample_id"), (6, "label"),
                     (7, "taken"), (8, "weight"), (9, "notes")}
    by_place = {(e.row, e.attribute): e.message for e in result.errors}
    assert "is not a number" in by_place[1, "sample_id"] and "int32" in by_place[1, "sample_id"]
    assert "more than the 8" in by_place[2, "label"] and "shorten it" in by_place[2, "label"]
    assert "-128..127" in by_place[3, "level"]
    assert "'blood', 'tissue'" in by_place[4, "kind"]
    assert "primary-key attribute `sample_id` is None" in by_place[5, "sample_id"]
    assert "not nullable" in by_place[6, "label"] and "= null" in by_place[6, "label"]
    assert "ISO date" in by_place[7, "taken"]
    assert "out of range for decimal(5,2)" in by_place[8, "weight"]
    assert "<attach>" in by_place[9, "notes"] and "does not exist" in by_place[9, "notes"]
    # errors are (row, attribute, message) tuples, in row order
    row, attribute, message = result.errors[0]
    assert (row, attribute) == (1, "sample_id") and message
    summary = result.summary()
    assert Sample.full_table_name in summary and "Row 3 in field 'level'" in summary  # DataJoint's layout
    with pytest.raises(DataJointError, match="Row 2 in field 'label'"):
        result.raise_if_invalid()
    assert len(Sample()) == 0
    # insert refuses every row that validate refuses, and takes the one it accepts
    for k, bad in enumerate(rows):
        if k == 0:
            continue
        with pytest.raises((DataJointError, KeyError, ValueError, TypeError)):
            Sample.insert1(bad)
    Sample.insert1(rows[0])
    assert len(Sample()) == 1


def test_field_problems_concern_all_rows(Sample):
    rows = [{"sample_id": 1, "colour": "red"}, {"sample_id": 2, "colour": "blue"}]
    result = Sample.validate(rows)
    assert {(e.row, e.attribute) for e in result.errors} == {(None, "colour"), (None, "label")}
    messages = " ".join(e.message for e in result.errors)
    assert "ignore_extra_fields=True" in messages and "`label`" in messages and "no default" in messages
    assert "All rows in field 'colour'" in result.summary()
    # the same rule as insert: extra fields are dropped when asked
    rows = [dict(r, label="x") for r in rows]
    assert not Sample.validate(rows)
    assert Sample.validate(rows, ignore_extra_fields=True)
    with pytest.raises(KeyError, match="colour"):
        Sample.insert(rows)
    Sample.insert(rows, ignore_extra_fields=True)
    assert len(Sample()) == 2


def test_rows_that_cannot_be_read(Sample):
    result = Sample.validate([{"sample_id": 1, "label": "a"}, {"sample_id": 2}])
    assert not result and result.errors[0].row is None and "different fields" in result.errors[0].message
    result = Sample.validate([(1, "a", "blood", 1, None, None, None, None, "extra")])  # one too many
    assert not result and "Incorrect number of attributes: 9 given, 7 expected" in result.summary()
