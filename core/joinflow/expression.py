"""Query expressions: immutable trees compiled by one compiler to SQLAlchemy Core.

Every expression has a heading (its attributes and primary key) and compiles to a
``Compiled`` triple — a FROM clause, a mapping from attribute name to column
expression, and WHERE clauses.  Restrictions are kept on the expression and applied
at compile time, so ``(Session & key).delete()`` knows exactly what to delete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import html
import itertools
import re
import uuid
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import sqlalchemy as sa

from .backends.base import VALUE
from .condition import AndList, Not, compile_condition, condition_shape, dict_shape
from .errors import BlobError, DataJointError, UnknownAttributeError
from .heading import Attribute, Heading
from .storage import prefetch

MAX_ROWS = 2**63 - 1  # the largest LIMIT / OFFSET every backend takes (a signed 64-bit integer)


def _row_count(value, name: str, where: str) -> int | None:
    """``value`` as a row count for LIMIT/OFFSET: None, or an integer from 0 to 2**63-1."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DataJointError(
            f"{where}: {name} must be a whole number of rows (an int from 0 to 2**63-1) or None, got "
            f"{value!r} ({type(value).__name__}). Pass e.g. {name}=10."
        )
    number = int(value)
    if number < 0 or number > MAX_ROWS:
        raise DataJointError(
            f"{where}: {name}={number} is out of range; it must be from 0 to 2**63-1 ({MAX_ROWS}) rows"
            + (" (a negative limit does not mean 'all rows': pass limit=None)." if name == "limit" and number < 0
               else ".")
        )
    return number


def check_limit_offset(limit, offset, where: str = "fetch") -> tuple[int | None, int | None]:
    """``(limit, offset)`` checked the same way for every backend and every way a query is read
    (fetch, to_dicts, to_arrays, keys, head, tail, cursor, preview, ``dj.Top``): None or a
    Python ``int`` from 0 to 2**63-1 each; anything else raises one clear DataJointError."""
    return _row_count(limit, "limit", where), _row_count(offset, "offset", where)


@dataclass
class Compiled:
    """The pieces of one query: ``SELECT cols FROM from_ WHERE where``.

    ``from_`` is a table, a subquery, or a left-deep chain of joins of those (never a join nested
    on the right: SQLite does not let an outer ON name the tables inside a parenthesised join).
    SQL text written by the user (string restrictions, computed attributes) names attributes
    bare, so it is only correct in a scope where each name it uses means the attribute:
    ``unsafe`` lists the attribute names that do not (renamed, computed, join namesakes) and
    ``text`` the identifiers used by text already placed in ``where``/``cols``.  Text is never
    placed where it would be ambiguous: the query is wrapped as a subquery first (``text_ready``),
    and a join wraps a side whose text would see a namesake column of the other side.
    """

    from_: Any
    cols: dict[str, Any]
    where: list = field(default_factory=list)
    tables: frozenset = frozenset()
    unsafe: frozenset = frozenset()  # names that SQL text cannot use bare over from_ (renamed/ambiguous)
    text: frozenset = frozenset()  # identifiers of SQL text in where/cols (not sealed in a subquery)

    def select(self, names: Sequence[str]):
        return sa.select(*[self.cols[n].label(n) for n in names]).select_from(self.from_).where(*self.where)

    def as_subquery(self) -> "Compiled":
        sub = self.select(list(self.cols)).subquery()
        return Compiled(sub, {n: sub.c[n] for n in self.cols}, [], self.tables)

    def text_clashes(self, names: set) -> bool:
        """Whether SQL text naming ``names`` bare would not mean this query's attributes."""
        if self.unsafe & names:
            return True
        if not isinstance(self.from_, sa.Join):
            return False  # one table or subquery: every attribute is its column of that name
        exposed = exposed_columns(self.from_)
        for name in names & exposed.keys():
            columns = exposed[name]
            if len(columns) > 1 or (name in self.cols and self.cols[name] is not columns[0]):
                return True
        return False

    def text_ready(self, sql: str) -> "Compiled":
        """This, or a subquery of it, over which ``sql`` can name attributes bare."""
        return self.as_subquery() if self.text_clashes(sql_identifiers(sql)) else self


def exposed_columns(from_) -> dict[str, list]:
    """name -> the columns that a bare ``name`` could mean in a FROM clause (all of its tables)."""
    found: dict[str, list] = {}
    stack = [from_]
    while stack:
        item = stack.pop()
        if isinstance(item, sa.Join):
            stack.append(item.right)
            stack.append(item.left)
            continue
        for column in item.c:
            found.setdefault(column.key, []).append(column)
    return found


def join_chain(from_) -> list | None:
    """A left-deep FROM as [(from, None, False), (from, onclause, isouter), ...], else None."""
    chain = []
    while isinstance(from_, sa.Join):
        if isinstance(from_.right, sa.Join):
            return None
        chain.append((from_.right, from_.onclause, from_.isouter))
        from_ = from_.left
    chain.append((from_, None, False))
    chain.reverse()
    return chain


def flat_inner_join(left_from, right_from, pairs: Sequence[tuple]):
    """``left INNER JOIN (r1 JOIN r2 ON c1 ...) ON pairs`` written without the parentheses:
    ``left JOIN r1 ON .. JOIN r2 ON c1 ..``, each equality of ``pairs`` (left column, right column)
    placed at the first inner join where its right column's table is present.  None when that is
    not possible (the right column is not a column of one of the right side's tables, or its
    table is joined by an outer join); the caller then joins a subquery instead."""
    chain = join_chain(right_from)
    if chain is None:
        return None
    step = {id(item): i for i, (item, _on, _outer) in enumerate(chain)}
    placed: list[list] = [[] for _ in chain]
    for left_col, right_col in pairs:
        i = step.get(id(getattr(right_col, "table", None)))
        if i is None or chain[i][2]:
            return None
        placed[i].append(left_col == right_col)
    from_ = left_from
    for (item, on, outer), eqs in zip(chain, placed):
        if on is not None:
            eqs.append(on)
        from_ = sa.join(from_, item, sa.and_(sa.true(), *eqs), isouter=outer)
    return from_


def condition_text(cond: Any) -> str | None:
    """The SQL text of the string conditions in ``cond`` (outside of queries), or None."""
    if type(cond) is str:
        return cond
    if isinstance(cond, Not):
        return condition_text(cond.restriction)
    if isinstance(cond, (list, tuple, set, frozenset)):  # AndList is a list
        parts = [text for text in map(condition_text, cond) if text is not None]
        return " ".join(parts) if parts else None
    return cond if isinstance(cond, str) else None


class BindContext:
    """Names the values bound while one statement is built: ``jfv0``, ``jfv1``, ... in build order.

    The order is the one ``QueryExpression._shape`` lists the values in, so the compiled SQL of
    one expression can be run again with the values of another expression of the same shape.
    """

    __slots__ = ("values",)

    def __init__(self):
        self.values: list = []

    def bind(self, value: Any) -> sa.BindParameter:
        name = f"jfv{len(self.values)}"
        self.values.append(value)
        return sa.bindparam(name, value, type_=VALUE)


BIND_PREFIX = "jfv"
SQL_CACHE_SIZE = 2000
_SQL_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()  # dialect -> {key: SqlTemplate}
_QUOTED = r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|"
_PLACEHOLDERS = {  # DB-API paramstyle -> placeholder pattern (quoted text is skipped)
    "pyformat": re.compile(_QUOTED + r"%\((\w+)\)s"),
    "format": re.compile(_QUOTED + r"%s"),
    "qmark": re.compile(_QUOTED + r"\?"),
    "named": re.compile(_QUOTED + r"(?<!:):(\w+)"),
    "numeric": re.compile(_QUOTED + r":\d+"),
}


_SHAPE_IDS: dict = {}  # shape key -> int; keys embed their children's ints, so hashing stays shallow
_NEXT_SHAPE_ID = itertools.count(1)
SHAPE_ID_LIMIT = 20_000


def shape_id(key: tuple) -> int:
    """A number for a shape key.  A number is never given to two keys (even after the table is
    emptied), so equal numbers always mean equal SQL."""
    sid = _SHAPE_IDS.get(key)
    if sid is None:
        if len(_SHAPE_IDS) >= SHAPE_ID_LIMIT:
            _SHAPE_IDS.clear()  # new numbers from here on; old ones stay valid
        sid = _SHAPE_IDS[key] = next(_NEXT_SHAPE_ID)
    return sid


def clear_sql_cache() -> None:
    """Forget every compiled statement (the next query of each shape compiles again)."""
    for cache in list(_SQL_CACHE.values()):
        cache.clear()


def _same_values(a: Sequence, b: Sequence) -> bool:
    """Whether the values bound while building equal those ``_shape`` listed (else: do not cache)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x is y:
            continue
        try:
            if type(x) is not type(y) or not bool(x == y):
                return False
        except Exception:  # e.g. arrays: no single truth value
            return False
    return True


def sql_literal(value: Any) -> str:
    """A value as SQL text, for the display string of ``make_sql()`` only (never executed)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, decimal.Decimal, np.number)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "X'" + bytes(value).hex() + "'"
    if isinstance(value, (datetime.date, datetime.time)):
        value = value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()
    elif isinstance(value, uuid.UUID):
        value = str(value)
    return "'" + str(value).replace("'", "''") + "'"


_BIND_NAMES = tuple(f"{BIND_PREFIX}{i}" for i in range(64))  # the names of a query's values, in bind order


class SqlTemplate:
    """The SQL text of one statement shape, with its parameter layout."""

    __slots__ = ("sql", "positional", "names", "fixed", "style", "_pieces")

    def __init__(self, compiled):
        self.sql = compiled.string
        self.style = compiled.dialect.paramstyle
        self.positional = bool(compiled.positional)
        self.names = list(compiled.positiontup) if self.positional else None
        # values SQLAlchemy bound itself (LIMIT, literal(1)): fixed by the shape key
        self.fixed = {k: v for k, v in compiled.params.items() if not k.startswith(BIND_PREFIX)}
        self._pieces = None

    @staticmethod
    def cacheable(compiled) -> bool:
        return "POSTCOMPILE" not in compiled.string and not getattr(compiled, "literal_execute_params", None)

    def params(self, values: Sequence):
        if not values:
            named = self.fixed
        else:
            named = dict(self.fixed)
            bind_names = _BIND_NAMES if len(values) <= len(_BIND_NAMES) else \
                [f"{BIND_PREFIX}{i}" for i in range(len(values))]
            named.update(zip(bind_names, values))
        if self.positional:
            return tuple(named[n] for n in self.names)
        return named

    def _split(self) -> list:
        """The SQL as [text, source, text, ..., text]: a source is an index into the query's values,
        or a 1-tuple holding a value SQLAlchemy bound itself."""
        pieces, start, position = [], 0, 0
        pattern = _PLACEHOLDERS.get(self.style)
        percent = self.style in ("pyformat", "format")
        for match in pattern.finditer(self.sql) if pattern is not None else ():
            if match.group(0)[0] in "'\"":
                continue
            pieces.append(self.sql[start:match.start()])
            name = self.names[position] if self.positional else match.group(1)
            position += 1
            pieces.append(int(name[len(BIND_PREFIX):]) if name.startswith(BIND_PREFIX) else (self.fixed[name],))
            start = match.end()
        pieces.append(self.sql[start:])
        if percent:
            pieces[::2] = [text.replace("%%", "%") for text in pieces[::2]]
        return pieces

    def display(self, values: Sequence) -> str:
        """The SQL with every parameter rendered as a literal (for reading, not for running)."""
        pieces = self._pieces
        if pieces is None:
            pieces = self._pieces = self._split()
        out = pieces[:]
        for i in range(1, len(out), 2):
            source = out[i]
            out[i] = sql_literal(values[source] if type(source) is int else source[0])
        return "".join(out)


def _run_sql(connection, sql: str, args):
    """Run pre-compiled SQL through the driver; errors become joinflow errors."""
    return connection.run_sql(sql, args)  # reconnects, retries deadlocks, translates errors


def _order_key(order_by) -> Any:
    return order_by if order_by is None or isinstance(order_by, str) else tuple(order_by)


_QUOTED_TEXT = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def sql_identifiers(sql: str) -> set[str]:
    return set(_IDENTIFIER.findall(_QUOTED_TEXT.sub("''", sql)))


_TABLE_CLASS: list = []  # [Table], imported on first use (table imports this module)
ITER_BATCH = 5000  # rows read from the server at a time by ``for row in query``


def is_table_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if not _TABLE_CLASS:
        from .table import Table

        _TABLE_CLASS.append(Table)
    return issubclass(obj, _TABLE_CLASS[0])


def _as_expression(obj: Any) -> "QueryExpression":
    if is_table_class(obj):
        return obj()
    if isinstance(obj, QueryExpression):
        return obj
    raise DataJointError(f"Expected a query expression or table class, got {type(obj).__name__}.")


def assert_join_compatibility(a: "QueryExpression", b: "QueryExpression", shared: Sequence[str]) -> None:
    """Semantic matching (paper §5): namesakes must share a non-empty lineage."""
    for name in shared:
        la, lb = a.heading[name].lineage, b.heading[name].lineage
        fix = f"rename it on one side, e.g. `.proj(other_{name}='{name}')`, or pass semantic_check=False"
        if la is None or lb is None:
            raise DataJointError(
                f"Cannot join on attribute `{name}`: lineage missing on one side ({la} vs {lb}). "
                "It is a secondary attribute that does not come from a foreign key on at least one side, "
                "so the two may be unrelated values that merely share a name (or the `~lineage` table is "
                "stale: run `schema.rebuild_lineage()`). To match on it anyway or keep both, "
                f"{fix}."
            )
        if la != lb:
            raise DataJointError(
                f"Cannot join on attribute `{name}`: different lineages ({la} vs {lb}). The two sides "
                f"have unrelated attributes that share the name `{name}` (a homonym); matching them would "
                f"pair unrelated rows. Use .proj() to rename one of the attributes: {fix}."
            )


def condition_tables(cond: Any) -> set:
    """Tables read by a restriction condition."""
    if isinstance(cond, Not):
        return condition_tables(cond.restriction)
    if is_table_class(cond):
        cond = cond()
    if isinstance(cond, QueryExpression):
        return set(cond.referenced_tables())
    if isinstance(cond, (list, tuple, set, AndList)):
        found = set()
        for item in cond:
            found |= condition_tables(item)
        return found
    return set()


class QueryExpression:
    """Base class of tables and derived queries."""

    _restrictions: tuple = ()
    _connection = None

    # -- to be provided by subclasses -----------------------------------------------------
    @property
    def heading(self) -> Heading:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compile_base(self, ctx: BindContext | None = None) -> Compiled:  # pragma: no cover - abstract
        raise NotImplementedError

    def _base_shape(self) -> tuple[Any, tuple]:
        """(key, values) of ``_compile_base``: see ``_shape``.  This default is a table's."""
        return ("T", self.full_table_name, self.heading.shape_key), ()

    # -- basics ------------------------------------------------------------------------------
    @property
    def connection(self):
        return self._connection

    @property
    def primary_key(self) -> list[str]:
        return self.heading.primary_key

    @property
    def restriction(self) -> list:
        return [cond for cond, _check in self._restrictions]

    def _sources(self) -> frozenset:
        """Full names of the tables this expression's own FROM clause reads."""
        raise NotImplementedError  # pragma: no cover - abstract

    def referenced_tables(self) -> frozenset:
        """Every table the query reads, including those inside its restrictions."""
        found = set(self._sources())
        for cond, _check in self._restrictions:
            found |= condition_tables(cond)
        return frozenset(found)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_shape_memo", None)  # shape numbers are per process
        return state

    def _copy(self) -> "QueryExpression":
        new = object.__new__(type(self))
        state = new.__dict__
        state.update(self.__dict__)
        state.pop("_shape_memo", None)  # the copy is about to differ
        return new

    def _compile(self, ctx: BindContext | None = None) -> Compiled:
        """The SQLAlchemy pieces of this query.  Values are anonymous bound parameters unless ``ctx``
        names them (then in the order ``_shape`` lists them)."""
        compiled = self._compile_base(ctx)
        if not self._restrictions:
            return compiled
        where = list(compiled.where)
        for cond, check in self._restrictions:
            if isinstance(cond, Top):
                compiled.where = where
                compiled = cond.apply(self, compiled)
                where = []
                continue
            if type(cond) is not dict:
                text = condition_text(cond)
                if text is not None:
                    names = sql_identifiers(text)
                    if compiled.text_clashes(names):  # e.g. a namesake of a join: resolve over its output
                        compiled.where = where
                        compiled = compiled.as_subquery()
                        where = []
                    compiled.text = compiled.text | names
            where.append(compile_condition(self, compiled, cond, semantic_check=check, ctx=ctx))
        compiled.where = where
        return compiled

    def _shape(self) -> tuple[Any, tuple]:
        """(key, values): two expressions with equal keys compile to the same SQL text, up to their
        bound values, listed in ``values`` in bind order.  Computed once per (immutable) expression.
        The key is None for a query that is not worth caching; it is then compiled every time."""
        memo = self.__dict__.get("_shape_memo")
        if memo is None:
            key, values = self._base_shape()
            if key is not None and self._restrictions:
                values = list(values)
                parts = [key]
                for cond, _check in self._restrictions:
                    kind = type(cond)
                    if kind is str:
                        part = ("S", cond)
                    elif kind is dict:
                        part = dict_shape(self, cond, values)
                    elif kind is Top:
                        part = ("Top", cond.limit, _order_key(cond.order_by), cond.offset)
                    else:
                        part = condition_shape(self, cond, values)
                    if part is None:
                        key = None
                        break
                    parts.append(part)
                else:
                    key = tuple(parts)
            if key is not None:
                memo = self._shape_memo = (shape_id(key), tuple(values))
            else:
                memo = self._shape_memo = (None, ())
        return memo

    # -- restriction --------------------------------------------------------------------------
    def restrict(self, restriction: Any, semantic_check: bool = True) -> "QueryExpression":
        other = restriction.restriction if isinstance(restriction, Not) else restriction
        if semantic_check and (is_table_class(other) or isinstance(other, QueryExpression)):
            other = _as_expression(other)  # check now, where the user wrote it
            assert_join_compatibility(self, other, [n for n in self.heading.names if n in other.heading.names])
        result = self._copy()
        result._restrictions = self._restrictions + ((restriction, semantic_check),)
        return result

    def __and__(self, restriction: Any) -> "QueryExpression":
        return self.restrict(restriction)

    def __sub__(self, restriction: Any) -> "QueryExpression":
        return self.restrict(Not(restriction))

    def __neg__(self) -> Not:
        return Not(self)

    def __matmul__(self, other):
        raise DataJointError("The @ operator has been removed in DataJoint 2.0; use .join(other, semantic_check=False).")

    def __xor__(self, other):
        raise DataJointError("The ^ operator has been removed in DataJoint 2.0; use .restrict(other, semantic_check=False).")

    # -- projection and join --------------------------------------------------------------------
    def proj(self, *attributes: Any, **named: str) -> "QueryExpression":
        return Projection.create(self, attributes, named)

    def join(self, other: Any, semantic_check: bool = True, left: bool = False) -> "QueryExpression":
        if isinstance(other, U):
            raise DataJointError("query * dj.U(...) is no longer supported in DataJoint 2.0; use dj.U(...) & query.")
        return Join(self, _as_expression(other), semantic_check=semantic_check, left=left)

    def __mul__(self, other: Any) -> "QueryExpression":
        return self.join(other)

    def __rmul__(self, other: Any) -> "QueryExpression":
        return _as_expression(other).join(self)

    def extend(self, other: Any, semantic_check: bool = True) -> "QueryExpression":
        other = _as_expression(other)
        if not set(other.primary_key) <= set(self.heading.names):
            raise DataJointError(
                "Left join requires the left operand to determine the right operand (A → B): "
                f"attributes {sorted(set(other.primary_key) - set(self.heading.names))} are missing on the left."
            )
        return self.join(other, semantic_check=semantic_check, left=True)

    def aggr(self, group: Any, *attributes: Any, exclude_nonmatching: bool = False,
             keep_all_rows: bool | None = None, **computed: str) -> "QueryExpression":
        """Per row of self, aggregates over the matching rows of ``group``."""
        if keep_all_rows is not None:
            exclude_nonmatching = not keep_all_rows
        return Aggregation(self, _as_expression(group), attributes, computed,
                           exclude_nonmatching=exclude_nonmatching)

    aggregate = aggr

    def __add__(self, other: Any) -> "QueryExpression":
        return Union(self, _as_expression(other))

    # -- SQL -------------------------------------------------------------------------------------
    def _order_clause(self, compiled: Compiled, order_by) -> list:
        if order_by is None:
            return []
        items = [order_by] if isinstance(order_by, str) else list(order_by)
        clauses = []
        for item in items:
            parts = item.split()
            name, direction = parts[0], (parts[1].upper() if len(parts) > 1 else "ASC")
            if direction not in ("ASC", "DESC") or len(parts) > 2:
                raise DataJointError(f"Invalid order_by item {item!r}: write `attr`, `attr DESC` or `KEY DESC`.")
            names = self.primary_key if name == "KEY" else [name]
            for n in names:
                if n not in compiled.cols:
                    raise UnknownAttributeError(f"order_by: attribute `{n}` is not in the query.")
                col = compiled.cols[n]
                clauses.append(col.desc() if direction == "DESC" else col.asc())
        return clauses

    def _select(self, names=None, order_by=None, limit=None, offset=None, ctx: BindContext | None = None):
        compiled = self._compile(ctx)
        names = list(names or self.heading.names)
        stmt = compiled.select(names).order_by(*self._order_clause(compiled, order_by))
        limit, offset = check_limit_offset(limit, offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            if limit is None:
                raise DataJointError("offset requires limit: pass both, e.g. limit=10, offset=20.")
            stmt = stmt.offset(offset)
        return stmt

    def _prepared(self, spec: tuple, build) -> tuple[SqlTemplate, Sequence]:
        """The SQL of a statement over this query, compiled once per shape and connection dialect.

        ``spec`` says what the statement does with the query (select which columns in which order,
        count, ...); ``build(ctx)`` makes the SQLAlchemy statement when the shape is new.
        """
        key, values = self._shape()
        dialect = self.connection.engine.dialect
        cache = getattr(dialect, "_joinflow_sql_cache", None)
        if cache is None:
            cache = _SQL_CACHE[dialect] = {}
            dialect._joinflow_sql_cache = cache  # found without hashing the dialect
        full_key = (spec, key) if key is not None else None
        template = cache.get(full_key) if full_key is not None else None
        if template is not None:
            return template, values
        ctx = BindContext()
        compiled = build(ctx).compile(dialect=dialect)
        template = SqlTemplate(compiled)
        if full_key is not None and SqlTemplate.cacheable(compiled) and _same_values(ctx.values, values):
            if len(cache) >= SQL_CACHE_SIZE:
                try:
                    del cache[next(iter(cache))]  # the oldest entry
                except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                    pass
            cache[full_key] = template
        return template, ctx.values

    def _select_sql(self, names=None, order_by=None, limit=None, offset=None) -> tuple[SqlTemplate, Sequence]:
        all_names = self.heading.names
        if not names or names is all_names:
            names = spec_names = None  # all of them: the shape key determines which
        else:
            names = spec_names = tuple(names)
        limit, offset = check_limit_offset(limit, offset)
        spec = ("select", spec_names, _order_key(order_by), limit, offset)
        return self._prepared(spec, lambda ctx: self._select(names, order_by, limit, offset, ctx))

    def make_sql(self) -> str:
        """The SELECT statement of this query, with its values shown inline (for reading only:
        queries always run with bound parameters)."""
        template, values = self._select_sql()
        return template.display(values)

    def cursor(self, order_by=None, limit=None, offset=None):
        return self.connection.execute(self._select(order_by=order_by, limit=limit, offset=offset))

    # -- fetching --------------------------------------------------------------------------------------
    def _rows(self, names, order_by=None, limit=None, offset=None) -> list[tuple]:
        template, values = self._select_sql(names, order_by, limit, offset)
        params = template.params(values)

        def fetch():
            result = _run_sql(self.connection, template.sql, params)
            try:
                return result.cursor.fetchall() if result.cursor is not None else []
            finally:
                result.close()

        return self.connection.cached_rows(template.sql, params, fetch)

    def _decoders(self, names) -> list:
        backend = self.connection.backend
        heading = self.heading
        # without codecs or computed columns the decoders depend only on the backend and the
        # attributes: made once per heading and column list (fetch1 in make() runs per key)
        memo = heading.__dict__.get("_jf_decoders")
        if memo is None or memo[0] is not backend:
            memo = heading._jf_decoders = (backend, {})
        names_key = tuple(names)
        found = memo[1].get(names_key)
        if found is not None:
            return found
        decoders = []
        plain = True
        for n in names:
            attr = heading[n]
            if attr.sql_expression is not None:
                decoders.append(None)
                plain = False
            elif attr.codec is not None:
                decoders.append(self._codec_decoder(attr))
                plain = False
            else:
                decoders.append(backend.decoder(attr))
        if plain and len(memo[1]) < 64:
            memo[1][names_key] = decoders
        return decoders

    def _codec_decoder(self, attr: Attribute):
        """The column's driver value -> its dtype's value -> codec chain, inner to outer."""
        from .codecs import storage_attribute

        base = self.connection.backend.decoder(storage_attribute(attr))
        context = {"schema": getattr(self, "database", None), "table": getattr(self, "table_name", None),
                   "field": attr.original_name or attr.name, "config": self.connection.config}
        decode = attr.codec.decoder(context)
        where = f"Attribute `{attr.name}` ({attr.type})"
        if context["schema"] and context["table"]:
            where = (f"Table {self.connection.backend.full_table_name(context['schema'], context['table'])}, "
                     f"attribute `{attr.name}` ({attr.type})")

        def codec_decode(value):
            try:
                return decode(base(value) if base is not None else value)
            except BlobError as exc:
                raise BlobError(
                    f"{where}: {exc} The stored value cannot be read; fetch the row's other attributes (name "
                    "them, or proj() this one away), then replace it with update1() or delete the row."
                ) from None
            except DataJointError as exc:
                raise type(exc)(f"{where}: {exc}") from None

        return codec_decode

    def _store_reads(self, names, rows) -> list:
        """``[(path, store)]`` of the objects that decoding ``rows`` will read from stores
        (``<blob@>``, ``<hash@>``, ``<attach@>`` columns), so they can be read all at once."""
        heading = self.heading
        refs = []
        for i, name in enumerate(names):
            attr = heading[name]
            if attr.codec is None or attr.sql_expression is not None or not attr.codec.reads_store_content:
                continue
            paths = attr.codec.referenced_paths
            for row in rows:
                if row[i] is not None:
                    refs += paths(row[i])
        return refs

    def _decode_rows(self, names, rows) -> list:
        """Decode driver rows in place (lists); store objects are read concurrently first."""
        decoders = [(i, d) for i, d in enumerate(self._decoders(names)) if d is not None]
        if not decoders:
            return rows
        refs = self._store_reads(names, rows)
        with prefetch(self.connection.config, refs) if refs else contextlib.nullcontext():
            for i, decode in decoders:
                for row in rows:
                    if row[i] is not None:
                        row[i] = decode(row[i])
        return rows

    def _fetch_dicts(self, names, order_by=None, limit=None, offset=None) -> list[dict]:
        rows = self._rows(names, order_by, limit, offset)
        if any(d is not None for d in self._decoders(names)):
            rows = self._decode_rows(names, [list(row) for row in rows])
        return [dict(zip(names, row)) for row in rows]

    def to_dicts(self, order_by=None, limit=None, offset=None, squeeze: bool = False) -> list[dict]:
        return self._fetch_dicts(self.heading.names, order_by, limit, offset)

    def keys(self, order_by=None, limit=None, offset=None) -> list[dict]:
        return self._fetch_dicts(self.primary_key, order_by, limit, offset)

    def _dtype(self, names):
        fields = []
        for n in names:
            attr = self.heading[n]
            # as DataJoint: every float as float64 (a NULL is a NaN that is a Python float, and a
            # float32 column's value is kept as the driver gave it), every integer as 64 bits
            if attr.category == "float":
                fields.append((n, "f8"))
            elif attr.category == "int" and not attr.nullable and attr.core:
                fields.append((n, "u8" if attr.type == "uint64" else "i8"))
            elif attr.category == "bool" and not attr.nullable:
                fields.append((n, "?"))
            else:
                fields.append((n, "O"))
        return np.dtype(fields)

    def to_arrays(self, *attrs, include_key: bool = False, order_by=None, limit=None, offset=None,
                  squeeze: bool = False):
        names = list(attrs) if attrs else self.heading.names
        for n in names:
            if n not in self.heading.names:
                raise UnknownAttributeError(f"Attribute `{n}` is not in the query.")
        fetch_names = list(dict.fromkeys((self.primary_key if include_key else []) + names))
        rows = self._rows(fetch_names, order_by, limit, offset)
        decoders = self._decoders(fetch_names)
        if any(decoders) or any(self.heading[n].category == "float" and self.heading[n].nullable for n in fetch_names):
            cols = list(zip(*rows)) if rows else [() for _ in fetch_names]
            fixed = []
            refs = self._store_reads(fetch_names, rows) if any(decoders) else []
            with prefetch(self.connection.config, refs) if refs else contextlib.nullcontext():
                for n, col, decode in zip(fetch_names, cols, decoders):
                    if decode is not None:
                        col = [None if v is None else decode(v) for v in col]
                    if self.heading[n].category == "float":
                        col = [np.nan if v is None else v for v in col]
                    fixed.append(col)
            rows = list(zip(*fixed))
        dtype = self._dtype(fetch_names)
        data = np.array(rows if isinstance(rows, list) and (not rows or type(rows[0]) is tuple) else [tuple(r) for r in rows], dtype=dtype)
        if not attrs:
            if include_key:
                return self.keys(order_by=order_by, limit=limit, offset=offset), data[names]
            return data
        arrays = tuple(data[n] for n in names)
        if include_key:
            keys = [dict(zip(self.primary_key, k)) for k in zip(*(data[k] for k in self.primary_key))]
            keys = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in d.items()} for d in keys]
            return (keys, *arrays)
        return arrays[0] if len(arrays) == 1 else arrays

    def to_pandas(self, order_by=None, limit=None, offset=None, squeeze: bool = False):
        import pandas as pd

        frame = pd.DataFrame(self.to_dicts(order_by=order_by, limit=limit, offset=offset), columns=self.heading.names)
        if len(frame) and self.primary_key:
            frame = frame.set_index(self.primary_key)
        return frame

    def to_arrow(self, order_by=None, limit=None, offset=None, squeeze: bool = False):
        """The rows as a ``pyarrow.Table`` (columns in heading order; needs ``pip install pyarrow``)."""
        pa = _optional_import("pyarrow", "to_arrow")
        rows = self.to_dicts(order_by=order_by, limit=limit, offset=offset, squeeze=squeeze)
        return pa.table({n: [r[n] for r in rows] for n in self.heading.names})

    def to_polars(self, order_by=None, limit=None, offset=None, squeeze: bool = False):
        """The rows as a ``polars.DataFrame`` (columns in heading order; needs ``pip install polars``)."""
        pl = _optional_import("polars", "to_polars")
        rows = self.to_dicts(order_by=order_by, limit=limit, offset=offset, squeeze=squeeze)
        return pl.DataFrame({n: [r[n] for r in rows] for n in self.heading.names}, strict=False)

    def fetch1(self, *attrs, squeeze: bool = False):
        names = self.heading.names
        wanted = []
        for a in attrs:
            wanted.extend(self.primary_key if a == "KEY" else [a])
        for n in wanted:
            if n not in names:
                raise UnknownAttributeError(f"Attribute `{n}` is not in the query.")
        rows = self._fetch_dicts(names, limit=2)
        if len(rows) != 1:
            if not rows:
                raise DataJointError("fetch1 requires exactly one tuple in the input set.")
            raise DataJointError(f"fetch1 should only return one tuple. {len(self)} tuples found")
        row = rows[0]
        if not attrs:
            return row
        values = []
        for a in attrs:
            values.append({k: row[k] for k in self.primary_key} if a == "KEY" else row[a])
        return values[0] if len(values) == 1 else tuple(values)

    def fetch(self, *attrs, offset=None, limit=None, order_by=None, format=None, as_dict=None, squeeze=False):
        """Deprecated DataJoint 0.14-style fetch; prefer to_dicts/to_arrays/to_pandas/keys."""
        warnings.warn("fetch() is deprecated; use to_dicts(), to_arrays(), to_pandas() or keys().",
                      DeprecationWarning, stacklevel=2)
        if attrs == ("KEY",):
            return self.keys(order_by=order_by, limit=limit, offset=offset)
        if format == "frame":
            return self.to_pandas(order_by=order_by, limit=limit, offset=offset)
        if as_dict and not attrs:
            return self.to_dicts(order_by=order_by, limit=limit, offset=offset)
        if attrs:
            expanded = [a for a in attrs if a != "KEY"]
            if as_dict:
                names = list(dict.fromkeys((self.primary_key if "KEY" in attrs else []) + expanded))
                return self._fetch_dicts(names, order_by, limit, offset)
            result = []
            for a in attrs:
                if a == "KEY":
                    result.append(self.keys(order_by=order_by, limit=limit, offset=offset))
                else:
                    result.append(self.to_arrays(a, order_by=order_by, limit=limit, offset=offset))
            return result[0] if len(result) == 1 else tuple(result)
        return self.to_arrays(order_by=order_by, limit=limit, offset=offset)

    def head(self, limit: int = 25) -> list[dict]:
        return self.to_dicts(order_by="KEY", limit=limit)

    def tail(self, limit: int = 25) -> list[dict]:
        return self.to_dicts(order_by="KEY DESC", limit=limit)[::-1]

    def __len__(self) -> int:
        def build(ctx):
            compiled = self._compile(ctx)  # one row per result row: count them where they are
            return sa.select(sa.func.count()).select_from(compiled.from_).where(*compiled.where)

        template, values = self._prepared(("count",), build)
        return int(_run_sql(self.connection, template.sql, template.params(values)).scalar())

    def __bool__(self) -> bool:
        def build(ctx):
            compiled = self._compile(ctx)
            return sa.select(sa.literal(1)).select_from(compiled.from_).where(*compiled.where).limit(1)

        template, values = self._prepared(("exists",), build)
        return _run_sql(self.connection, template.sql, template.params(values)).first() is not None

    def __contains__(self, item: Any) -> bool:
        return bool(self & item)

    def __iter__(self) -> Iterator[dict]:
        """The rows as dicts, read from the server in batches (``ITER_BATCH``) as the loop goes:
        memory stays flat for any number of rows (DataJoint fetches them all first)."""
        names = self.heading.names
        template, values = self._select_sql(names)
        decoding = any(d is not None for d in self._decoders(names))
        for rows in self.connection.stream(template.sql, template.params(values), ITER_BATCH):
            if decoding:
                rows = self._decode_rows(names, [list(row) for row in rows])
            yield from [dict(zip(names, row)) for row in rows]

    # -- display ---------------------------------------------------------------------------------------
    def _preview_rows(self, limit: int):
        names = self.heading.names
        rows = self._fetch_dicts(names, limit=limit + 1)
        return names, rows

    def preview(self, limit: int | None = None, width: int | None = None) -> str:
        cfg = self.connection.config
        limit = check_limit_offset(limit, None, "preview")[0] or cfg["display.limit"]
        width = width or cfg["display.width"]
        names, rows = self._preview_rows(limit)

        def cell(v):
            if isinstance(v, (bytes, bytearray)):
                v = "=BLOB="
            text = str(v)
            return text if len(text) <= width else text[: width - 3] + "..."

        heads = [("*" if n in self.primary_key else "") + n for n in names]
        widths = [max(len(h), *(len(cell(r[n])) for r in rows[:limit])) if rows else len(h) for h, n in zip(heads, names)]
        lines = [" ".join(h.ljust(w) for h, w in zip(heads, widths)), " ".join("-" * w for w in widths)]
        for r in rows[:limit]:
            lines.append(" ".join(cell(r[n]).ljust(w) for n, w in zip(names, widths)))
        if len(rows) > limit:
            lines.append("   ...")
        if cfg["display.show_tuple_count"]:
            lines.append(f" (Total: {len(self)})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        try:
            return self.preview()
        except Exception as exc:  # never fail in repr
            return f"<{type(self).__name__}: {exc}>"

    def _repr_html_(self) -> str:
        cfg = self.connection.config
        names, rows = self._preview_rows(cfg["display.limit"])
        head = "".join(
            f"<th>{'<u>' if n in self.primary_key else ''}{html.escape(n)}{'</u>' if n in self.primary_key else ''}</th>"
            for n in names
        )
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(r[n]))}</td>" for n in names) + "</tr>"
            for r in rows[: cfg["display.limit"]]
        )
        total = f"<p>Total: {len(self)}</p>" if cfg["display.show_tuple_count"] else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{total}"


class Projection(QueryExpression):
    """Keep, drop, rename or compute attributes; the primary key is always kept."""

    def __init__(self, child: QueryExpression, mapping: dict[str, str], computed: dict[str, str]):
        self._child = child
        self._connection = child.connection
        self._mapping = mapping  # result name -> child name (kept and renamed)
        self._computed = computed  # result name -> SQL expression
        self._restrictions = ()
        attrs = []
        child_attrs = child.heading.all_attributes
        for new, old in mapping.items():
            attr = child_attrs[old]
            attrs.append(attr if new == old else attr.renamed(new))
        for new, sql in computed.items():
            attrs.append(Attribute(name=new, type="computed", category="computed", in_key=False,
                                   sql_expression=sql))
        self._heading = Heading(attrs)

    @classmethod
    def create(cls, child: QueryExpression, attributes: Sequence[Any], named: dict[str, str]) -> "Projection":
        heading = child.heading
        keep_all = any(a is Ellipsis for a in attributes)
        excluded = {a[1:].strip() for a in attributes if isinstance(a, str) and a.startswith("-")}
        kept = [a for a in attributes if isinstance(a, str) and not a.startswith("-")]
        for a in list(excluded) + kept:
            if a not in heading:
                raise UnknownAttributeError(f"Attribute `{a}` is not found in query.")
        for a in excluded:
            if a in heading.primary_key:
                raise DataJointError(f"Cannot exclude primary key attribute {a}")
        renamed_from = {}
        computed = {}
        for new, spec in named.items():
            text = spec.strip()
            if text in heading:
                renamed_from[new] = text
            elif text.startswith("(") and text.endswith(")") and text[1:-1].strip() in heading:
                computed[new] = text[1:-1].strip()  # duplicate: dup='(old)'
            else:
                computed[new] = text
        mapping: dict[str, str] = {}
        renamed_sources = set(renamed_from.values())
        for name in heading.primary_key:
            if name in renamed_sources:
                for new, old in renamed_from.items():
                    if old == name:
                        mapping[new] = old
            else:
                mapping[name] = name
        for name in heading.secondary_attributes:
            if name in renamed_sources:
                for new, old in renamed_from.items():
                    if old == name:
                        mapping[new] = old
            elif (keep_all and name not in excluded) or name in kept:
                mapping[name] = name
        result = cls(child, mapping, computed)
        if all(a is Ellipsis or isinstance(a, str) for a in attributes):
            # mapping and computed follow from the child's heading and these arguments: a smaller key
            result._local_key = ("P", tuple(attributes), tuple(named.items()))
        return result

    @property
    def heading(self) -> Heading:
        return self._heading

    @property
    def renames(self) -> dict[str, str]:
        """parent attribute -> new name (used by foreign keys ``-> T.proj(new='old')``)."""
        return {old: new for new, old in self._mapping.items() if new != old}

    def _foreign_key_target(self):
        child = self._child
        if self._computed or self._restrictions or not hasattr(child, "_foreign_key_target") or child._restrictions:
            raise DataJointError(
                "A foreign key may reference a table or its .proj(new='old') rename only; "
                "Dependency on a restricted, joined or computed query is not supported."
            )
        target = child._foreign_key_target()
        target.renames = self.renames
        return target

    def _sources(self) -> frozenset:
        return self._child.referenced_tables()

    def _base_shape(self):
        key, values = self._child._shape()
        if key is None:
            return None, ()
        local = self.__dict__.get("_local_key")
        if local is None:
            local = ("P=", tuple(self._mapping.items()), tuple(self._computed.items()))
        return (local, key), values

    def _compile_base(self, ctx: BindContext | None = None) -> Compiled:
        inner = self._child._compile(ctx)
        text = inner.text
        if self._computed:
            names = sql_identifiers(" ".join(self._computed.values()))
            if inner.text_clashes(names):
                inner = inner.as_subquery()
            text = inner.text | names
        cols = {new: inner.cols[old] for new, old in self._mapping.items()}
        for new, sql in self._computed.items():
            cols[new] = inner.cols[sql] if sql in inner.cols else sa.literal_column("(" + sql + ")")
        unsafe = {new for new, old in self._mapping.items() if new != old} | set(self._computed)
        unsafe |= {old for new, old in self._mapping.items() if new != old}  # hidden by the rename
        return Compiled(inner.from_, cols, list(inner.where), inner.tables, frozenset(inner.unsafe | unsafe), text)


class Join(QueryExpression):
    """Natural join on namesakes (inner or left), primary key by functional dependency."""

    def __init__(self, left_expr: QueryExpression, right_expr: QueryExpression, *,
                 semantic_check: bool = True, left: bool = False):
        self._left = left_expr
        self._right = right_expr
        self._is_left = left
        self._connection = left_expr.connection
        self._restrictions = ()
        shared = [n for n in left_expr.heading.names if n in right_expr.heading.names]
        if semantic_check:
            assert_join_compatibility(left_expr, right_expr, shared)
        self._shared = shared
        lh, rh = left_expr.heading, right_expr.heading
        if set(rh.primary_key) <= set(lh.names):
            pk = list(lh.primary_key)  # left determines right
        elif set(lh.primary_key) <= set(rh.names):
            pk = list(rh.primary_key)
        else:
            pk = list(dict.fromkeys(lh.primary_key + rh.primary_key))
        attrs = []
        seen = set()
        for a in list(lh) + list(rh):
            if a.name in seen:
                continue
            seen.add(a.name)
            in_key = a.name in pk
            if a.in_key != in_key:
                a = dataclasses.replace(a, in_key=in_key)
            attrs.append(a)
        ordered = [a for n in pk for a in attrs if a.name == n] + [a for a in attrs if a.name not in pk]
        self._heading = Heading(ordered)

    @property
    def heading(self) -> Heading:
        return self._heading

    def _sources(self) -> frozenset:
        return self._left.referenced_tables() | self._right.referenced_tables()

    def _base_shape(self):
        lkey, lvalues = self._left._shape()
        rkey, rvalues = self._right._shape()
        if lkey is None or rkey is None:
            return None, ()
        return ("J", lkey, rkey, self._is_left, tuple(self._shared)), lvalues + rvalues

    def _compile_base(self, ctx: BindContext | None = None) -> Compiled:
        left = self._left._compile(ctx)
        right = self._right._compile(ctx)
        if (right.tables & left.tables) or (self._is_left and (right.where or isinstance(right.from_, sa.Join))):
            right = right.as_subquery()  # a self-join, or a left join that must keep the right side whole
        # SQL text on one side must not see the other side's namesake columns: seal it in a subquery
        if left.text and left.text & exposed_columns(right.from_).keys():
            left = left.as_subquery()
        if right.text and right.text & exposed_columns(left.from_).keys():
            right = right.as_subquery()
        shared = self._shared
        from_ = None
        if isinstance(right.from_, sa.Join):  # inner join: flatten, the right side's joins follow the left
            from_ = flat_inner_join(left.from_, right.from_, [(left.cols[n], right.cols[n]) for n in shared])
            if from_ is None:
                right = right.as_subquery()
        if from_ is None:
            on = sa.and_(sa.true(), *[left.cols[n] == right.cols[n] for n in shared])
            from_ = sa.join(left.from_, right.from_, on, isouter=self._is_left)
        cols = dict(left.cols)
        for n, c in right.cols.items():
            cols.setdefault(n, c)
        unsafe = left.unsafe | right.unsafe | set(shared)  # namesakes are ambiguous in text
        return Compiled(from_, cols, left.where + right.where, left.tables | right.tables, frozenset(unsafe),
                        left.text | right.text)


class Aggregation(QueryExpression):
    """``a.aggr(b, ..., name='sql aggregate')``: a's rows with aggregates over matching b rows."""

    def __init__(self, left: QueryExpression, group: QueryExpression, attributes, computed: dict[str, str], *,
                 exclude_nonmatching: bool = False, semantic_check: bool = True):
        missing = [k for k in left.primary_key if k not in group.heading.names]
        if missing and left.primary_key:
            raise DataJointError(
                "Aggregation requires the group expression to contain all primary key attributes of the "
                f"aggregated expression; missing: {', '.join(missing)}."
            )
        self._connection = left.connection
        self._restrictions = ()
        self._left = left
        self._group = group
        self._inner = Join(left, group, semantic_check=semantic_check, left=not exclude_nonmatching)
        keep_all = any(a is Ellipsis for a in attributes)
        kept = [a for a in attributes if isinstance(a, str)]
        for a in kept:
            if a not in left.heading.names:
                raise UnknownAttributeError(f"Attribute `{a}` is not found in query.")
        self._kept = [n for n in left.heading.secondary_attributes if keep_all or n in kept]
        self._computed = dict(computed)
        attrs = [left.heading[n] for n in left.primary_key + self._kept]
        attrs += [Attribute(name=n, type="computed", category="computed", sql_expression=e)
                  for n, e in self._computed.items()]
        self._heading = Heading(attrs)

    @property
    def heading(self) -> Heading:
        return self._heading

    def _sources(self) -> frozenset:
        return self._inner.referenced_tables()

    def _base_shape(self):
        key, values = self._inner._shape()
        if key is None:
            return None, ()
        return ("G", key, tuple(self._left.primary_key), tuple(self._kept), tuple(self._computed.items())), values

    def _compile_base(self, ctx: BindContext | None = None) -> Compiled:
        inner = self._inner._compile(ctx).as_subquery()
        groups = [inner.cols[n] for n in self._left.primary_key + self._kept]
        cols = [inner.cols[n].label(n) for n in self._left.primary_key + self._kept]
        cols += [sa.literal_column("(" + e + ")").label(n) for n, e in self._computed.items()]
        stmt = sa.select(*cols).select_from(inner.from_)
        if groups:
            stmt = stmt.group_by(*groups)
        sub = stmt.subquery()
        return Compiled(sub, {n: sub.c[n] for n in self.heading.names}, [], inner.tables)


class Union(QueryExpression):
    """``a + b``: rows of either; both must have the same primary key."""

    def __init__(self, a: QueryExpression, b: QueryExpression):
        if set(a.primary_key) != set(b.primary_key):
            raise DataJointError(
                f"Union requires the same primary key on both sides ({a.primary_key} vs {b.primary_key})."
            )
        shared_secondary = set(a.heading.secondary_attributes) & set(b.heading.secondary_attributes)
        if shared_secondary and set(a.heading.names) != set(b.heading.names):
            raise DataJointError(
                f"Union operands share secondary attribute(s) {sorted(shared_secondary)} but differ in others; "
                "project both to the same attributes first."
            )
        self._connection = a.connection
        self._restrictions = ()
        self._a, self._b = a, b
        names = list(a.heading.names) + [n for n in b.heading.names if n not in a.heading.names]
        attrs = [a.heading[n] if n in a.heading.names else b.heading[n] for n in names]
        self._heading = Heading(attrs)

    @property
    def heading(self) -> Heading:
        return self._heading

    def _sources(self) -> frozenset:
        return self._a.referenced_tables() | self._b.referenced_tables()

    def _base_shape(self):
        akey, avalues = self._a._shape()
        bkey, bvalues = self._b._shape()
        if akey is None or bkey is None:
            return None, ()
        return ("+", akey, bkey), avalues + bvalues

    def _compile_base(self, ctx: BindContext | None = None) -> Compiled:
        names = self.heading.names
        pk = self.primary_key
        a, b = self._a, self._b
        if set(a.heading.names) == set(b.heading.names):
            stmt = sa.union(a._compile(ctx).select(names), b._compile(ctx).select(names))
        else:
            ca = a._compile(ctx).as_subquery()
            cb = b._compile(ctx).as_subquery()
            on = sa.and_(sa.true(), *[ca.cols[k] == cb.cols[k] for k in pk])
            left = sa.select(*[(ca.cols[n] if n in ca.cols else cb.cols[n]).label(n) for n in names]).select_from(
                sa.join(ca.from_, cb.from_, on, isouter=True))
            only_b = sa.select(*[(cb.cols[n] if n in cb.cols else sa.null()).label(n) for n in names]).where(
                ~sa.exists(sa.select(sa.literal(1)).select_from(ca.from_).where(on)))
            stmt = sa.union_all(left, only_b.select_from(cb.from_))
        sub = stmt.subquery()
        return Compiled(sub, {n: sub.c[n] for n in names}, [], self._sources())


class Top:
    """``q & dj.Top(limit=1, order_by="KEY", offset=0)``: the first rows in an order."""

    def __init__(self, limit: int | None = 1, order_by: str | list | None = "KEY", offset: int = 0):
        limit, offset = check_limit_offset(limit, offset, "Top")
        offset = offset or 0  # None means none, as in DataJoint
        self.limit = limit
        self.order_by = order_by if order_by is not None else "KEY"
        self.offset = offset

    def apply(self, expr: QueryExpression, compiled: Compiled) -> Compiled:
        stmt = compiled.select(list(compiled.cols)).order_by(*expr._order_clause(compiled, self.order_by))
        if self.limit is not None:
            stmt = stmt.limit(self.limit)
        if self.offset:
            stmt = stmt.offset(self.offset)
        sub = stmt.subquery()
        return Compiled(sub, {n: sub.c[n] for n in compiled.cols}, [], compiled.tables)

    def __repr__(self) -> str:
        return f"Top(limit={self.limit}, order_by={self.order_by!r}, offset={self.offset})"


class U:
    """The universal set over some attributes: ``dj.U('a') & q`` (distinct values), ``dj.U('a').aggr(q, ...)``."""

    def __init__(self, *attributes: str):
        self.attributes = list(attributes)

    def _check(self, q: QueryExpression) -> None:
        missing = [a for a in self.attributes if a not in q.heading.names]
        if missing:
            raise UnknownAttributeError(f"dj.U attribute(s) {missing} are not in the query.")

    def __and__(self, other: Any) -> QueryExpression:
        q = _as_expression(other)
        self._check(q)
        return Distinct(q, self.attributes)

    def restrict(self, other: Any) -> QueryExpression:
        return self & other

    def aggr(self, group: Any, *attributes, exclude_nonmatching: bool = True, **computed: str) -> QueryExpression:
        q = _as_expression(group)
        self._check(q)
        return GroupBy(q, self.attributes, computed)

    aggregate = aggr

    def __sub__(self, other: Any):
        raise DataJointError("dj.U(...) - query is an infinite set; restrict dj.U by a query with & instead.")

    def __mul__(self, other: Any):
        raise DataJointError("dj.U(...) * query is no longer supported in DataJoint 2.0; use dj.U(...) & query.")

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"U({', '.join(map(repr, self.attributes))})"


class Distinct(QueryExpression):
    """``dj.U(attrs) & q``: the distinct values of ``attrs`` in q (they become the primary key)."""

    def __init__(self, child: QueryExpression, attributes: Sequence[str]):
        self._child = child
        self._connection = child.connection
        self._restrictions = ()
        self._attributes = list(attributes)
        self._heading = Heading([dataclasses.replace(child.heading[a], in_key=True) for a in attributes])

    @property
    def heading(self) -> Heading:
        return self._heading

    def _sources(self) -> frozenset:
        return self._child.referenced_tables()

    def _base_shape(self):
        key, values = self._child._shape()
        return (None, ()) if key is None else (("U", key, tuple(self._attributes)), values)

    def _compile_base(self, ctx: BindContext | None = None) -> Compiled:
        inner = self._child._compile(ctx)
        sub = inner.select(self._attributes).distinct().subquery()
        return Compiled(sub, {n: sub.c[n] for n in self._attributes}, [], inner.tables)


class GroupBy(QueryExpression):
    """``dj.U(attrs).aggr(q, name='aggregate')``: aggregates per distinct value of attrs."""

    def __init__(self, child: QueryExpression, attributes: Sequence[str], computed: dict[str, str]):
        self._child = child
        self._connection = child.connection
        self._restrictions = ()
        self._attributes = list(attributes)
        self._computed = dict(computed)
        attrs = [dataclasses.replace(child.heading[a], in_key=True) for a in attributes]
        attrs += [Attribute(name=n, type="computed", category="computed", sql_expression=e) for n, e in computed.items()]
        self._heading = Heading(attrs)

    @property
    def heading(self) -> Heading:
        return self._heading

    def _sources(self) -> frozenset:
        return self._child.referenced_tables()

    def _base_shape(self):
        key, values = self._child._shape()
        if key is None:
            return None, ()
        return ("UG", key, tuple(self._attributes), tuple(self._computed.items())), values

    def _compile_base(self, ctx: BindContext | None = None) -> Compiled:
        inner = self._child._compile(ctx).as_subquery()
        cols = [inner.cols[a].label(a) for a in self._attributes]
        cols += [sa.literal_column("(" + e + ")").label(n) for n, e in self._computed.items()]
        stmt = sa.select(*cols).select_from(inner.from_)
        if self._attributes:
            stmt = stmt.group_by(*[inner.cols[a] for a in self._attributes])
        sub = stmt.subquery()
        return Compiled(sub, {n: sub.c[n] for n in self.heading.names}, [], inner.tables)


__all__ = ["QueryExpression", "Projection", "Join", "Aggregation", "Union", "Top", "U", "Compiled", "AndList", "Not"]


def _optional_import(module: str, method: str):
    """An optional dependency of one method, or an error that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        from .errors import MissingPackageError

        raise MissingPackageError(f"{method}() needs the package {module}, which is not installed: "
                                  f"pip install {module}") from None
