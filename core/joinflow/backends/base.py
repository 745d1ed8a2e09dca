"""What every backend provides.  Nothing outside backends/ branches on the dialect."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import sqlalchemy as sa

from ..errors import (
    AccessError,
    DataJointError,
    DataTypeError,
    DeadlockError,
    DeclarationError,
    DuplicateError,
    IntegrityError,
    LostConnectionError,
    MissingAttributeError,
    MissingTableError,
    QueryError,
    QuerySyntaxError,
    UnknownAttributeError,
)
from ..heading import Attribute
from ..types import int_range, parse_default

Encoder = Callable[[Any], Any]


class Value(sa.types.UserDefinedType):
    """Column/parameter type that lets the server decide: no bind casts, no coercion.

    SQLAlchemy's PostgreSQL dialect casts typed parameters (``%(p)s::VARCHAR``), which
    breaks comparisons with enum and other typed columns; values are encoded by the
    backend before they are bound, so nothing needs SQLAlchemy's type processing.
    """

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "VALUE"

    def coerce_compared_value(self, op, value):
        return self


VALUE = Value()


def bound(value: Any) -> sa.BindParameter:
    """A bound parameter for an already-encoded value."""
    return sa.bindparam(None, value, type_=VALUE, unique=True)


@dataclass
class ColumnInfo:
    """One column as the catalog reports it."""

    name: str
    native_type: str
    nullable: bool
    default: str | None
    comment: str
    in_key: bool
    key_position: int = 0
    autoincrement: bool = False


@dataclass
class ForeignKeyInfo:
    """One foreign key as the catalog reports it (full table names, quoted per backend)."""

    child: str
    parent: str
    columns: list[tuple[str, str]]  # (child column, parent column), in key order
    name: str = ""


@dataclass
class ColumnChange:
    """One column of an ``alter()``: added (old None), dropped (new None) or changed.

    ``new`` is the attribute as it goes to DDL (codec attributes lowered: native type,
    ``:<codec>:`` comment); ``old`` is the attribute read from the catalog."""

    old: Attribute | None
    new: Attribute | None
    type_changed: bool = False
    default_changed: bool = False
    nullable_changed: bool = False
    comment_changed: bool = False

    @property
    def renamed(self) -> bool:
        return self.old is not None and self.new is not None and self.old.name != self.new.name

    @property
    def definition_changed(self) -> bool:
        """Type, default or nullability: what needs more than a comment or a name."""
        return self.type_changed or self.default_changed or self.nullable_changed


@dataclass
class AlterPlan:
    """What ``Table.alter()`` changes; ``spec`` is the whole altered table (every column,
    hidden ones included, codecs lowered) for a backend that rebuilds the table."""

    changes: list[ColumnChange]
    comment: str | None  # the new table comment; None: unchanged
    spec: Any = None
    row_count: int | None = None
    # secondary foreign keys: added ones as declare.ForeignKeySpec, dropped ones as
    # (parent full table name, ((child column, parent column), ...)) read from the catalog
    foreign_keys_added: list = field(default_factory=list)
    foreign_keys_dropped: list[tuple[str, tuple]] = field(default_factory=list)
    # secondary indexes (unique, columns); dropped ones name the columns as the catalog has them
    indexes_added: list[tuple[bool, tuple]] = field(default_factory=list)
    indexes_dropped: list[tuple[bool, tuple]] = field(default_factory=list)
    lineage: dict[str, str] | None = None  # the table's new ~lineage rows; None: unchanged

    def __bool__(self) -> bool:
        return bool(self.changes or self.foreign_keys_added or self.foreign_keys_dropped
                    or self.indexes_added or self.indexes_dropped) or self.comment is not None

    @property
    def keys_changed(self) -> bool:
        return bool(self.foreign_keys_added or self.foreign_keys_dropped or self.indexes_added
                    or self.indexes_dropped)


ERROR_CLASSES = {
    "duplicate": DuplicateError,
    "foreign_key": IntegrityError,
    "not_null": MissingAttributeError,
    "check": DataTypeError,
    "data": DataTypeError,
    "syntax": QuerySyntaxError,
    "missing_table": MissingTableError,
    "lost": LostConnectionError,
    "access": AccessError,
    "unknown_column": UnknownAttributeError,
    "deadlock": DeadlockError,
}


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _scalar(value: Any) -> Any:
    """numpy scalars -> Python scalars (drivers do not know numpy)."""
    return value.item() if isinstance(value, np.generic) else value


def to_uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    if isinstance(value, str):
        return uuid.UUID(value)
    raise DataTypeError(f"cannot interpret {value!r} as a UUID")


def _seconds(shift):
    """``shift`` (a number or a SQL expression) as a SQL float expression."""
    if isinstance(shift, (int, float)):
        return sa.literal(float(shift), sa.Float)
    return sa.cast(shift, sa.Float)


class Backend:
    """Dialect-specific behaviour.  Subclasses: sqlite, postgresql, mysql."""

    name = "base"
    drivername = ""
    default_port: int | None = None
    max_name_length = 64
    begin_statement = "BEGIN"
    # BEGIN waits for every other writer to finish (SQLite's BEGIN IMMEDIATE): a worker may wait
    # there past its lease, so populate() checks the lease again once its transaction has begun
    begin_waits_for_writers = False
    # commits and opens the next transaction in one round trip (None: the backend has no such
    # statement); populate() uses it between keys made back to back
    commit_chain_statement: str | None = "COMMIT AND CHAIN"
    transactional_ddl = False
    # True where a schema is only a name prefix (SQLite): its ~lineage table is what makes an empty
    # schema exist, so it is created with the schema; elsewhere with the first table, as DataJoint
    lineage_marks_schema = False
    supports_schemas_natively = True
    # Where one failed statement aborts the whole open transaction (PostgreSQL refuses every later
    # statement and turns COMMIT into a silent ROLLBACK), the name of a savepoint that the connection
    # keeps just before each statement it runs inside a transaction: a failed statement is rolled
    # back to it, so an error the caller catches undoes that statement only and the transaction goes
    # on, as it does on SQLite and MySQL.  None: a failed statement undoes itself already.
    statement_savepoint: str | None = None

    def savepoint_statements(self) -> tuple[str, str, str]:
        """(set, move, roll back) SQL of the statement savepoint: set it at BEGIN; move it past
        statements that succeeded (release and set again, one round trip); roll back a failure."""
        name = self.statement_savepoint
        return (f"SAVEPOINT {name}", f"RELEASE SAVEPOINT {name}; SAVEPOINT {name}",
                f"ROLLBACK TO SAVEPOINT {name}")

    def transaction_aborted(self, dbapi_conn) -> bool:
        """Whether the server holds the open transaction as failed (its COMMIT would roll back)."""
        return False

    def executemany_is_atomic(self, rows: Sequence) -> bool:
        """Whether the driver's executemany of ``rows`` inside a transaction fails as a whole (one
        statement, or under the statement savepoint); if not, insert() wraps it in a savepoint.
        Default: one row (SQLite's executemany leaves the rows before a refused one behind)."""
        return len(rows) <= 1

    # whether the database name of a URL says where the schemas live (PostgreSQL: schemas live in one
    # database; SQLite: in one file); False for MySQL, whose schemas are the server's databases
    url_database_holds_schemas = True

    # -- engine -----------------------------------------------------------------------
    def make_url(self, cfg) -> sa.engine.URL:  # pragma: no cover - abstract
        raise NotImplementedError

    def engine_kwargs(self, cfg) -> dict:
        return {}

    def would_create(self, url: sa.engine.URL) -> str | None:
        """What connecting to ``url`` would create (an SQLite file that does not exist), or None.

        A server database is never created by connecting; an SQLite file is."""
        return None

    # -- timeouts -------------------------------------------------------------------------
    # database.read_timeout: True where the client gives up and closes the session (the server may
    # finish the statement); False where the server cancels the statement itself
    read_timeout_closes_connection = True

    def is_read_timeout(self, orig: BaseException) -> bool:
        """Whether this driver error is ``database.read_timeout`` running out on a statement."""
        return False

    def is_connect_timeout(self, orig: BaseException) -> bool:
        """Whether this connect error says the server did not answer in time."""
        text = str(orig).lower()
        return "timed out" in text or "timeout" in text

    # iteration (``for row in query``) reads on a session of its own, so the caller's session stays
    # free for other statements while rows arrive; False: on the caller's session (SQLite, whose
    # cursors step through rows lazily anyway, and whose in-memory database exists once per session)
    streams_on_own_session = True

    def stream_cursor(self, dbapi_conn):
        """A cursor that fetches rows from the server as they are read, not all at execute()."""
        return dbapi_conn.cursor()

    def advance_counter(self, conn, schema: str, table: str, column: str) -> None:
        """After rows gave explicit values to auto_increment ``column``: make the numbers it hands out
        next larger than every value in it (MySQL and SQLite's AUTOINCREMENT do so by themselves)."""

    def install_events(self, engine: sa.engine.Engine) -> None:
        """Per-connection set-up (pragmas, session variables)."""

    def cursor_returns_rows(self, cursor) -> bool:
        """Whether the statement just run on this DBAPI cursor produced a result set."""
        return cursor.description is not None

    def database_name(self, engine: sa.engine.Engine) -> str:
        return engine.url.database or ""

    # -- names --------------------------------------------------------------------------
    def quote(self, name: str) -> str:
        return self.dialect.identifier_preparer.quote_identifier(name)

    def full_table_name(self, schema: str, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}"

    def split_full_name(self, full_name: str) -> tuple[str, str]:
        """Inverse of full_table_name; also accepts unquoted ``schema.table``."""
        text = full_name.strip()
        q = self.dialect.identifier_preparer.initial_quote
        if text.startswith(q):
            end = text.index(q, 1)
            schema = text[1:end]
            rest = text[end + 1 :].lstrip(".")
            return schema, rest.strip(q)
        schema, _, table = text.partition(".")
        if not table:
            raise DataJointError(f"Table name {full_name!r} must be written as `schema.table`.")
        return schema, table.strip(q)

    def table_clause(self, schema: str, table: str, columns: Sequence[str]) -> sa.TableClause:
        return sa.table(table, *[sa.column(c, VALUE) for c in columns], schema=schema)

    # -- types and values -----------------------------------------------------------------
    def column_type(self, attr: Attribute, schema: str, table: str) -> str:  # pragma: no cover
        raise NotImplementedError

    def bool_to_db(self, value: Any) -> Any:
        return 1 if value else 0

    def uuid_to_db(self, value: uuid.UUID) -> Any:
        return value.bytes

    def date_to_db(self, value: Any, category: str, precision: int | None = None) -> Any:
        return value

    def decimal_to_db(self, value: Any, attr: Attribute | None = None) -> Any:
        return value

    def json_to_db(self, value: Any) -> Any:
        return json.dumps(value)

    def encoder(self, attr: Attribute) -> Encoder | None:
        """A function that turns a user value into a driver parameter, or None (as is)."""
        cat = attr.category
        name = attr.name
        if cat in ("int", "float", "decimal"):
            to_db = (lambda v: self.decimal_to_db(v, attr)) if cat == "decimal" else None

            def number(v, to_db=to_db):
                if v is None:
                    return None
                if type(v) is int or type(v) is float and v == v:
                    return to_db(v) if to_db else v
                if isinstance(v, (dict, list, tuple, set, bytes, bytearray)):
                    raise DataTypeError(f"attribute `{name}` is {attr.type}; got {type(v).__name__} {v!r:.40}")
                if isinstance(v, np.generic):
                    v = v.item()
                if isinstance(v, float) and v != v:
                    return None
                if isinstance(v, str):
                    if v.strip() == "":
                        return None
                    try:
                        float(v) if cat != "decimal" else decimal.Decimal(v)
                    except (ValueError, decimal.InvalidOperation):
                        raise DataTypeError(f"attribute `{name}` is {attr.type}; {v!r} is not a number") from None
                if isinstance(v, bool):  # 0/1 on every backend (PostgreSQL refuses a boolean for a number)
                    v = int(v)
                return to_db(v) if to_db else v

            return number
        if cat == "bool":
            to_db = self.bool_to_db

            def boolean(v):
                v = _scalar(v)
                if v is None or _is_nan(v):
                    return None
                if isinstance(v, str):
                    low = v.strip().lower()
                    if low in ("true", "1", "yes", "t", "y"):
                        return to_db(True)
                    if low in ("false", "0", "no", "f", "n"):
                        return to_db(False)
                    raise DataTypeError(f"attribute `{name}` is bool; cannot interpret {v!r}")
                return to_db(bool(v))

            return boolean
        if cat == "uuid":
            to_db = self.uuid_to_db

            def uuid_(v):
                if v is None:
                    return None
                try:
                    return to_db(to_uuid(v))
                except (ValueError, DataTypeError):
                    raise DataTypeError(
                        f"attribute `{name}` is uuid; {v!r} is not a UUID (give a uuid.UUID or its string)"
                    ) from None

            return uuid_
        if cat == "json":
            to_db = self.json_to_db

            def json_(v):
                return None if v is None else to_db(v)

            return json_
        if cat in ("date", "datetime"):
            to_db = self.date_to_db
            precision = attr.typeinfo.precision if attr.typeinfo else None

            def temporal(v):
                if type(v) is datetime.datetime or type(v) is datetime.date:
                    return to_db(v, cat, precision)
                if v is None or _is_nan(v):
                    return None
                if isinstance(v, np.datetime64):
                    v = v.astype("datetime64[us]").item()
                    if cat == "date" and isinstance(v, datetime.datetime):
                        v = v.date()
                elif hasattr(v, "to_pydatetime"):  # pandas Timestamp
                    v = v.to_pydatetime()
                elif isinstance(v, str):
                    try:
                        v = datetime.date.fromisoformat(v) if cat == "date" else datetime.datetime.fromisoformat(v)
                    except ValueError:
                        raise DataTypeError(
                            f"attribute `{name}` is {attr.type}; {v!r} is not an ISO "
                            f"{'date (YYYY-MM-DD)' if cat == 'date' else 'datetime (YYYY-MM-DD HH:MM:SS)'}"
                        ) from None
                return to_db(v, cat, precision)

            return temporal
        if cat == "bytes":

            def binary(v):
                if v is None:
                    return None
                if isinstance(v, (bytearray, memoryview)):
                    return bytes(v)
                if not isinstance(v, bytes):
                    raise DataTypeError(
                        f"attribute `{name}` holds bytes; got {type(v).__name__}. Encode the value "
                        "first (for arrays use a <blob> attribute)."
                    )
                return v

            return binary
        if cat in ("string", "enum"):

            def text(v):
                if v is None or type(v) is str:
                    return v
                if _is_nan(v):
                    return None
                v = _scalar(v)
                if isinstance(v, (bytes, dict, list, tuple, set)):
                    raise DataTypeError(
                        f"attribute `{name}` is {attr.type}; got {type(v).__name__} {v!r:.40}"
                    )
                return str(v)

            return text
        return None

    def decoder(self, attr: Attribute) -> Encoder | None:
        """A function that turns a driver value into the user's value, or None (as is)."""
        cat = attr.category
        if cat == "json":
            return lambda v: json.loads(v) if isinstance(v, (str, bytes)) else v
        if cat == "uuid":
            return to_uuid
        if cat == "bool":
            return lambda v: None if v is None else bool(v)
        if cat == "bytes":
            return lambda v: bytes(v) if isinstance(v, memoryview) else v
        if cat == "string" and attr.core and attr.type.lower().startswith("char"):
            # char(n) reads back without its blank padding on every backend, as MySQL returns it
            # (PostgreSQL pads to n; SQLite keeps what was written)
            return lambda v: v.rstrip(" ") if isinstance(v, str) else v
        return None

    def literal_default(self, attr: Attribute) -> Any:
        """Python value of a literal SQL default (used when a row gives None for it)."""
        try:
            parsed = parse_default(attr.default)
        except DataJointError:
            return attr.default
        if parsed is None or parsed.kind == "null":
            return None
        if parsed.kind == "now":
            return datetime.datetime.now()
        return parsed.text

    # -- DDL --------------------------------------------------------------------------------
    supports_on_update = False  # ON UPDATE CURRENT_TIMESTAMP
    display_name = "this backend"

    def ddl_literal(self, text: str, where: str = "A literal") -> str:
        """The one way a text goes into DDL as a string literal: defaults, enum members, comments.

        ``where`` names what the text is (``Table t: the default of attribute `a```) for the
        error when the text cannot be kept exactly. Standard SQL: quotes doubled."""
        self.check_ddl_text(text, where)
        return "'" + text.replace("'", "''") + "'"

    def comment_sql(self, text: str, schema: str, table: str, attr: str | None = None) -> str:
        """A column comment (``attr``) or the table comment as a DDL literal."""
        what = f"the comment of attribute `{attr}`" if attr else "the table comment"
        return self.ddl_literal(text, f"Table {schema}.{table}: {what}")

    def check_ddl_text(self, text: str, where: str = "A literal") -> None:
        """Refuse a text this backend would not keep exactly in its catalog."""
        if not isinstance(text, str):
            raise DeclarationError(f"{where}: {text!r} is not a text.")
        if "\x00" in text:
            raise DeclarationError(
                f"{where} contains a NUL character (\\x00), which no backend keeps in a definition. Remove it."
            )

    def default_sql(self, attr: Attribute, table: str = "") -> str:
        """`` DEFAULT ..`` of a column (or ""): built from the parsed default, never pasted."""
        if attr.nullable and (attr.default is None or attr.default.upper() == "NULL"):
            return " DEFAULT NULL"
        if attr.default is None:
            return ""
        where = f"Table {table}: the default of attribute `{attr.name}`" if table else \
            f"The default of attribute `{attr.name}`"
        try:
            parsed = parse_default(attr.default)
        except DataJointError:
            raise DeclarationError(
                f"{where} is `{attr.default}`, which is not a literal. A default is a quoted string, a number, "
                "null, or CURRENT_TIMESTAMP[(p)] for a datetime."
            ) from None
        if parsed.kind == "null":
            return " DEFAULT NULL"
        if parsed.kind == "now":
            if attr.category != "datetime":
                raise DeclarationError(f"{where} is {attr.default}, which only a datetime attribute can have.")
            if parsed.on_update and not self.supports_on_update:
                raise DeclarationError(
                    f"{where} is {attr.default}: {self.display_name} has no ON UPDATE CURRENT_TIMESTAMP. "
                    "Remove `ON UPDATE CURRENT_TIMESTAMP` and set the attribute when you update the row."
                )
            return " DEFAULT " + self.current_timestamp_sql(parsed)
        return " DEFAULT " + self.default_value_sql(attr, parsed.text, where)

    def current_timestamp_sql(self, parsed) -> str:
        """The SQL of a CURRENT_TIMESTAMP default (types.Default of kind "now")."""
        return "CURRENT_TIMESTAMP"

    def default_value_sql(self, attr: Attribute, text: str, where: str) -> str:
        """The SQL of a literal default value ``text`` (a string; numbers as their digits)."""
        return self.ddl_literal(text, where)

    def schema_exists(self, conn, schema: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def create_schema(self, conn, schema: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def drop_schema(self, conn, schema: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def list_schemas(self, conn) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def list_tables(self, conn, schema: str) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def create_table(self, conn, schema: str, table: str, spec) -> None:  # pragma: no cover
        raise NotImplementedError

    def drop_table(self, conn, schema: str, table: str) -> None:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {self.full_table_name(schema, table)}"))

    def column_comment(self, attr: Attribute) -> str:
        """The stored column comment: ``:type:`` of a core type, then the user's comment."""
        return (f":{attr.type}:" if attr.core else "") + (attr.comment or "")

    def alter_statements(self, conn, schema: str, table: str, plan: "AlterPlan") -> list[str]:
        """The SQL of ``Table.alter()`` (shown before it runs)."""
        raise NotImplementedError(f"Table.alter() is not implemented for {self.name}.")  # pragma: no cover

    def alter_table(self, conn, schema: str, table: str, plan: "AlterPlan") -> None:
        """Run ``alter_statements``: in one transaction where DDL is transactional."""
        import contextlib

        statements = self.alter_statements(conn, schema, table, plan)
        with conn.transaction if self.transactional_ddl else contextlib.nullcontext():
            for sql in statements:
                conn.ddl(sql)

    def foreign_key_sql(self, fk) -> str:
        """``FOREIGN KEY (..) REFERENCES parent (..) ON ..`` of a declare.ForeignKeySpec (as create_table)."""
        return (
            f"FOREIGN KEY ({', '.join(self.quote(c) for c in fk.attr_map)}) REFERENCES "
            f"{self.full_table_name(fk.parent_schema, fk.parent_table)} "
            f"({', '.join(self.quote(p) for p in fk.attr_map.values())}) ON UPDATE CASCADE ON DELETE RESTRICT"
        )

    def foreign_key_names(self, conn, schema: str, table: str) -> dict[tuple, str]:
        """Constraint names of the table's foreign keys by (parent full name, column pairs)."""
        child = self.full_table_name(schema, table)
        return {(fk.parent, tuple(fk.columns)): fk.name
                for fk in self.load_foreign_keys(conn, [schema]) if fk.child == child}

    def dropped_foreign_key_names(self, conn, schema: str, table: str, plan) -> list[str]:
        """The constraint names of the foreign keys ``plan`` drops (one catalog read)."""
        if not plan.foreign_keys_dropped:
            return []
        full = self.full_table_name(schema, table)
        names = self.foreign_key_names(conn, schema, table)
        out = []
        for parent, pairs in plan.foreign_keys_dropped:
            try:
                out.append(names[(parent, tuple(pairs))])
            except KeyError:
                raise DataJointError(
                    f"Table {full}: the foreign key ({', '.join(c for c, _ in pairs)}) -> {parent} is not in the "
                    "catalog any more (changed by another session?). Run alter() again."
                ) from None
        return out

    def index_names(self, conn, schema: str, table: str) -> list[tuple[str, bool, list[str]]]:
        """Secondary indexes with their names: (name, unique, columns)."""
        raise NotImplementedError  # pragma: no cover

    def dropped_index_names(self, conn, schema: str, table: str, plan) -> list[str]:
        """The names of the indexes ``plan`` drops (one catalog read)."""
        if not plan.indexes_dropped:
            return []
        full = self.full_table_name(schema, table)
        named = self.index_names(conn, schema, table)
        used: set = set()
        out = []
        for unique, cols in plan.indexes_dropped:
            found = next((name for name, uniq, icols in named if bool(uniq) == bool(unique)
                          and tuple(icols) == tuple(cols) and name not in used), None)
            if found is None:
                raise DataJointError(
                    f"Table {full}: the {'unique ' if unique else ''}index ({', '.join(cols)}) is not in the catalog "
                    "any more (changed by another session?). Run alter() again."
                )
            used.add(found)
            out.append(found)
        return out

    # -- catalog ---------------------------------------------------------------------------------
    def load_columns(self, conn, schema: str, table: str) -> tuple[list[ColumnInfo], str] | None:
        raise NotImplementedError  # pragma: no cover

    def load_foreign_keys(self, conn, schemas: Sequence[str] | None = None) -> list[ForeignKeyInfo]:
        raise NotImplementedError  # pragma: no cover

    def load_indexes(self, conn, schema: str, table: str) -> list[tuple[bool, list[str]]]:
        """Secondary indexes: (unique, columns), excluding the primary key."""
        raise NotImplementedError  # pragma: no cover

    # -- statements ------------------------------------------------------------------------------
    def insert(self, table: sa.TableClause, columns: Sequence[str], primary_key: Sequence[str], mode: str | None,
               select=None, reset: Sequence = ()):
        """INSERT statement; mode None (plain), 'skip' (skip duplicates) or 'replace' (replace the row).

        Values come as bind parameters ``p0, p1, ...`` in column order, or from ``select``.
        With 'replace', an existing row with the same primary key gets the given columns' values,
        and the attributes in ``reset`` (those the rows do not give) go back to their defaults, as
        if the row had been deleted and inserted again; the row stays in place, so rows of other
        tables that reference it are kept.
        """
        raise NotImplementedError  # pragma: no cover

    def column_default(self, table: sa.TableClause, attribute):
        """The SQL value a replaced row's column returns to when the row does not give it."""
        return sa.literal_column("DEFAULT")

    def rows_in(self, columns: Sequence, rows: Sequence[Sequence]):
        """``(c1, c2, ..) IN ((p, p, ..), ..)``: rows of bound parameters (a list of keys)."""
        return sa.tuple_(*columns).in_([sa.tuple_(*row) for row in rows])

    def lock_suffix(self) -> str:
        return " FOR UPDATE"

    def now(self):
        """The server's current local time as a SQL expression (millisecond precision)."""
        return sa.literal_column("CURRENT_TIMESTAMP(3)")

    def lease_clock(self, shift=None):
        """The clock that job leases are written and compared with, as SQL: the server's current
        time when the statement runs (not when its transaction began), plus ``shift`` seconds (a
        SQL expression, e.g. a float bind parameter, or a number).  Every worker reads the same
        clock, so a worker whose own clock is off or steps cannot expire another one's lease."""
        now = sa.literal_column("CURRENT_TIMESTAMP(3)")  # MySQL/MariaDB: the statement's start
        if shift is None:
            return now
        micro = sa.cast(sa.func.round(_seconds(shift) * 1000000), sa.Integer)
        return sa.func.timestampadd(sa.literal_column("MICROSECOND"), micro, now)

    def db_now(self, conn) -> datetime.datetime:
        value = conn.execute(sa.select(self.now())).scalar()
        return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value

    # -- named locks (coordination between workers) ----------------------------------------------
    def try_lock(self, conn, name: str) -> bool | None:
        """Take the session-level lock ``name`` without waiting: True if taken, False if another
        session holds it, None if this backend has no named locks."""
        return None

    def wait_lock(self, conn, name: str) -> None:
        """Take the session-level lock ``name``, waiting for its holder."""

    def unlock(self, conn, name: str) -> None:
        """Release the session-level lock ``name``."""

    def check_statement_size(self, conn, table: str, attributes: Sequence[Attribute],
                             rows: Sequence[Sequence]) -> None:
        """Refuse, before anything is sent, rows too large for the server to take in one statement
        (MySQL's ``max_allowed_packet``); ``attributes`` are those of the rows' (encoded) values.
        The other backends take values of any size their types allow."""

    # -- errors ------------------------------------------------------------------------------------
    def statement_too_large(self, exc: BaseException) -> bool:
        """Whether the server dropped the statement of ``exc`` for its size (sending it again fails
        again: no reconnect-and-retry)."""
        return False

    def classify_error(self, exc: BaseException) -> tuple[str | None, str]:
        """(kind, server message) for a driver exception; kind is a key of ERROR_CLASSES."""
        return None, str(exc)

    def translate_error(self, exc: BaseException, table: str | None = None) -> DataJointError:
        orig = getattr(exc, "orig", exc)
        kind, message = self.classify_error(orig)
        where = f" in table {table}" if table else ""
        if kind == "duplicate":
            return DuplicateError(
                f"Duplicate entry{where}: {message}. To ignore duplicate entries in insert, set "
                "skip_duplicates=True; to overwrite them, set replace=True."
            )
        if kind == "foreign_key":
            return IntegrityError(
                f"Foreign key constraint failed{where}: {message}. Insert the referenced parent rows "
                "first, or delete the dependent rows first (delete() cascades)."
            )
        if kind == "not_null":
            return MissingAttributeError(
                f"Missing value{where}: {message}. Give a value for every attribute that has no "
                "default, or declare it `= null`."
            )
        cls = ERROR_CLASSES.get(kind or "", QueryError)
        return cls(f"{message}{where}" if kind else f"{type(orig).__name__}: {message}{where}")


def int_check(attr: Attribute) -> tuple[int, int] | None:
    return int_range(attr.type) if attr.core else None


__all__ = [
    "AlterPlan",
    "Backend",
    "ColumnChange",
    "ColumnInfo",
    "ForeignKeyInfo",
    "to_uuid",
    "int_check",
]
