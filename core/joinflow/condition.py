"""Restriction conditions: the forms accepted by ``&`` and ``-``, compiled to SQLAlchemy."""

from __future__ import annotations

import collections.abc
import re
from typing import Any

import numpy as np
import sqlalchemy as sa

from .backends.base import bound
from .errors import DataJointError, UnknownAttributeError


class AndList(list):
    """A list of conditions that must all hold (a plain list means *any*)."""


class Not:
    """The negation of a condition: ``q & dj.Not(cond)`` equals ``q - cond``."""

    def __init__(self, restriction: Any):
        self.restriction = restriction

    def __repr__(self) -> str:
        return f"Not({self.restriction!r})"


IDENT = re.compile(r"\b([a-z_][a-z0-9_]*)\b")


def _as_mapping(cond: Any) -> dict | None:
    if isinstance(cond, collections.abc.Mapping):
        return dict(cond)
    if isinstance(cond, np.void) and cond.dtype.names:
        return {n: cond[n] for n in cond.dtype.names}
    if hasattr(cond, "to_dict") and hasattr(cond, "index") and not hasattr(cond, "columns"):
        return cond.to_dict()  # pandas Series (a row)
    return None


def compile_condition(expr, compiled, cond: Any, *, semantic_check: bool = True):
    """SQLAlchemy boolean clause for ``cond`` applied to ``expr`` (compiled as ``compiled``).

    SQL strings name attributes bare; the caller makes sure they resolve over ``compiled``.
    """
    from .expression import QueryExpression, is_table_class

    from .expression import U

    if isinstance(cond, U):
        return sa.true()
    if isinstance(cond, Not):
        clause = compile_condition(expr, compiled, cond.restriction, semantic_check=semantic_check)
        return sa.not_(clause)
    if cond is True or cond is False or isinstance(cond, np.bool_):
        return sa.true() if bool(cond) else sa.false()
    if isinstance(cond, str):
        check_string_attributes(expr, cond)
        return sa.literal_column("(" + cond + ")")
    if is_table_class(cond):
        cond = cond()
    if isinstance(cond, QueryExpression):
        return semijoin(expr, compiled, cond, semantic_check=semantic_check)
    mapping = _as_mapping(cond)
    if mapping is not None:
        return dict_condition(expr, compiled, mapping)
    if hasattr(cond, "to_dict") and hasattr(cond, "columns"):  # pandas DataFrame -> OR of rows
        cond = cond.to_dict("records")
    if isinstance(cond, np.ndarray) and cond.dtype.names:
        cond = list(cond)
    if isinstance(cond, AndList):
        return sa.and_(sa.true(), *[compile_condition(expr, compiled, c, semantic_check=semantic_check) for c in cond])
    if isinstance(cond, collections.abc.Iterable):
        items = list(cond)
        if not items:
            return sa.false()
        return sa.or_(*[compile_condition(expr, compiled, c, semantic_check=semantic_check) for c in items])
    raise DataJointError(
        f"Invalid restriction of type {type(cond).__name__}: use a dict, a string, a query, a "
        "list (OR), dj.AndList, dj.Not, True or False."
    )


def check_string_attributes(expr, sql: str) -> None:
    """Catch the common typo early: a bare identifier compared that is not an attribute."""
    stripped = re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", sql)
    for match in re.finditer(r"\b([a-z_][a-z0-9_]*)\s*(=|<>|!=|<=|>=|<|>|\s+(?:not\s+)?(?:in|like|is|between)\b)",
                             stripped, re.I):
        name = match.group(1)
        if name.lower() in ("and", "or", "not", "null", "true", "false"):
            continue
        if name not in expr.heading.names and name == name.lower():
            raise UnknownAttributeError(
                f"Attribute `{name}` is not found in query (attributes: {', '.join(expr.heading.names)})."
            )


def dict_condition(expr, compiled, mapping: dict):
    heading = expr.heading
    backend = expr.connection.backend
    clauses = []
    for name, value in mapping.items():
        if name not in heading.names:
            continue  # DataJoint semantics: keys absent from the heading are ignored
        col = compiled.cols[name]
        attr = heading[name]
        if value is None:
            clauses.append(col.is_(None))
            continue
        encode = backend.encoder(attr) if attr.sql_expression is None else None
        try:
            value = encode(value) if encode else value
        except DataJointError as exc:
            raise DataJointError(f"Restriction on `{name}`: {exc}") from None
        if value is None:
            clauses.append(col.is_(None))
        else:
            clauses.append(col == bound(value))
    return sa.and_(sa.true(), *clauses)


def semijoin(expr, compiled, other, *, semantic_check: bool = True):
    """EXISTS (other matching expr on all shared attribute names)."""
    shared = [n for n in expr.heading.names if n in other.heading.names]
    if semantic_check:
        from .expression import assert_join_compatibility

        assert_join_compatibility(expr, other, shared)
    inner = other._compile()
    if inner.tables & compiled.tables:
        inner = inner.as_subquery()
    eqs = [compiled.cols[n] == inner.cols[n] for n in shared]
    query = sa.select(sa.literal(1)).select_from(inner.from_).where(*inner.where, *eqs)
    return sa.exists(query)
