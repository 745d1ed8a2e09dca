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


def compile_condition(expr, compiled, cond: Any, *, semantic_check: bool = True, ctx=None):
    """SQLAlchemy boolean clause for ``cond`` applied to ``expr`` (compiled as ``compiled``).

    SQL strings name attributes bare; the caller makes sure they resolve over ``compiled``.
    ``ctx`` (a ``BindContext``) names the bound values in the order ``condition_shape`` lists them.
    """
    from .expression import QueryExpression, U, is_table_class

    if isinstance(cond, U):
        return sa.true()
    if isinstance(cond, Not):
        clause = compile_condition(expr, compiled, cond.restriction, semantic_check=semantic_check, ctx=ctx)
        return sa.not_(clause)
    if cond is True or cond is False or isinstance(cond, np.bool_):
        return sa.true() if bool(cond) else sa.false()
    if isinstance(cond, str):
        check_string_attributes(expr, cond)
        return sa.literal_column("(" + cond + ")")
    if is_table_class(cond):
        cond = cond()
    if isinstance(cond, QueryExpression):
        return semijoin(expr, compiled, cond, semantic_check=semantic_check, ctx=ctx)
    mapping = _as_mapping(cond)
    if mapping is not None:
        return dict_condition(expr, compiled, mapping, ctx)
    if hasattr(cond, "to_dict") and hasattr(cond, "columns"):  # pandas DataFrame -> OR of rows
        cond = cond.to_dict("records")
    if isinstance(cond, np.ndarray) and cond.dtype.names:
        cond = list(cond)
    if isinstance(cond, AndList):
        return sa.and_(sa.true(), *[compile_condition(expr, compiled, c, semantic_check=semantic_check, ctx=ctx)
                                    for c in cond])
    if isinstance(cond, collections.abc.Iterable):
        items = list(cond)
        if not items:
            return sa.false()
        if len(items) > 1 and all(type(c) is dict for c in items):
            clause = keys_in(expr, compiled, items, ctx)
            if clause is not None:
                return clause
        return sa.or_(*[compile_condition(expr, compiled, c, semantic_check=semantic_check, ctx=ctx) for c in items])
    raise DataJointError(
        f"Invalid restriction of type {type(cond).__name__}: use a dict, a string, a query, a "
        "list (OR), dj.AndList, dj.Not, True or False."
    )


QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
COMPARED = re.compile(r"\b([a-z_][a-z0-9_]*)\s*(=|<>|!=|<=|>=|<|>|\s+(?:not\s+)?(?:in|like|is|between)\b)", re.I)


def check_string_attributes(expr, sql: str) -> None:
    """Catch the common typo early: a bare identifier compared that is not an attribute."""
    stripped = QUOTED.sub("''", sql)
    for match in COMPARED.finditer(stripped):
        name = match.group(1)
        if name.lower() in ("and", "or", "not", "null", "true", "false"):
            continue
        if name not in expr.heading and name == name.lower():
            raise UnknownAttributeError(
                f"Attribute `{name}` is not found in query (attributes: {', '.join(expr.heading.names)})."
            )


def _encoder(backend, attr):
    """``backend.encoder(attr)``, kept on the (immutable) attribute: headings share attributes."""
    memo = attr.__dict__.get("_encoder_memo")
    if memo is None or memo[0] is not backend:
        memo = (backend, backend.encoder(attr))
        attr.__dict__["_encoder_memo"] = memo  # not a dataclass field: eq/repr/replace ignore it
    return memo[1]


def _encode_restriction_value(backend, attr, name: str, value):
    """A restriction value as the driver takes it (the memo lookup inlined: this runs per value)."""
    memo = attr.__dict__.get("_encoder_memo")
    encode = memo[1] if memo is not None and memo[0] is backend else _encoder(backend, attr)
    if encode is None:
        return value
    try:
        return encode(value)
    except DataJointError as exc:
        raise DataJointError(f"Restriction on `{name}`: {exc}") from None


def encoded_items(expr, mapping: dict) -> list[tuple[str, Any]]:
    """(name, driver value or None) for the keys of ``mapping`` that are in the heading, in order."""
    visible = expr.heading.attributes
    backend = expr.connection.backend
    items = []
    for name, value in mapping.items():
        attr = visible.get(name)
        if attr is None:
            continue  # DataJoint semantics: keys absent from the heading are ignored
        if value is not None and attr.sql_expression is None:
            value = _encode_restriction_value(backend, attr, name, value)
        items.append((name, value))
    return items


def dict_condition(expr, compiled, mapping: dict, ctx=None):
    clauses = []
    for name, value in encoded_items(expr, mapping):
        col = compiled.cols[name]
        if value is None:
            clauses.append(col.is_(None))
        else:
            clauses.append(col == (bound(value) if ctx is None else ctx.bind(value)))
    return clauses[0] if len(clauses) == 1 else sa.and_(sa.true(), *clauses)


def keys_in(expr, compiled, keys: list, ctx=None):
    """A list of dicts with the same attributes and no None: ``a IN (..)`` or ``(a, b) IN ((..), ..)``
    (the backend writes the row form), values bound in the order ``condition_shape`` lists them.
    None for other lists (the caller writes an OR of the dicts)."""
    rows = [encoded_items(expr, key) for key in keys]
    names = [name for name, _value in rows[0]]
    if not names:
        return None
    wanted = set(names)
    for row in rows:
        if len(row) != len(names) or any(value is None for _name, value in row) or {n for n, _v in row} != wanted:
            return None
    params = []
    for row in rows:
        by_name = {name: (bound(value) if ctx is None else ctx.bind(value)) for name, value in row}
        params.append([by_name[name] for name in names])
    if len(names) == 1:
        return compiled.cols[names[0]].in_([row[0] for row in params])
    return expr.connection.backend.rows_in([compiled.cols[name] for name in names], params)


def dict_shape(expr, mapping, params: list) -> tuple:
    """``condition_shape`` of a mapping: what ``encoded_items`` does, in one pass.

    Key entries: ``name`` for a bound value (appended to ``params``), ``(name,)`` for IS NULL."""
    visible = expr.heading.attributes
    backend = None
    parts = ["D"]
    for name, value in mapping.items():
        attr = visible.get(name)
        if attr is None:
            continue  # as in encoded_items
        if value is not None and attr.sql_expression is None:
            if backend is None:
                backend = expr.connection.backend
            value = _encode_restriction_value(backend, attr, name, value)
        if value is None:
            parts.append((name,))
        else:
            params.append(value)
            parts.append(name)
    return tuple(parts)


def condition_shape(expr, cond: Any, params: list):
    """A hashable key for the SQL that ``compile_condition`` makes of ``cond``; its values go to ``params``.

    Two conditions with the same key compile to the same SQL text up to the bound values,
    which are appended to ``params`` in the order ``compile_condition`` binds them.
    Returns None for forms that are not worth caching (the caller compiles them directly).
    """
    if type(cond) is dict:  # the common cases first
        return dict_shape(expr, cond, params)
    if type(cond) is str:
        return ("S", cond)
    from .expression import QueryExpression, U, is_table_class

    if isinstance(cond, U):
        return ("U",)
    if isinstance(cond, Not):
        inner = condition_shape(expr, cond.restriction, params)
        return None if inner is None else ("N", inner)
    if cond is True or cond is False or isinstance(cond, np.bool_):
        return ("B", bool(cond))
    if isinstance(cond, str):
        return ("S", cond)
    if is_table_class(cond):
        cond = cond()
    if isinstance(cond, QueryExpression):
        key, values = cond._shape()
        if key is None:
            return None
        params.extend(values)
        return ("Q", key)
    mapping = _as_mapping(cond)
    if mapping is not None:
        return dict_shape(expr, mapping, params)
    if hasattr(cond, "to_dict") and hasattr(cond, "columns"):
        cond = cond.to_dict("records")
    if isinstance(cond, np.ndarray) and cond.dtype.names:
        cond = list(cond)
    if isinstance(cond, (AndList, list, tuple)):
        parts = []
        for c in cond:
            part = condition_shape(expr, c, params)
            if part is None:
                return None
            parts.append(part)
        return ("A" if isinstance(cond, AndList) else "O", tuple(parts))
    return None


def semijoin(expr, compiled, other, *, semantic_check: bool = True, ctx=None):
    """EXISTS (other matching expr on all shared attribute names)."""
    shared = [n for n in expr.heading.names if n in other.heading.names]
    if semantic_check:
        from .expression import assert_join_compatibility

        assert_join_compatibility(expr, other, shared)
    from .expression import exposed_columns, sql_identifiers

    inner = other._compile(ctx)
    if inner.tables & compiled.tables:
        inner = inner.as_subquery()
    # SQL text of a computed attribute of expr, compared inside the EXISTS, would see inner's
    # columns of the same names first: then compare with inner under names no text uses
    outer_text = set()
    for n in shared:
        col = compiled.cols[n]
        if getattr(col, "is_literal", False):
            outer_text |= sql_identifiers(col.name)
    if outer_text and outer_text & exposed_columns(inner.from_).keys():
        labels = {n: f"jf_semijoin_{i}" for i, n in enumerate(shared)}
        sub = sa.select(*[inner.cols[n].label(labels[n]) for n in shared]).select_from(inner.from_).where(
            *inner.where).subquery()
        eqs = [compiled.cols[n] == sub.c[labels[n]] for n in shared]
        return sa.exists(sa.select(sa.literal(1)).select_from(sub).where(*eqs))
    eqs = [compiled.cols[n] == inner.cols[n] for n in shared]
    query = sa.select(sa.literal(1)).select_from(inner.from_).where(*inner.where, *eqs)
    return sa.exists(query)
