"""The value rules of inserts (:func:`value_rule`), and checking rows against a table without
inserting them: ``Table.validate(rows)``.

The checks are the insert path's own: the same field rules (unknown and missing attributes),
the backend's value encoders, the codecs' ``validate()``, and the value checks that
``Table.insert`` uses to name the value behind a refused statement (:func:`fit_problem`).
``Table.insert`` calls the helpers below, so validate and insert cannot drift apart.

Not checked (they need the database): duplicate primary keys, foreign keys, unique indexes.
"""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np

from .errors import DataJointError, DataTypeError
from .types import int_range

if TYPE_CHECKING:  # pragma: no cover
    from .heading import Attribute, Heading
    from .table import Table

MAX_LISTED = 10  # problems listed by ValidationResult.summary(), as DataJoint


class ValidationError(NamedTuple):
    """One problem: ``(row, attribute, message)``; ``row`` is None when it concerns every row."""

    row: int | None
    attribute: str | None
    message: str


@dataclass
class ValidationResult:
    """What ``Table.validate(rows)`` found.  True when the rows can be inserted as given."""

    is_valid: bool
    errors: list[ValidationError] = field(default_factory=list)
    rows_checked: int = 0
    table: str = ""  # the table's full name, for the summary

    def __bool__(self) -> bool:
        return self.is_valid

    def summary(self) -> str:
        """DataJoint's summary text (the first 10 problems), with the table named at the end."""
        where = f" ({self.table})" if self.table else ""
        if self.is_valid:
            return f"Validation passed: {self.rows_checked} rows checked{where}"
        lines = [f"Validation failed: {len(self.errors)} error(s) in {self.rows_checked} rows{where}"]
        for row, attribute, message in self.errors[:MAX_LISTED]:
            where_row = "All rows" if row is None else f"Row {row}"
            in_field = f" in field '{attribute}'" if attribute else ""
            lines.append(f"  {where_row}{in_field}: {message}")
        if len(self.errors) > MAX_LISTED:
            lines.append(f"  ... and {len(self.errors) - MAX_LISTED} more errors")
        return "\n".join(lines)

    def raise_if_invalid(self) -> None:
        """Raise a DataJointError listing the problems, unless the rows are valid."""
        if not self.is_valid:
            raise DataJointError(self.summary())


# --------------------------------------------------------------------------------------------
# the checks shared with Table.insert
# --------------------------------------------------------------------------------------------
def unknown_fields(heading: "Heading", fields: list[str]) -> list[str]:
    """The given fields an insert cannot write: not in the heading, or hidden non-key attributes."""
    known = heading.all_attributes
    return [f for f in fields if f not in known or (f.startswith("_") and f not in heading.primary_key)]


def unknown_field_message(table: str, heading: "Heading", name: str) -> str:
    return (f"`{name}` is not in the table heading of {table} (attributes: {', '.join(heading.names)}). "
            "Fix the name or pass ignore_extra_fields=True.")


def missing_fields(heading: "Heading", fields: list[str]) -> list[str]:
    """Attributes with neither a value among ``fields`` nor a default."""
    return [a.name for a in heading.all_attributes.values() if a.name not in fields and not a.has_default]


def missing_fields_message(table: str, missing: list[str], empty: bool = False) -> str:
    names = ', '.join(f'`{m}`' for m in missing)
    if empty:  # insert1({}): DataJoint's wording
        return (f"Cannot insert empty row into {table}: attribute(s) {names} require values (they have no "
                "default). Give a value for each (or declare it `= null`).")
    return (f"Cannot insert into {table}: attribute(s) {names} have no value and "
            "no default. Give a value for each (or declare it `= null`).")


def null_problem(attr: "Attribute") -> str | None:
    """Why ``attr`` cannot be None/NULL in an insert (None: it can, or the default fills it in)."""
    if attr.autoincrement or attr.default is not None or attr.nullable:
        return None
    if attr.in_key:
        return f"primary-key attribute `{attr.name}` is None. Every primary-key attribute needs a value."
    return (f"attribute `{attr.name}` is None but it is not nullable and has no default. Give a value "
            "(or declare it `= null`).")


def is_number_text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        float(v)
    except ValueError:
        return False
    return True


def fit_problem(attr: "Attribute", v: Any) -> str | None:
    """Why the column of ``attr`` cannot hold ``v``, a value as its backend encoder returned it
    (None: it can).  Used by ``Table.insert`` to name the value behind a refused statement."""
    if v is None:
        return None
    cat = attr.category
    hold = f"give a value that the {attr.type} column can hold"
    if cat == "int":
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, str) and v.strip().lstrip("-+").isdigit():
            v = int(v)
        if not isinstance(v, (int, np.integer)):
            return f"{v!r} is not an integer; {hold}."
        bounds = int_range(attr.type) if attr.core else None
        if bounds and not bounds[0] <= int(v) <= bounds[1]:
            return (f"{v!r} is outside the range of {attr.type} ({bounds[0]}..{bounds[1]}); give a value in range "
                    "or declare a wider integer type.")
    elif cat == "float":
        if not (isinstance(v, (int, float, np.number)) or is_number_text(v)):
            return f"{v!r} is not a number; {hold}."
    elif cat == "decimal":
        if not (isinstance(v, (int, float, decimal.Decimal)) or is_number_text(v)):
            return f"{v!r} is not a number; {hold}."
        info = attr.typeinfo
        if info is not None and info.precision:
            try:
                digits = decimal.Decimal(str(v)).quantize(decimal.Decimal(1).scaleb(-(info.scale or 0)),
                                                          rounding=decimal.ROUND_HALF_UP).as_tuple()
            except decimal.InvalidOperation:
                return f"{v!r} is too large for {attr.type}; give a smaller value or widen the column."
            if len(digits.digits) - max(0, -digits.exponent) > info.precision - (info.scale or 0):
                return f"{v!r} is out of range for {attr.type}; give a smaller value or widen the column."
    elif cat == "string":
        if not isinstance(v, str):
            return f"{v!r} is not text; {hold}."
        length = attr.typeinfo.length if attr.typeinfo else None
        if length and len(v) > length:
            return (f"the value has {len(v)} characters, more than the {length} of {attr.type}; shorten it or "
                    "declare a longer varchar.")
    elif cat == "enum":
        if not (isinstance(v, str) and v in attr.enum_values):
            return f"{v!r} is not one of {', '.join(repr(e) for e in attr.enum_values)}; give one of those."
    elif cat == "date":
        if not isinstance(v, (datetime.date, str)):
            return f"{v!r} is not a date; {hold}."
    elif cat == "datetime":
        if not isinstance(v, (datetime.datetime, datetime.date, str)):
            return f"{v!r} is not a datetime; {hold}."
    return None


# --------------------------------------------------------------------------------------------
# value rules: what an insert accepts, the same on every backend (docs/reliability.md)
# --------------------------------------------------------------------------------------------
FLOAT32_MAX = float(np.finfo(np.float32).max)  # larger magnitudes overflow a float32 column
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal) / 2  # smaller ones round to 0
TEMPORAL_NAMES = {"date": "date (YYYY-MM-DD)", "datetime": "datetime (YYYY-MM-DD HH:MM:SS)"}


def value_rule(attr: "Attribute") -> "Callable[[Any], Any] | None":
    """The check an insert or update applies to each value of ``attr`` before the backend encodes
    it, or None (the backend's encoder alone).  The function returns the value in a canonical
    Python form (int, float, Decimal, str, bool, naive datetime/date, or None for NULL) or raises
    DataTypeError saying why the column cannot hold the value exactly.  Backends never see the
    values it refuses, so every backend stores the same values and refuses the same ones:

    - integers: ints, integral floats/Decimals (``2.0``), bools (as 0/1), integer text; never
      ``1.7`` (no rounding), never out of range of a core int type.
    - floats: finite numbers; ±inf refused; float32 refuses magnitudes beyond its range and
      non-zero values that would round to 0.
    - decimal: finite numbers; Decimal NaN/±inf refused.
    - enum: exactly one of the members (case and spaces included).
    - bool: True/False, 0/1, and the words true/false/yes/no/t/f/y/n.
    - date/datetime: naive values only; a time-zone-aware value is refused, never shifted.
    - NaN (float; the numpy/pandas missing value) and blank text in a number column stay NULL.
    """
    cat = attr.category
    if cat == "int":
        return _int_rule(attr)
    if cat == "float":
        return _float_rule(attr)
    if cat == "decimal":
        return _decimal_rule(attr)
    if cat == "enum":
        return _enum_rule(attr)
    if cat == "bool":
        return _bool_rule(attr)
    if cat in ("date", "datetime"):
        return _temporal_rule(attr)
    return None


def insert_encoder(backend, attr: "Attribute") -> "Callable[[Any], Any] | None":
    """``value_rule(attr)`` followed by ``backend.encoder(attr)``: what insert, insert1, update1
    and validate apply to every value they send (restrictions use the backend encoder alone)."""
    rule = value_rule(attr)
    encode = backend.encoder(attr)
    if rule is None:
        return encode
    if encode is None or attr.category in ("int", "float", "enum"):
        # the rule's int/float/str is already what the drivers take (the base encoder returns them
        # as they are), so one call per value, not two
        return rule

    def checked(v, rule=rule, encode=encode):
        return encode(rule(v))

    return checked


def _not(v: Any, what: str, attr: "Attribute", fix: str = "") -> DataTypeError:
    fix = fix or f"; give a value that the {attr.type} column can hold"
    return DataTypeError(f"value {v!r:.80} is not {what}{fix}.")


def _finite_number(v: Any, attr: "Attribute", what: str):
    """A user value as int, float or Decimal (None: NULL), or raise: the shared part of the rules."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != v:
            return None  # NaN: the numpy/pandas missing value, stored as NULL
        if v in (math.inf, -math.inf):
            raise _not(v, "a finite number", attr, "; infinity cannot be stored (MySQL has no infinity): "
                       "store NULL or a finite value")
        return v
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            raise _not(v, "a finite number", attr, "; NaN and infinity cannot be stored: store NULL (None) "
                       "or a finite value")
        return v
    if isinstance(v, str):
        text = v.strip()
        if not text:
            return None  # blank text in a number column: NULL, as in restrictions
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = decimal.Decimal(text)
        except decimal.InvalidOperation:
            raise _not(v, what, attr) from None
        if not number.is_finite():
            raise _not(v, "a finite number", attr, "; NaN and infinity cannot be stored: store NULL (None) "
                       "or a finite value")
        return number
    raise _not(v, what, attr)


def _int_rule(attr: "Attribute"):
    bounds = int_range(attr.type) if attr.core else None
    lo, hi = bounds if bounds else (-math.inf, math.inf)

    def slow(v):
        number = _finite_number(v, attr, "a number")
        if number is None or type(number) is int:
            pass
        elif number == int(number):  # 2.0, Decimal('2.00'), '2.0'
            number = int(number)
        else:
            raise _not(v, "an integer", attr, f"; {attr.type} does not round it: round it yourself "
                       "(int(round(x))) or declare a float or decimal attribute")
        if number is not None and not lo <= number <= hi:
            raise DataTypeError(f"value {v!r:.80} is outside the range of {attr.type} ({lo}..{hi}); give a "
                                "value in range or declare a wider integer type.")
        return number

    def int_value(v):
        if type(v) is int and lo <= v <= hi:
            return v
        return slow(v)

    return int_value


def _float_rule(attr: "Attribute"):
    single = attr.core and attr.type == "float32"
    top = FLOAT32_MAX if single else math.inf

    def slow(v):
        number = _finite_number(v, attr, "a number")
        if number is None:
            return None
        try:
            value = float(number)
        except OverflowError:
            value = math.inf
        if not -top <= value <= top or value in (math.inf, -math.inf):
            raise DataTypeError(f"value {v!r:.80} is outside the range of {attr.type} (±{top:g}); give a value "
                                "in range or declare a float64 attribute.")
        if single and value and -FLOAT32_TINY < value < FLOAT32_TINY:
            raise DataTypeError(f"value {v!r:.80} is too small for float32 (it would be stored as 0); give 0, "
                                "a larger value, or declare a float64 attribute.")
        return value

    if single:
        def float_value(v):
            if type(v) is float and (1e-38 <= v <= top or -top <= v <= -1e-38 or v == 0.0):
                return v
            return slow(v)
    else:
        def float_value(v):
            if type(v) is float and -top < v < top:  # neither NaN nor ±inf
                return v
            return slow(v)

    return float_value


def _decimal_rule(attr: "Attribute"):
    info = attr.typeinfo
    digits = scale = None
    if info is not None and info.precision:
        scale = info.scale or 0
        digits, step = info.precision - scale, decimal.Decimal(1).scaleb(-scale)

    def decimal_value(v):
        number = _finite_number(v, attr, "a number")
        if digits is not None and number is not None:
            shape = decimal.Decimal(str(number)).quantize(step, rounding=decimal.ROUND_HALF_UP).as_tuple()
            if len(shape.digits) - max(0, -shape.exponent) > digits:
                raise DataTypeError(f"value {v!r:.80} is out of range for {attr.type} (at most {digits} digits before "
                                    "the point); give a smaller value or declare more digits.")
        return number

    return decimal_value


def _enum_rule(attr: "Attribute"):
    members = frozenset(attr.enum_values)
    listed = ", ".join(repr(e) for e in attr.enum_values)

    def enum_value(v):
        if type(v) is str and v in members:
            return v
        if v is None or (isinstance(v, float) and v != v):
            return None
        if isinstance(v, (str, np.str_)) or isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            text = str(v)
            if text in members:
                return text
        raise DataTypeError(f"value {v!r:.80} is not one of {listed}; give one of those exactly (enum values are "
                            "matched case by case and space by space).")

    return enum_value


TRUE_WORDS = frozenset(("true", "1", "yes", "t", "y"))
FALSE_WORDS = frozenset(("false", "0", "no", "f", "n"))


def _bool_rule(attr: "Attribute"):
    def bool_value(v):
        if v is True or v is False or v is None:
            return v
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, (float, np.floating)) and v != v:
            return None
        if isinstance(v, (int, float, np.integer, np.floating, decimal.Decimal)) and v in (0, 1):
            return bool(v)
        if isinstance(v, str):
            low = v.strip().lower()
            if low in TRUE_WORDS:
                return True
            if low in FALSE_WORDS:
                return False
        raise DataTypeError(f"value {v!r:.80} is not a boolean; give True or False (or 0/1, 'true'/'false').")

    return bool_value


def _temporal_rule(attr: "Attribute"):
    cat = attr.category
    plain = datetime.datetime if cat == "datetime" else datetime.date

    def slow(v):
        given = v
        if v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NaTType":
            return None
        if isinstance(v, np.datetime64):
            if np.isnat(v):
                return None
            v = v.astype("datetime64[us]").item()
        elif hasattr(v, "to_pydatetime"):  # pandas Timestamp
            v = v.to_pydatetime()
        elif isinstance(v, str):
            try:
                text = v.strip()
                v = datetime.date.fromisoformat(text) if cat == "date" else datetime.datetime.fromisoformat(text)
            except ValueError:
                raise _not(v, f"an ISO {TEMPORAL_NAMES[cat]}", attr) from None
        if isinstance(v, datetime.datetime):
            if v.tzinfo is not None and v.utcoffset() is not None:
                raise DataTypeError(
                    f"value {given!r:.100} has a time zone (UTC{v.strftime('%z')}); {attr.type} stores naive "
                    "values and joinflow does not shift them. Convert it first: "
                    "v.astimezone(datetime.timezone.utc).replace(tzinfo=None) for UTC, or "
                    "v.astimezone().replace(tzinfo=None) for local time.")
            if cat == "date":
                return v.date()  # a datetime in a date column keeps its date, as every backend does
            return v if type(v) is datetime.datetime else datetime.datetime.fromisoformat(v.isoformat())
        if isinstance(v, datetime.date):
            return v if type(v) is datetime.date else datetime.date(v.year, v.month, v.day)
        raise _not(v, f"a {TEMPORAL_NAMES[cat]}", attr)

    def temporal_value(v):
        if type(v) is plain and (cat == "date" or v.tzinfo is None):
            return v
        return slow(v)

    return temporal_value


# --------------------------------------------------------------------------------------------
# Table.validate
# --------------------------------------------------------------------------------------------
def validate_rows(table: "Table", rows: Any, *, ignore_extra_fields: bool = False) -> ValidationResult:
    """Check ``rows`` as ``table.insert(rows, ignore_extra_fields=...)`` would, without writing anything."""
    from .expression import QueryExpression, is_table_class

    name = table.full_table_name
    if is_table_class(rows) or isinstance(rows, QueryExpression):
        rows = (rows() if is_table_class(rows) else rows).to_dicts()
    elif isinstance(rows, (Mapping, np.void)):  # one row, as for insert1
        rows = [rows]
    if isinstance(rows, (list, tuple)) and rows and not isinstance(rows[0], (Mapping, np.void, str, bytes)):
        width = len(table.heading.names)  # positional rows: each must give every attribute
        wrong = [ValidationError(k, None, f"Incorrect number of attributes: {len(r)} given, {width} expected")
                 for k, r in enumerate(rows) if hasattr(r, "__len__") and len(r) != width]
        if wrong:
            from .table import warn_positional

            warn_positional(4)
            return ValidationResult(False, wrong, len(rows), name)
    try:
        fields, values, _ = table._normalize_rows(rows)
    except DataJointError as exc:
        return ValidationResult(False, [ValidationError(None, None, str(exc))], 0, name)
    errors: list[ValidationError] = []
    heading = table.heading
    unknown = unknown_fields(heading, fields)
    if unknown and not ignore_extra_fields:
        errors += [ValidationError(None, f, unknown_field_message(name, heading, f)) for f in unknown]
    checked = [(i, f) for i, f in enumerate(fields) if f not in unknown]
    if values:
        errors += [ValidationError(None, m, missing_fields_message(name, [m]))
                   for m in missing_fields(heading, [f for _, f in checked])]
    backend = table.connection.backend
    for i, f in checked:
        attr = heading[f]
        codec = attr.codec
        encode = None if codec is not None else insert_encoder(backend, attr)
        for k, row in enumerate(values):
            value = row[i]
            try:
                if codec is not None:
                    if value is not None:
                        codec.codec.validate(value)
                    stored = value
                else:
                    stored = encode(value) if encode is not None else value
            except Exception as exc:  # what the insert path would refuse the value with
                errors.append(ValidationError(k, f, _value_message(attr, exc, codec is not None)))
                continue
            if stored is None:
                problem = null_problem(attr)
            else:  # a codec's stored form is only known after encode(), which writes to stores
                problem = None if codec is not None else fit_problem(attr, stored)
            if problem:
                errors.append(ValidationError(k, f, problem))
    errors.sort(key=lambda e: (-1 if e.row is None else e.row))
    return ValidationResult(not errors, errors, len(values), name)


def _value_message(attr: "Attribute", exc: Exception, is_codec: bool) -> str:
    text = str(exc) or type(exc).__name__
    if is_codec:
        return f"{attr.type} refused the value ({type(exc).__name__}: {text}); give a value {attr.type} accepts."
    if isinstance(exc, DataTypeError):  # the value rules' messages end with their fix
        return text if text.endswith(".") else f"{text}; give a value that the {attr.type} column can hold."
    return (f"cannot convert the value ({type(exc).__name__}: {text}); give a value that the {attr.type} column "
            "can hold.")


__all__ = ["ValidationResult", "ValidationError", "validate_rows", "fit_problem", "null_problem", "value_rule",
           "insert_encoder", "unknown_fields", "missing_fields"]
