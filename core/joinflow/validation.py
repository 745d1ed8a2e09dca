"""Checking rows against a table without inserting them: ``Table.validate(rows)``.

The checks are the insert path's own: the same field rules (unknown and missing attributes),
the backend's value encoders, the codecs' ``validate()``, and the value checks that
``Table.insert`` uses to name the value behind a refused statement (:func:`fit_problem`).
``Table.insert`` calls the helpers below, so validate and insert cannot drift apart.

Not checked (they need the database): duplicate primary keys, foreign keys, unique indexes.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .errors import DataJointError, DataTypeError
from .types import int_range

if TYPE_CHECKING:  # pragma: no cover
    from .heading import Attribute, Heading
    from .table import Table

MAX_LISTED = 20  # problems listed by ValidationResult.summary()


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
        where = f" for {self.table}" if self.table else ""
        if self.is_valid:
            return f"Validation passed{where}: {self.rows_checked} row(s) checked."
        lines = [f"Validation failed{where}: {len(self.errors)} problem(s) in {self.rows_checked} row(s) checked."]
        for err in self.errors[:MAX_LISTED]:
            row = "all rows" if err.row is None else f"row {err.row}"
            attr = f", `{err.attribute}`" if err.attribute else ""
            lines.append(f"  {row}{attr}: {err.message}")
        if len(self.errors) > MAX_LISTED:
            lines.append(f"  ... and {len(self.errors) - MAX_LISTED} more")
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


def missing_fields_message(table: str, missing: list[str]) -> str:
    return (f"Cannot insert into {table}: attribute(s) {', '.join(f'`{m}`' for m in missing)} have no value and "
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
        encode = None if codec is not None else backend.encoder(attr)
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
    if isinstance(exc, DataTypeError):
        return f"{text}; give a value that the {attr.type} column can hold."
    return (f"cannot convert the value ({type(exc).__name__}: {text}); give a value that the {attr.type} column "
            "can hold.")


__all__ = ["ValidationResult", "ValidationError", "validate_rows", "fit_problem", "null_problem",
           "unknown_fields", "missing_fields"]
