"""Query expressions: immutable trees compiled by one compiler to SQLAlchemy Core.

Every expression has a heading (its attributes and primary key) and compiles to a
``Compiled`` triple — a FROM clause, a mapping from attribute name to column
expression, and WHERE clauses.  Restrictions are kept on the expression and applied
at compile time, so ``(Session & key).delete()`` knows exactly what to delete.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import sqlalchemy as sa

from .condition import AndList, Not, compile_condition
from .errors import DataJointError, UnknownAttributeError
from .heading import Attribute, Heading


@dataclass
class Compiled:
    from_: Any
    cols: dict[str, Any]
    where: list = field(default_factory=list)
    tables: frozenset = frozenset()
    plain: bool = True  # attribute names resolve directly in SQL text over from_

    def select(self, names: Sequence[str]):
        return sa.select(*[self.cols[n].label(n) for n in names]).select_from(self.from_).where(*self.where)

    def as_subquery(self) -> "Compiled":
        sub = self.select(list(self.cols)).subquery()
        return Compiled(sub, {n: sub.c[n] for n in self.cols}, [], self.tables, True)


def is_table_class(obj: Any) -> bool:
    from .table import Table

    return isinstance(obj, type) and issubclass(obj, Table)


def _as_expression(obj: Any) -> "QueryExpression":
    if is_table_class(obj):
        return obj()
    if isinstance(obj, QueryExpression):
        return obj
    raise DataJointError(f"Expected a query expression or table class, got {type(obj).__name__}.")


def assert_join_compatibility(a: "QueryExpression", b: "QueryExpression", shared: Sequence[str]) -> None:
    """Semantic matching: namesakes must share their lineage (paper §5)."""
    for name in shared:
        la, lb = a.heading[name].lineage, b.heading[name].lineage
        if la is None or lb is None:
            raise DataJointError(
                f"Cannot join on attribute `{name}`: lineage missing on one side ({la} vs {lb}). "
                "This usually indicates a stale `~lineage` entry or a shared secondary attribute. "
                "Run `schema.rebuild_lineage()` if the table predates lineage tracking. If the "
                "lineages are genuinely different, use `.proj()` to rename one of the attributes, "
                "or pass semantic_check=False."
            )
        if la != lb:
            raise DataJointError(
                f"Cannot join on attribute `{name}`: different lineages ({la} vs {lb}). "
                "Use .proj() to rename one of the attributes."
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

    def _compile_base(self) -> Compiled:  # pragma: no cover - abstract
        raise NotImplementedError

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

    def _copy(self) -> "QueryExpression":
        return copy.copy(self)

    def _compile(self) -> Compiled:
        compiled = self._compile_base()
        if not self._restrictions:
            return compiled
        if any(isinstance(c, str) for c, _ in self._restrictions) and not compiled.plain:
            compiled = compiled.as_subquery()
        clauses = [compile_condition(self, compiled, cond, semantic_check=check) for cond, check in self._restrictions]
        compiled.where = compiled.where + clauses
        return compiled

    # -- restriction --------------------------------------------------------------------------
    def restrict(self, restriction: Any, semantic_check: bool = True) -> "QueryExpression":
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

    def _select(self, names=None, order_by=None, limit=None, offset=None):
        compiled = self._compile()
        names = list(names or self.heading.names)
        stmt = compiled.select(names).order_by(*self._order_clause(compiled, order_by))
        if limit is not None:
            stmt = stmt.limit(int(limit))
        if offset:
            if limit is None:
                raise DataJointError("offset requires limit.")
            stmt = stmt.offset(int(offset))
        return stmt

    def make_sql(self) -> str:
        stmt = self._select()
        dialect = self.connection.engine.dialect
        try:
            return str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        except Exception:
            return str(stmt.compile(dialect=dialect))

    def cursor(self, order_by=None, limit=None, offset=None):
        return self.connection.execute(self._select(order_by=order_by, limit=limit, offset=offset))

    # -- fetching --------------------------------------------------------------------------------------
    def _rows(self, names, order_by=None, limit=None, offset=None) -> list[tuple]:
        result = self.connection.execute(self._select(names, order_by, limit, offset))
        try:
            return result.cursor.fetchall() if result.cursor is not None else []
        finally:
            result.close()

    def _decoders(self, names) -> list:
        backend = self.connection.backend
        heading = self.heading
        return [None if heading[n].sql_expression is not None else backend.decoder(heading[n]) for n in names]

    def _fetch_dicts(self, names, order_by=None, limit=None, offset=None) -> list[dict]:
        rows = self._rows(names, order_by, limit, offset)
        dicts = [dict(zip(names, row)) for row in rows]
        for name, decode in zip(names, self._decoders(names)):
            if decode is not None:
                for d in dicts:
                    value = d[name]
                    if value is not None:
                        d[name] = decode(value)
        return dicts

    def to_dicts(self, order_by=None, limit=None, offset=None, squeeze: bool = False) -> list[dict]:
        return self._fetch_dicts(self.heading.names, order_by, limit, offset)

    def keys(self, order_by=None, limit=None, offset=None) -> list[dict]:
        return self._fetch_dicts(self.primary_key, order_by, limit, offset)

    def _dtype(self, names):
        fields = []
        for n in names:
            attr = self.heading[n]
            if attr.category == "float":
                fields.append((n, "f4" if attr.type == "float32" else "f8"))
            elif attr.category == "int" and not attr.nullable and attr.core:
                fields.append((n, {"int8": "i1", "int16": "i2", "int32": "i4"}.get(attr.type, "i8")))
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
        compiled = self._compile()
        sub = compiled.select(self.primary_key or self.heading.names).subquery()
        return int(self.connection.execute(sa.select(sa.func.count()).select_from(sub)).scalar())

    def __bool__(self) -> bool:
        compiled = self._compile()
        stmt = sa.select(sa.literal(1)).select_from(compiled.from_).where(*compiled.where).limit(1)
        return self.connection.execute(stmt).first() is not None

    def __contains__(self, item: Any) -> bool:
        return bool(self & item)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.to_dicts())

    # -- display ---------------------------------------------------------------------------------------
    def _preview_rows(self, limit: int):
        names = self.heading.names
        rows = self._fetch_dicts(names, limit=limit + 1)
        return names, rows

    def preview(self, limit: int | None = None, width: int | None = None) -> str:
        cfg = self.connection.config
        limit = limit or cfg["display.limit"]
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
        for new, old in mapping.items():
            attr = child.heading[old]
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
            if a not in heading.names:
                raise UnknownAttributeError(f"Attribute `{a}` is not found in query.")
        for a in excluded:
            if a in heading.primary_key:
                raise DataJointError(f"Cannot exclude primary key attribute {a}")
        renamed_from = {}
        computed = {}
        for new, spec in named.items():
            text = spec.strip()
            if text in heading.names:
                renamed_from[new] = text
            elif text.startswith("(") and text.endswith(")") and text[1:-1].strip() in heading.names:
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
        return cls(child, mapping, computed)

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

    def _compile_base(self) -> Compiled:
        inner = self._child._compile()
        if self._computed and not inner.plain:
            inner = inner.as_subquery()
        cols = {new: inner.cols[old] for new, old in self._mapping.items()}
        for new, sql in self._computed.items():
            cols[new] = inner.cols[sql] if sql in inner.cols else sa.literal_column("(" + sql + ")")
        renamed = any(new != old for new, old in self._mapping.items()) or bool(self._computed)
        return Compiled(inner.from_, cols, list(inner.where), inner.tables, inner.plain and not renamed)


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

    def _compile_base(self) -> Compiled:
        left = self._left._compile()
        right = self._right._compile()
        if (right.tables & left.tables) or (self._is_left and right.where):
            right = right.as_subquery()
        on = sa.and_(sa.true(), *[left.cols[n] == right.cols[n] for n in self._shared])
        from_ = sa.join(left.from_, right.from_, on, isouter=self._is_left)
        cols = dict(left.cols)
        for n, c in right.cols.items():
            cols.setdefault(n, c)
        return Compiled(from_, cols, left.where + right.where, left.tables | right.tables, False)


__all__ = ["QueryExpression", "Projection", "Join", "Compiled", "AndList", "Not"]
