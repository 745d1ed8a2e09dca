"""Values are stored exactly or refused, by the same rule on SQLite, PostgreSQL and MySQL.

The rule (``joinflow.validation.value_rule``) runs before the server sees a value, for
insert, insert1, batched inserts, update1 and validate alike. A refused value raises a
``DataTypeError`` naming the table, the attribute and the value, and nothing is written.
docs/reliability.md ("Values stored exactly or refused") lists the rules.
"""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import pandas as pd
import pytest

import joinflow as dj
from joinflow.errors import DataJointError, DataTypeError

pytestmark = pytest.mark.backend

PLUS5 = datetime.timezone(datetime.timedelta(hours=5))
NOON = datetime.datetime(2024, 1, 1, 12, 0)


@pytest.fixture
def Measure(schema):
    @schema
    class Measure(dj.Manual):
        definition = """
        measure_id : int32
        ---
        small = null : int8
        big = null : int64
        single = null : float32
        double = null : float64
        kind = null : enum('a', 'b')
        flag = null : bool
        amount = null : decimal(6,2)
        taken = null : datetime
        day = null : date
        """

    Measure.insert1({"measure_id": 0, "small": 1, "kind": "b", "taken": NOON})  # a canary row
    return Measure


def contents(table) -> list[dict]:
    return table.to_dicts(order_by="measure_id")


def refused(table, attribute: str, value, *, through: str = "insert1") -> str:
    """Insert ``value`` into ``attribute``; it must be refused by name and leave the table unchanged."""
    before = contents(table)
    row = {"measure_id": 1, attribute: value}
    with pytest.raises(DataTypeError) as info:
        if through == "insert1":
            table.insert1(row)
        elif through == "batch":  # the bad row last, after a full chunk of good ones
            good = [{"measure_id": i, attribute: None} for i in range(10, 20)]
            table.insert(good + [row], chunk_size=5)
        elif through == "update1":
            table.update1({"measure_id": 0, attribute: value})
        else:
            raise AssertionError(through)
    message = str(info.value)
    assert table.table_name in message and f"`{attribute}`" in message, message
    assert repr(value)[:30] in message or str(value) in message, message
    assert contents(table) == before, f"a refused {value!r} changed {attribute}"
    return message


def stored(table, attribute: str, value, measure_id: int = 1):
    table.insert1({"measure_id": measure_id, attribute: value})
    return (table & {"measure_id": measure_id}).fetch1(attribute)


# ---------------------------------------------------------------------------------------------
# integers
# ---------------------------------------------------------------------------------------------
def test_integer_columns_never_round(Measure):
    for attribute, value in [("small", 1.7), ("big", np.float64(2.5)), ("small", "1.5"),
                             ("big", decimal.Decimal("2.5")), ("small", -0.5)]:
        message = refused(Measure, attribute, value)
        assert "not an integer" in message and "round" in message


def test_integer_columns_take_integral_values_and_bools(Measure):
    assert stored(Measure, "small", 2.0, 1) == 2
    assert stored(Measure, "big", np.float32(3.0), 2) == 3
    assert stored(Measure, "small", "7", 3) == 7
    assert stored(Measure, "big", decimal.Decimal("4.00"), 4) == 4
    assert stored(Measure, "small", True, 5) == 1  # PostgreSQL refused a boolean here before
    assert stored(Measure, "small", np.False_, 6) == 0
    assert stored(Measure, "big", 2 ** 63 - 1, 7) == 2 ** 63 - 1


def test_integer_out_of_range_is_refused_before_the_server(Measure):
    for value in [128, -129, 1e3]:
        message = refused(Measure, "small", value)
        assert "range of int8" in message and "Server said" not in message


# ---------------------------------------------------------------------------------------------
# enum, bool
# ---------------------------------------------------------------------------------------------
def test_enum_matches_exactly(Measure):
    for value in ["A", "a ", " b", 1, "B"]:  # MySQL stored 'A' and 'a ' as 'a', and 1 as the first member
        assert "'a', 'b'" in refused(Measure, "kind", value)
    assert stored(Measure, "kind", "a") == "a"


def test_bool_takes_only_true_false(Measure):
    for value in [2, 0.5, -1, "perhaps"]:  # 2 and 0.5 were stored as True
        refused(Measure, "flag", value)
    assert stored(Measure, "flag", 1, 1) is True
    assert stored(Measure, "flag", "false", 2) is False


# ---------------------------------------------------------------------------------------------
# floats and decimals
# ---------------------------------------------------------------------------------------------
def test_float32_out_of_range_is_refused(Measure):
    for value in [1e40, -1e40, 3.5e38, 1e-50, "1e39"]:  # SQLite stored them
        refused(Measure, "single", value)
    assert stored(Measure, "single", 3.4e38) == pytest.approx(3.4e38, rel=1e-6)


def test_infinity_is_refused(Measure):
    for attribute, value in [("double", float("inf")), ("double", -np.inf), ("single", float("inf")),
                             ("double", "inf")]:  # SQLite and PostgreSQL stored them; MySQL cannot
        assert "finite" in refused(Measure, attribute, value)


def test_nan_in_a_number_column_is_null(Measure):
    assert stored(Measure, "double", float("nan"), 1) is None
    assert stored(Measure, "small", np.nan, 2) is None


def test_decimal_nan_and_infinity_are_refused(Measure):
    for value in [decimal.Decimal("nan"), decimal.Decimal("-Infinity"), decimal.Decimal("sNaN"), "NaN",
                  float("inf")]:  # PostgreSQL stored NaN; the others raised a TypeError or a driver error
        assert "finite" in refused(Measure, "amount", value)
    for value in [decimal.Decimal("10000"), 9999.999, "-12345.6"]:  # refused before the server, not by it
        message = refused(Measure, "amount", value)
        assert "out of range for decimal(6,2)" in message and "Server said" not in message
    assert stored(Measure, "amount", decimal.Decimal("12.34")) == decimal.Decimal("12.34")


# ---------------------------------------------------------------------------------------------
# time zones
# ---------------------------------------------------------------------------------------------
def test_time_zone_aware_values_are_refused_not_shifted(Measure):
    # SQLite kept the offset, PostgreSQL stored 07:00, MySQL 12:00 (another instant)
    for attribute, value in [("taken", NOON.replace(tzinfo=PLUS5)), ("taken", "2024-01-01T12:00:00+05:00"),
                             ("taken", pd.Timestamp("2024-01-01 12:00", tz="UTC")),
                             ("day", NOON.replace(tzinfo=PLUS5))]:
        message = refused(Measure, attribute, value)
        assert "time zone" in message and "astimezone" in message


def test_naive_datetimes_are_stored_as_given(Measure):
    assert stored(Measure, "taken", NOON, 1) == NOON
    assert stored(Measure, "taken", "2024-01-01T12:00:00", 2) == NOON
    assert stored(Measure, "taken", np.datetime64("2024-01-01T12:00"), 3) == NOON


# ---------------------------------------------------------------------------------------------
# every write path uses the same rule
# ---------------------------------------------------------------------------------------------
BAD = [("small", 1.7), ("kind", "A"), ("single", 1e40), ("taken", NOON.replace(tzinfo=PLUS5)),
       ("amount", decimal.Decimal("nan")), ("flag", 2)]


def test_batched_insert_refuses_all_rows(Measure):
    for attribute, value in BAD:
        refused(Measure, attribute, value, through="batch")


def test_update1_refuses_the_same_values(Measure):
    for attribute, value in BAD:
        refused(Measure, attribute, value, through="update1")


def test_dataframe_insert_uses_the_same_rule(Measure):
    frame = pd.DataFrame({"measure_id": [1, 2], "small": [1.0, 1.7]})
    with pytest.raises(DataTypeError, match="small"):
        Measure.insert(frame)
    assert len(Measure()) == 1
    Measure.insert(pd.DataFrame({"measure_id": [1, 2], "small": [1.0, np.nan]}))
    assert Measure.to_dicts(order_by="measure_id")[1:] == [
        dict(measure_id=1, small=1, big=None, single=None, double=None, kind=None, flag=None, amount=None,
             taken=None, day=None),
        dict(measure_id=2, small=None, big=None, single=None, double=None, kind=None, flag=None, amount=None,
             taken=None, day=None)]


def test_validate_reports_what_insert_refuses(Measure):
    rows = [{"measure_id": 1, "small": 1.7}, {"measure_id": 2, "kind": "A"},
            {"measure_id": 3, "taken": NOON.replace(tzinfo=PLUS5)}, {"measure_id": 4, "single": 2.5}]
    rows = [dict({"small": None, "kind": None, "taken": None, "single": None}, **r) for r in rows]
    result = Measure.validate(rows)
    assert {(e.row, e.attribute) for e in result.errors} == {(0, "small"), (1, "kind"), (2, "taken")}
    with pytest.raises(DataJointError):
        Measure.insert(rows)
    assert len(Measure()) == 1


def test_restrictions_are_not_checked_as_inserts(Measure):
    """A restriction with a value no row can hold matches nothing; it is not an error."""
    assert len(Measure & {"small": 1.7}) == 0
    assert len(Measure & {"small": 1}) == 1
    assert len(Measure & {"small": True}) == 1  # bools compare as 0/1 (PostgreSQL raised before)
    assert len(Measure & {"kind": "b"}) == 1
