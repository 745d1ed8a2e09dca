"""Tables: declare, insert, delete (cascading), update, drop, describe."""

from __future__ import annotations

import collections.abc
import csv
import contextlib
import dataclasses
import decimal
import logging
import operator
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import sqlalchemy as sa

from .declare import parse_definition
from .errors import (
    DataJointError,
    DataTypeError,
    DeclarationError,
    MissingAttributeError,
    MissingTableError,
    UnknownAttributeError,
)
from .backends.base import bound
from .condition import AndList, Not
from .expression import Compiled, QueryExpression, is_table_class
from .heading import Attribute, Heading, attribute_from_catalog
from .storage import Journal
from .validation import (fit_problem, insert_encoder, missing_fields, missing_fields_message, null_problem,
                         unknown_field_message, unknown_fields, validate_rows)

logger = logging.getLogger("joinflow")

LINEAGE_TABLE = "~lineage"
PART_NAME = re.compile(r"^(?P<master>(#|__|_)?[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*)__(?P<part>[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*)$")


def from_camel_case(name: str) -> str:
    """``SessionTrial`` -> ``session_trial``."""
    if not re.match(r"^[A-Z][A-Za-z0-9]*$", name):
        raise DataJointError(
            f"Class name {name!r} must be CamelCase: a capital letter, then letters and digits only."
        )
    return re.sub(r"(\B[A-Z])|(\b[A-Z])", lambda m: ("_" if m.group(1) else "") + m.group(0).lower(), name)


def to_camel_case(name: str) -> str:
    """``session_trial`` -> ``SessionTrial`` (tier prefix dropped)."""
    return "".join(part.capitalize() for part in name.lstrip("#_~").split("_") if part)


def part_master(table_name: str) -> str | None:
    match = PART_NAME.match(table_name)
    return match.group("master") if match else None


def tier_of(table_name: str) -> str | None:
    if part_master(table_name):
        return "Part"
    if table_name.startswith("~"):
        return None
    base = r"[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*"
    for prefix, tier in (("__", "Computed"), ("_", "Imported"), ("#", "Lookup"), ("", "Manual")):
        if re.fullmatch(re.escape(prefix) + base, table_name):
            return tier
    return None



# The table classes whose make() runs in this thread: their inserts are allowed in this thread only
# (a make() running in another thread, e.g. a parallel worker on its own connection, opens nothing here).
_making = threading.local()


@contextlib.contextmanager
def making(cls: type):
    """Inside: ``cls``'s rows may be inserted from this thread (``populate`` runs ``make()`` in it)."""
    classes = _making.__dict__.setdefault("classes", [])
    classes.append(cls)
    try:
        yield
    finally:
        classes.pop()


def _make_running(cls: type) -> bool:
    return cls in getattr(_making, "classes", ())


class ForeignKeyTarget:
    """What a foreign-key line needs to know about its parent."""

    def __init__(self, table: "Table"):
        self.schema = table.database
        self.table = table.table_name
        self.class_name = table.class_name
        self.heading = table.heading
        self.primary_key = table.primary_key
        self.renames: dict[str, str] = {}


def load_lineage(connection, schema: str, table: str) -> dict[str, str]:
    backend = connection.backend
    tc = backend.table_clause(schema, LINEAGE_TABLE, ["table_name", "attribute_name", "lineage"])
    try:
        rows = connection.sa_connection.execute(
            sa.select(tc.c.attribute_name, tc.c.lineage).where(tc.c.table_name == table)
        ).fetchall()
    except sa.exc.DBAPIError:
        if connection.in_transaction:
            raise
        return {}
    return dict(rows)


def load_heading(connection, schema: str, table: str) -> Heading:
    loaded = connection.backend.load_columns(connection, schema, table)
    if loaded is None:
        raise MissingTableError(
            f"Table {connection.backend.full_table_name(schema, table)} is not declared. Declare it "
            "by decorating its class with a Schema, or check the schema and table names."
        )
    columns, comment = loaded
    lineage = load_lineage(connection, schema, table)
    ordered = sorted((c for c in columns if c.in_key), key=lambda c: c.key_position)
    ordered += [c for c in columns if not c.in_key]
    attrs = [
        attribute_from_catalog(
            c.name, c.native_type, in_key=c.in_key, nullable=c.nullable, default=c.default,
            comment=c.comment, autoincrement=c.autoincrement, lineage=lineage.get(c.name),
        )
        for c in ordered
    ]
    return Heading(attrs, comment)


def warn_positional(stacklevel: int = 5) -> None:
    """Rows given as tuples/lists: deprecated in DataJoint 2.x, and warned about as there."""
    warnings.warn(
        "Positional inserts (tuples/lists) are deprecated, as in DataJoint 2.x: give dicts with the "
        "attribute names instead, e.g. table.insert1({'attribute': value, ...}).",
        DeprecationWarning, stacklevel=stacklevel)


class Table(QueryExpression):
    """A table in the database.  Subclass through the tiers (Manual, Lookup, ...)."""

    database: str | None = None
    definition: str = ""
    _connection = None
    _table_name: str | None = None  # set for FreeTable and generated classes
    _tier_prefix = ""
    _allow_insert = False
    _auto_populated = False
    _is_part = False

    # -- identity ---------------------------------------------------------------------------
    @property
    def table_name(self) -> str:
        return type(self)._compute_table_name()

    @classmethod
    def _compute_table_name(cls) -> str:
        if cls._table_name:
            return cls._table_name
        return cls._tier_prefix + from_camel_case(cls.__name__)

    @property
    def class_name(self) -> str:
        return type(self).__name__ if self._table_name is None or type(self).__name__ != "FreeTable" \
            else to_camel_case(self.table_name)

    _full_name_memo: tuple | None = None  # (class, database, connection, _table_name, full name)

    @property
    def full_table_name(self) -> str:
        memo = self._full_name_memo  # one per class: names are quoted once, not per query
        if memo is not None and memo[0] is type(self) and memo[1] == self.database \
                and memo[2] is self._connection and memo[3] == self._table_name:
            return memo[4]
        self._check_bound()
        name = self.connection.backend.full_table_name(self.database, self.table_name)
        type.__setattr__(type(self), "_full_name_memo",
                         (type(self), self.database, self._connection, self._table_name, name))
        return name

    def _check_bound(self) -> None:
        if self.database is None or self._connection is None:
            raise DataJointError(
                f"Class {type(self).__name__} is not properly configured: it is not associated with an "
                "activated schema. Decorate it with @schema (a dj.Schema object, activated) before use."
            )

    @property
    def heading(self) -> Heading:
        memo = self._full_name_memo  # fast path (make() reads it several times per key): the quoted name is known
        if memo is not None and memo[0] is type(self) and memo[2] is self._connection and memo[2] is not None \
                and memo[1] == self.database and memo[3] == self._table_name and memo[1] is not None:
            heading = memo[2].headings.get(memo[4])
            if heading is not None:
                return heading
        self._check_bound()
        cache = self.connection.headings
        key = self.full_table_name
        heading = cache.get(key)
        if heading is None:
            heading = cache[key] = load_heading(self.connection, self.database, self.table_name)
        return heading

    @property
    def is_declared(self) -> bool:
        self._check_bound()
        if self.full_table_name in self.connection.headings:
            return True
        return self.connection.backend.load_columns(self.connection, self.database, self.table_name) is not None

    def _table_clause(self, names=None):
        return self.connection.backend.table_clause(
            self.database, self.table_name, names if names is not None else list(self.heading.all_attributes)
        )

    def _compile_base(self, ctx=None) -> Compiled:
        tc = self._table_clause()
        return Compiled(tc, {n: tc.c[n] for n in self.heading.names}, [], frozenset({self.full_table_name}))

    def _sources(self) -> frozenset:
        return frozenset({self.full_table_name})

    def _foreign_key_target(self) -> ForeignKeyTarget:
        if self._restrictions:
            raise DataJointError("A foreign key cannot reference a restricted table.")
        return ForeignKeyTarget(self)

    # -- declaration ----------------------------------------------------------------------------
    def declare(self, context: dict | None = None) -> None:
        conn = self.connection
        backend = conn.backend
        if conn.in_transaction:
            raise DataJointError(f"Cannot declare table {self.full_table_name} inside a transaction.")
        name = self.table_name
        if len(name) > backend.max_name_length:
            raise DeclarationError(
                f"Table name {name} is {len(name)} characters; {backend.name} allows "
                f"{backend.max_name_length}. Use a shorter class name."
            )
        spec = parse_definition(
            self.definition, dict(context or {}), f"{self.database}.{name}",
            auto_populated=self._auto_populated,
            allow_new_pk=bool(conn.config["jobs.allow_new_pk_fields_in_computed_tables"]),
        )
        if self._auto_populated and conn.config["jobs.add_job_metadata"]:  # hidden _job_* columns
            from .autopopulate import job_metadata_attributes

            spec = dataclasses.replace(spec, attributes=list(spec.attributes) + job_metadata_attributes())
        if conn.config["provenance.capture"]:  # hidden _prov on Manual tables (joinflow.provenance)
            from .provenance import prov_attribute, wants_column

            if wants_column(conn.config, name):
                spec = dataclasses.replace(spec, attributes=list(spec.attributes) + [prov_attribute()])
        for fk in spec.foreign_keys:
            parent_full = backend.full_table_name(fk.parent_schema, fk.parent_table)
            if backend.load_columns(conn, fk.parent_schema, fk.parent_table) is None:
                raise DeclarationError(
                    f"Table {self.database}.{name}: foreign key to {parent_full}, which does not exist. "
                    "Declare the parent table first."
                )
        if any(a.codec is not None for a in spec.attributes):
            spec = self._lower_codecs(spec)
        lineage_rows = []
        for attr in spec.attributes:
            if attr.in_key and attr.lineage is None:
                lineage_rows.append((name, attr.name, f"{self.database}.{name}.{attr.name}"))
            elif attr.lineage is not None:
                lineage_rows.append((name, attr.name, attr.lineage))
        guard = conn.transaction if backend.transactional_ddl else contextlib.nullcontext()
        with guard:
            if backend.load_columns(conn, self.database, LINEAGE_TABLE) is None:  # the schema's first table
                from .schemas import create_lineage_table

                create_lineage_table(conn, self.database)
            backend.create_table(conn, self.database, name, spec)
            write_lineage(conn, self.database, name, lineage_rows)
        conn.forget_catalog()

    def _lower_codecs(self, spec):
        """Codec attributes as their columns: the dtype's native type, ``:<codec>:`` in the comment."""
        from .codecs import column_attribute
        from .storage import resolve_store_name

        backend = self.connection.backend
        lowered = []
        for attr in spec.attributes:
            chain = attr.codec
            if chain is None:
                lowered.append(attr)
                continue
            if chain.in_store:
                try:
                    default_key = "filepath_default" if chain.codecs[0].name == "filepath" else "default"
                    resolve_store_name(self.connection.config, chain.store, default_key)
                except DataJointError as exc:
                    raise DeclarationError(
                        f"Table {self.database}.{self.table_name}, attribute `{attr.name}` ({attr.type}): {exc}"
                    ) from None
            lowered.append(column_attribute(attr, backend, self.database, self.table_name))
        return dataclasses.replace(spec, attributes=lowered)

    def _codec_context(self, name: str, journal) -> dict:
        return {"schema": self.database, "table": self.table_name, "field": name,
                "config": self.connection.config, "journal": journal}

    # -- insert ------------------------------------------------------------------------------------
    def _check_direct_insert(self, allow_direct_insert) -> None:
        if self._auto_populated and not (allow_direct_insert or self._allow_insert or _make_running(type(self))):
            raise DataJointError(
                f"Inserts into an auto-populated table ({self.full_table_name}) can only be done inside "
                "its make method during a populate call. To override, set keyword argument "
                "allow_direct_insert=True."
            )

    def insert1(self, row: Any, **kwargs) -> None:
        """Insert one row (a dict, a sequence in heading order, or a numpy record)."""
        self.insert((row,), **kwargs)

    def validate(self, rows: Any, *, ignore_extra_fields: bool = False):
        """Check rows as ``insert`` would, without inserting: a ``ValidationResult`` (true when valid)."""
        return validate_rows(self, rows, ignore_extra_fields=ignore_extra_fields)

    @property
    def staged_insert1(self):
        """``with T.staged_insert1 as s:`` write ``<object@>`` values in place, then insert the row."""
        from .staged_insert import StagedInsert

        return StagedInsert(self)

    def insert(
        self,
        rows: Any,
        replace: bool = False,
        skip_duplicates: bool = False,
        ignore_extra_fields: bool = False,
        allow_direct_insert: bool | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """Insert rows: dicts, sequences, numpy records, a pandas DataFrame, a CSV path, or a query."""
        self.connection.refuse_writes_while_cached("insert into", self.full_table_name)
        self._check_direct_insert(allow_direct_insert)
        if replace and skip_duplicates:
            raise DataJointError("insert: choose replace=True or skip_duplicates=True, not both.")
        if is_table_class(rows) or isinstance(rows, QueryExpression):
            if chunk_size:
                raise DataJointError("chunk_size is not supported when inserting from a query; insert the query's rows "
                                     "in one statement (leave chunk_size out).")
            return self._insert_from_query(rows, skip_duplicates=skip_duplicates, replace=replace,
                                           ignore_extra_fields=ignore_extra_fields)
        fields, values, lenient_text = self._normalize_rows(rows)
        if not values:
            return
        heading = self.heading
        known = heading.all_attributes
        checked = heading.__dict__.get("_jf_insert_checked")  # field tuples that passed the checks below
        if checked is None:
            checked = heading._jf_insert_checked = {}
        fields_key = tuple(fields)
        plain = checked.get(fields_key)  # True: no codec among the fields
        if plain is not None:
            mode = "replace" if replace else "skip" if skip_duplicates else None
            self._stamp_provenance(fields, values)
            if plain:
                self._encode(fields, values, lenient_text)
                self._execute_insert(fields, values, mode, chunk_size)
                return
            return self._insert_with_codecs(fields, values, lenient_text, mode, chunk_size)
        unknown = unknown_fields(heading, fields)
        if unknown:
            if not ignore_extra_fields:
                raise UnknownAttributeError(unknown_field_message(self.full_table_name, heading, unknown[0]))
            keep = [i for i, f in enumerate(fields) if f not in unknown]
            fields = [fields[i] for i in keep]
            values = [[row[i] for i in keep] for row in values]
        missing = missing_fields(heading, fields)
        if missing:
            raise MissingAttributeError(missing_fields_message(self.full_table_name, missing, empty=not fields))
        mode = "replace" if replace else "skip" if skip_duplicates else None
        plain = not any(known[f].codec is not None for f in fields)
        if len(checked) < 64:
            checked[tuple(fields)] = plain
        self._stamp_provenance(fields, values)
        if plain:
            self._encode(fields, values, lenient_text)
            self._execute_insert(fields, values, mode, chunk_size)
            return
        self._insert_with_codecs(fields, values, lenient_text, mode, chunk_size)

    def insert_dataframe(self, df, index_as_pk: bool | None = None, **insert_kwargs) -> None:
        """Insert a pandas DataFrame, e.g. one from ``to_pandas()`` (primary key as the index).

        ``index_as_pk``: None (default) uses the index as columns when its names are exactly the
        primary key's and drops an unnamed index; True requires that (else an error); False drops
        the index.  Other keyword arguments go to ``insert``."""
        import pandas as pd

        if not isinstance(df, pd.DataFrame):
            raise DataJointError(f"insert_dataframe requires a pandas DataFrame, not {type(df).__name__}; use insert() "
                                 "for other rows.")
        names = [n for n in df.index.names if n is not None]
        if index_as_pk is None:
            index_as_pk = bool(names) and set(names) == set(self.primary_key)
        elif index_as_pk and set(names) != set(self.primary_key):
            raise DataJointError(
                f"insert_dataframe into {self.full_table_name}: the DataFrame's index columns {names} do not match "
                f"the primary key {list(self.primary_key)}; pass index_as_pk=False to ignore the index, or "
                "reset_index() first."
            )
        self.insert(df.reset_index(drop=not index_as_pk), **insert_kwargs)

    def _stamp_provenance(self, fields: list, values: list) -> None:
        """Capture on and the table has hidden ``_prov``: add it to the rows (joinflow.provenance)."""
        if self.connection.config["provenance.capture"] and "_prov" in self.heading.all_attributes:
            from .provenance import stamp

            stamp(self, fields, values)

    def _insert_with_codecs(self, fields, values, lenient_text, mode, chunk_size) -> None:
        # codec values may write objects to stores: delete them again if the insert fails
        journal = Journal()
        try:
            self._encode(fields, values, lenient_text, journal)
            self._execute_insert(fields, values, mode, chunk_size)
        except BaseException:
            journal.undo()
            raise
        if journal and self.connection.in_transaction:
            self.connection.on_rollback(journal.undo)

    def _normalize_rows(self, rows: Any) -> tuple[list[str], list[list], bool]:
        """(field names, row value lists, came-from-pandas)."""
        kind = type(rows)
        if (kind is tuple or kind is list) and rows and type(rows[0]) is dict:  # insert1(dict), a list of dicts
            return self._dict_rows(rows)
        if isinstance(rows, Path) or isinstance(rows, str) and rows.lower().endswith(".csv"):
            # a CSV file: every value as the text in the file (as DataJoint reads it), so a code like
            # zip "01352" reaches a char column as written; number, date and bool columns parse the
            # text by the value rules (blank text in a number column is NULL)
            with open(rows, newline="") as f:
                records = list(csv.DictReader(f))
            if not records:
                return [], [], False
            fields, values, _ = self._dict_rows(records)
            known = self.heading.all_attributes
            # an empty field of a column that is not text (a number, a date, ...) is a missing value
            blank = [i for i, f in enumerate(fields) if f in known and known[f].category not in ("string", "enum")]
            for row in values:
                for i in blank:
                    if row[i] == "":
                        row[i] = None
            return fields, values, False
        if hasattr(rows, "itertuples") and hasattr(rows, "columns"):  # pandas DataFrame
            frame = rows
            if any(n is not None for n in frame.index.names):
                frame = frame.reset_index()
            fields = [str(c) for c in frame.columns]
            return fields, [list(t) for t in frame.itertuples(index=False, name=None)], True
        if isinstance(rows, np.ndarray) and rows.dtype.names:
            return list(rows.dtype.names), [list(t) for t in rows.tolist()], False
        module = type(rows).__module__
        if module.startswith("polars") and hasattr(rows, "iter_rows") and hasattr(rows, "columns"):
            return [str(c) for c in rows.columns], [list(r) for r in rows.iter_rows()], False
        if module.startswith("pyarrow") and hasattr(rows, "to_pylist") and hasattr(rows, "column_names"):
            fields = [str(c) for c in rows.column_names]
            return fields, [[r[f] for f in fields] for r in rows.to_pylist()], False
        if isinstance(rows, collections.abc.Mapping) or isinstance(rows, np.void):
            raise DataJointError("insert expects a collection of rows; use insert1 for a single row.")
        rows = list(rows)
        if not rows:
            return [], [], False
        first = rows[0]
        if isinstance(first, collections.abc.Mapping):
            return self._dict_rows(rows)
        if isinstance(first, np.void) and first.dtype.names:
            fields = list(first.dtype.names)
            return fields, [list(r.tolist()) for r in rows], False
        if isinstance(first, (str, bytes)) or not isinstance(first, collections.abc.Sequence):
            raise DataJointError(
                f"Cannot insert a {type(first).__name__} into {self.full_table_name}: give dicts, "
                "sequences in heading order, numpy records or a pandas DataFrame."
            )
        names = self.heading.names
        warn_positional()
        if any(len(r) != len(first) for r in rows):
            raise DataJointError("Attempt to insert rows with different fields.")
        width = len(names)
        for r in rows:
            if len(r) != width:  # a shorter row would leave it to the order which values are missing
                raise DataJointError(
                    f"Incorrect number of attributes: {len(r)} given; {width} expected. A positional row for "
                    f"{self.full_table_name} gives one value per attribute, in heading order "
                    f"({', '.join(names)}); give a dict to leave attributes to their defaults."
                )
        return list(names), [list(r) for r in rows], False

    @staticmethod
    def _dict_rows(rows: list | tuple) -> tuple[list[str], list[list], bool]:
        """(field names, row value lists, False) of mappings that all have the first one's fields."""
        fields = list(rows[0].keys())
        n = len(fields)
        try:
            if n > 1:
                getter = operator.itemgetter(*fields)
                values = [list(getter(row)) for row in rows]
            else:
                values = [[row[f] for f in fields] for row in rows]
        except (KeyError, TypeError):
            raise DataJointError("Attempt to insert rows with different fields.") from None
        if any(len(row) != n for row in rows):
            raise DataJointError("Attempt to insert rows with different fields.")
        return fields, values, False

    def _encode(self, fields: list[str], values: list[list], lenient_text: bool, journal=None) -> None:
        backend = self.connection.backend
        heading = self.heading
        # the encoders depend only on the backend and the attribute: made once per heading
        memo = heading.__dict__.get("_jf_encoders")
        if memo is None or memo[0] is not backend:
            memo = heading._jf_encoders = (backend, {})
        encoders = memo[1]
        keys = None
        for i, name in enumerate(fields):
            attr = heading[name]
            if attr.codec is not None:
                if keys is None:  # the rows' primary keys, as given (before any column is encoded)
                    where = [(k, fields.index(k)) for k in heading.primary_key if k in fields]
                    keys = [{k: row[j] for k, j in where} for row in values]
                self._encode_codec(i, attr, values, keys, journal)
                continue
            try:
                encode = encoders[name]
            except KeyError:  # the value rules (validation.value_rule), then the backend's encoding
                encode = encoders[name] = insert_encoder(backend, attr)
            fallback = backend.literal_default(attr) if (not attr.nullable and attr.default is not None) else None
            needs_default = not attr.nullable and attr.default is not None
            try:
                if encode is not None:
                    for row in values:
                        row[i] = encode(row[i])
            except (DataTypeError, ValueError, TypeError, OverflowError, decimal.InvalidOperation) as exc:
                raise DataTypeError(
                    f"Table {self.full_table_name}, attribute `{name}` ({attr.type}): {exc}"
                ) from None
            if needs_default or attr.in_key:
                for row in values:
                    if row[i] is None:
                        if attr.in_key and null_problem(attr):
                            raise MissingAttributeError(f"Table {self.full_table_name}: {null_problem(attr)}")
                        if needs_default:
                            row[i] = encode(fallback) if encode else fallback

    def _register_store_use(self, attr: Attribute) -> None:
        """Record in the store that this database has rows of this schema referring to it (once per
        process), so that gc run from another database sharing the store knows of these rows."""
        from .storage import database_identity, get_store, register_database

        if attr.codec.codecs[-1].name == "filepath":  # files the user manages: gc never touches them
            return
        try:
            store = get_store(self.connection.config, attr.codec.store)
        except DataJointError:
            return  # encoding reports the store problem with the table and attribute
        register_database(store, self.database, database_identity(self.connection))

    def _encode_codec(self, i: int, attr: Attribute, values: list[list], keys: list[dict], journal) -> None:
        from .codecs import storage_attribute

        if attr.codec.in_store and any(row[i] is not None for row in values):
            self._register_store_use(attr)
        encode = attr.codec.encoder(self._codec_context(attr.name, journal))
        to_db = insert_encoder(self.connection.backend, storage_attribute(attr))
        k = 0
        try:
            for k, row in enumerate(values):
                value = row[i]
                if value is not None:
                    value = encode(value, keys[k])
                    row[i] = to_db(value) if to_db is not None else value
        except DataJointError as exc:
            raise type(exc)(f"Table {self.full_table_name}, attribute `{attr.name}` ({attr.type}), row {k}: {exc}") \
                from None
        except (TypeError, ValueError, OSError, OverflowError) as exc:
            raise DataTypeError(
                f"Table {self.full_table_name}, attribute `{attr.name}` ({attr.type}), row {k}: cannot encode "
                f"{type(values[k][i]).__name__} value: {exc}"
            ) from None

    def _execute_insert(self, fields, values, mode, chunk_size=None) -> None:
        conn = self.connection
        backend = conn.backend
        heading = self.heading
        # the INSERT is compiled once per (table, fields, mode) and heading (populate inserts per key)
        cache = conn.__dict__.setdefault("_insert_sql_cache", {})
        full_name = self.full_table_name
        cache_key = (full_name, tuple(fields), mode)
        hit = cache.get(cache_key)
        if hit is None or hit[0] is not heading:
            reset = ()
            if mode == "replace":  # the row is replaced whole: attributes not given return to their defaults
                given = set(fields)
                reset = [a for a in heading.all_attributes.values()
                         if not a.in_key and not a.autoincrement and a.name not in given]
            clause = self._table_clause(list(fields) + [a.name for a in reset])
            stmt = backend.insert(clause, fields, heading.primary_key, mode, reset=reset)
            compiled = stmt.compile(dialect=conn.engine.dialect)
            if compiled.positional:
                order = [int(name[1:]) for name in compiled.positiontup]
                layout = None if order == list(range(len(fields))) else order  # None: rows as they are
            else:
                layout = [f"p{i}" for i in range(len(fields))]
            counter = next((f for f in fields if heading[f].autoincrement), None)  # given explicitly
            hit = cache[cache_key] = (heading, compiled, compiled.string, compiled.positional, layout, counter)
        _, compiled, sql, positional, layout, counter = hit
        backend.check_statement_size(conn, full_name, [heading[f] for f in fields], values)  # MySQL: max_allowed_packet
        if positional:
            if layout is not None:
                values = [[row[j] for j in layout] for row in values]
            params = [tuple(row) for row in values]
        else:
            params = [dict(zip(layout, row)) for row in values]
        size = int(chunk_size or conn.config["insert.batch_size"] or len(params))
        if conn.in_transaction and len(params) <= size and backend.executemany_is_atomic(params):
            try:  # the usual insert1 inside make(): one statement, which fails as a whole
                conn.executemany_driver(sql, params, table=full_name)
            except DataTypeError as exc:
                raise self._diagnose(fields, values, exc) from None
        else:  # all rows or none, also when the caller catches the error inside its transaction
            with conn.atomic_block():
                try:
                    for start in range(0, len(params), size):
                        conn.executemany_driver(sql, params[start : start + size], table=full_name)
                except DataTypeError as exc:
                    raise self._diagnose(fields, values, exc) from None
        if counter is not None:  # explicit values for an auto_increment attribute: later numbers go past them
            backend.advance_counter(conn, self.database, self.table_name, counter)

    def _diagnose(self, fields, values, exc) -> DataJointError:
        """Name the attribute and row behind a value the server refused."""
        heading = self.heading
        for i, name in enumerate(fields):
            attr = heading[name]
            for k, row in enumerate(values):
                problem = fit_problem(attr, row[i])
                if problem:
                    return DataTypeError(
                        f"Table {self.full_table_name}, attribute `{name}` ({attr.type}): value {row[i]!r} "
                        f"(row {k}) does not fit: {problem} Server said: {exc}"
                    )
        return exc

    def _insert_from_query(self, query, *, skip_duplicates, replace, ignore_extra_fields) -> None:
        query = query() if is_table_class(query) else query
        names = [n for n in query.heading.names if n in self.heading.names or not ignore_extra_fields]
        unknown = [n for n in names if n not in self.heading.names]
        if unknown:
            raise UnknownAttributeError(
                f"`{unknown[0]}` is not in the table heading of {self.full_table_name}. Project it away "
                "or pass ignore_extra_fields=True."
            )
        if replace:
            return self.insert(query.to_dicts(), replace=True, ignore_extra_fields=ignore_extra_fields,
                               allow_direct_insert=True)
        if skip_duplicates:  # rows already present by primary key are left out
            query = query.restrict(Not(self.proj()), semantic_check=False)
        from .provenance import copy_select

        copied = copy_select(self, query, names)  # the source rows' hidden _prov goes along
        if copied is not None:
            names, select = copied
        else:
            select = query._select(names)
        stmt = sa.insert(self._table_clause(names)).from_select(names, select)
        with self.connection.transaction_if_needed():
            self.connection.execute(stmt, table=self.full_table_name)

    # -- delete ------------------------------------------------------------------------------------
    def delete_quick(self, get_count: bool = False):
        """Delete the restricted rows in one statement: no cascade, no prompt."""
        self.connection.refuse_writes_while_cached("delete from", self.full_table_name)
        compiled = self._compile()
        table = compiled.from_
        if isinstance(table, sa.TableClause):
            stmt = sa.delete(table).where(*compiled.where)
        else:  # e.g. restricted by dj.Top: delete the rows whose key the derived query selects
            own = self._table_clause()
            sub = compiled.select(self.primary_key).subquery()
            stmt = sa.delete(own).where(sa.exists(sa.select(sa.literal(1)).select_from(sub).where(
                *[own.c[k] == sub.c[k] for k in self.primary_key])))
        result = self.connection.execute(stmt, table=self.full_table_name)
        return result.rowcount if get_count else None

    def delete(self, transaction: bool = True, prompt: bool | None = None, part_integrity: str = "enforce", *,
               dry_run: bool = False) -> int | dict[str, int]:
        """Delete the restricted rows and, cascading, every row that depends on them.

        ``part_integrity``: "enforce" (part rows go only with their master), "ignore", or
        "cascade" (deleting part rows deletes their masters too).  ``dry_run=True`` (joinflow)
        deletes nothing: it returns ``{full table name: rows the delete would remove}`` for every
        table the cascade reaches, counted by plain SELECTs (no transaction, no locks, no prompt).
        """
        if part_integrity not in ("enforce", "ignore", "cascade"):
            raise DataJointError(
                f'part_integrity must be "enforce", "ignore" or "cascade", not {part_integrity!r}.'
            )
        conn = self.connection
        if not dry_run:
            conn.refuse_writes_while_cached("delete from", self.full_table_name)
        prompt = conn.config["safemode"] if prompt is None else prompt
        if self._is_part and part_integrity == "enforce":
            raise DataJointError(
                f"Cannot delete from a Part directly ({self.full_table_name}). Delete from master instead, "
                "or use part_integrity='ignore' to delete part rows alone, or part_integrity='cascade' to "
                "delete their masters too."
            )
        if dry_run:
            return {name: len(expr) for name, expr in self._cascade_plan(part_integrity)}
        if conn.in_transaction and (transaction and prompt):
            raise DataJointError("delete() inside a transaction requires prompt=False.")
        plan = self._cascade_plan(part_integrity)
        if prompt:
            for name, expr in plan:
                logger.info("%s (%d tuples)", name, len(expr))
                print(f"{name} ({len(expr)} tuples)")
        own = transaction and not conn.in_transaction
        if own:
            conn.start_transaction()
        try:
            count = 0
            for name, expr in reversed(plan):
                deleted = expr.delete_quick(get_count=True)
                if name == self.full_table_name:
                    count = deleted
        except BaseException:
            if own:
                conn.cancel_transaction()
            raise
        try:
            confirmed = not prompt or _confirm("Commit deletes?")
        except BaseException:  # no answer (no terminal, Ctrl-C): nothing deleted, no transaction left open
            if own:
                conn.cancel_transaction()
            raise
        if not confirmed:
            if own:
                conn.cancel_transaction()
            print("Deletes cancelled.")
            return 0
        if own:
            conn.commit_transaction()
        return count

    def _cascade_plan(self, part_integrity: str) -> list[tuple[str, "Table"]]:
        """Tables to delete from, parents before children, each restricted to its doomed rows."""
        conn = self.connection
        deps = conn.dependencies
        deps.load()
        roots: dict[str, list] = {self.full_table_name: [self]}
        while True:
            restricted = self._propagate(deps, roots)
            extra = False
            for name, expr in list(restricted.items()):
                master = deps.master_of(name)
                if master is None:
                    continue
                doomed_masters = restricted.get(master)
                orphaned = expr if doomed_masters is None else expr - doomed_masters.proj()
                if part_integrity == "ignore" or not orphaned:
                    continue
                if part_integrity == "enforce":
                    raise DataJointError(
                        f"Attempt to delete part table {name} before its master {master}. Delete from the "
                        "master instead, or pass part_integrity='cascade' (delete the masters too) or "
                        "part_integrity='ignore'."
                    )
                master_table = FreeTable(conn, master)
                keys = (master_table & orphaned.proj()).keys()  # pinned: the parts go first
                roots.setdefault(master, []).append(master_table & keys)
                extra = True
            if not extra:
                return [(name, restricted[name]) for name in deps.topological(restricted)]

    @staticmethod
    def _propagate(deps, roots: dict[str, list]) -> dict[str, "Table"]:
        graph = deps.graph
        affected = set(roots)
        for root in roots:
            affected |= deps.descendants(root)
        restricted: dict[str, Table] = {}
        conn = next(iter(roots.values()))[0].connection
        for node in deps.topological(affected):
            conditions = []
            for own in roots.get(node, []):
                reads_doomed = own.referenced_tables() & (affected - {node})
                has_sql_text = any(isinstance(c, str) for c in own.restriction)
                if reads_doomed or (has_sql_text and len(affected) > 1):
                    # the restriction reads tables deleted before this one: pin the keys now
                    conditions.append(own.keys())
                else:
                    conditions.append(AndList(own.restriction) if own.restriction else True)
            for parent in (graph.predecessors(node) if node in graph else ()):
                if parent not in restricted:
                    continue
                for attr_map in graph.edges[parent, node]["attr_maps"]:
                    renames = {child: par for child, par in attr_map.items() if child != par}
                    parent_expr = restricted[parent]
                    conditions.append(parent_expr.proj(**renames) if renames else parent_expr.proj())
            if conditions:
                restricted[node] = FreeTable(conn, node).restrict(conditions, semantic_check=False)
        return restricted

    # -- drop ----------------------------------------------------------------------------------------
    def drop_quick(self) -> None:
        """Drop this table only (no cascade, no prompt)."""
        conn = self.connection
        if conn.in_transaction:
            raise DataJointError("Cannot drop tables inside a transaction.")
        if not self.is_declared:
            logger.info("Table %s does not exist; nothing to drop.", self.full_table_name)
            return
        conn.backend.drop_table(conn, self.database, self.table_name)
        tc = conn.backend.table_clause(self.database, LINEAGE_TABLE, ["table_name"])
        with contextlib.suppress(DataJointError):
            conn.execute(sa.delete(tc).where(tc.c.table_name == self.table_name))
        conn.forget_catalog()

    def drop(self, prompt: bool | None = None, part_integrity: str = "enforce") -> None:
        """Drop this table and every table that depends on it, leaves first."""
        if self._restrictions:
            raise DataJointError("A restricted table cannot be dropped; drop() works on the whole table.")
        if self._is_part and part_integrity != "ignore":
            raise DataJointError(
                f"Cannot drop a Part table ({self.full_table_name}) on its own: drop its master, or pass "
                "part_integrity='ignore'."
            )
        conn = self.connection
        prompt = conn.config["safemode"] if prompt is None else prompt
        deps = conn.dependencies
        deps.load()
        names = {self.full_table_name} | deps.descendants(self.full_table_name)
        for name in list(names):
            names |= set(deps.parts_of(name))
        order = deps.topological(names)
        if prompt:
            for name in order:
                print(f"{name} ({len(FreeTable(conn, name))} tuples)")
            if not _confirm("Proceed?"):
                print("Drop cancelled.")
                return
        for name in reversed(order):
            FreeTable(conn, name).drop_quick()

    # -- update ----------------------------------------------------------------------------------------
    def update1(self, row: dict) -> None:
        """Change secondary attributes of one existing row, identified by its full primary key."""
        self.connection.refuse_writes_while_cached("update", self.full_table_name)
        if self._restrictions:
            raise DataJointError("Update is only allowed on an unrestricted table; pass the key in the row.")
        row = dict(row)
        heading = self.heading
        missing = [k for k in heading.primary_key if k not in row]
        if missing:
            raise DataJointError(
                f"update1 on {self.full_table_name} needs the full primary key; missing {', '.join(missing)}."
            )
        unknown = [k for k in row if k not in heading.names]
        if unknown:
            raise UnknownAttributeError(f"`{unknown[0]}` is not in the table heading of {self.full_table_name}.")
        key = {k: row.pop(k) for k in heading.primary_key}
        if not row:
            raise DataJointError("update1: give at least one secondary attribute to change.")
        target = self & key
        if len(target) != 1:
            raise DataJointError("Update can only be applied to one existing entry.")
        backend = self.connection.backend
        values = {}
        journal = Journal()
        for name, value in row.items():
            attr = heading[name]
            if value is None and not attr.nullable:
                value = backend.literal_default(attr)
                if value is None:
                    raise MissingAttributeError(
                        f"update1: attribute `{name}` of {self.full_table_name} is not nullable and has no default."
                    )
            if attr.codec is not None:
                cell = [[value]]
                self._encode_codec(0, attr, cell, [key], journal)
                values[name] = cell[0][0]
                continue
            encode = insert_encoder(backend, attr)
            try:
                values[name] = encode(value) if encode and value is not None else value
            except DataTypeError as exc:
                raise DataTypeError(f"Table {self.full_table_name}, attribute `{name}` ({attr.type}): {exc}") from None
        try:
            backend.check_statement_size(self.connection, self.full_table_name, [heading[n] for n in values],
                                         [list(values.values())])
        except BaseException:
            journal.undo()
            raise
        compiled = target._compile()
        stmt = sa.update(compiled.from_).where(*compiled.where).values(
            {compiled.from_.c[n]: bound(v) for n, v in values.items()}
        )
        try:
            with self.connection.transaction_if_needed():
                self.connection.execute(stmt, table=self.full_table_name)
        except BaseException:
            journal.undo()
            raise
        if journal and self.connection.in_transaction:
            self.connection.on_rollback(journal.undo)

    # -- graph navigation --------------------------------------------------------------------------------
    def _related(self, names: Iterable[str], as_objects: bool):
        names = list(names)
        return [FreeTable(self.connection, n) for n in names] if as_objects else names

    def parents(self, primary: bool | None = None, as_objects: bool = False, foreign_key_info: bool = False):
        deps = self.connection.dependencies
        deps.load()
        result = []
        for parent, info in deps.parents(self.full_table_name).items():
            if primary is not None and info["primary"] != primary:
                continue
            result.append((parent, info) if foreign_key_info else parent)
        if foreign_key_info:
            return [(FreeTable(self.connection, p) if as_objects else p, i) for p, i in result]
        return self._related(result, as_objects)

    def children(self, primary: bool | None = None, as_objects: bool = False, foreign_key_info: bool = False):
        deps = self.connection.dependencies
        deps.load()
        result = []
        for child, info in deps.children(self.full_table_name).items():
            if primary is not None and info["primary"] != primary:
                continue
            result.append((child, info) if foreign_key_info else child)
        if foreign_key_info:
            return [(FreeTable(self.connection, c) if as_objects else c, i) for c, i in result]
        return self._related(result, as_objects)

    def descendants(self, as_objects: bool = False):
        deps = self.connection.dependencies
        deps.load()
        names = {self.full_table_name} | deps.descendants(self.full_table_name)
        return self._related(deps.topological(names), as_objects)

    def ancestors(self, as_objects: bool = False):
        deps = self.connection.dependencies
        deps.load()
        names = {self.full_table_name} | deps.ancestors(self.full_table_name)
        return self._related(deps.topological(names), as_objects)

    def parts(self, as_objects: bool = False):
        deps = self.connection.dependencies
        deps.load()
        return self._related(deps.parts_of(self.full_table_name), as_objects)

    # -- alter -------------------------------------------------------------------------------------------
    def alter(self, prompt: bool | None = True, context: dict | None = None) -> None:
        """Change the declared table to match the edited ``definition`` (see joinflow.alter).

        Secondary attributes (add, drop, type, default, nullability, comment), secondary foreign
        keys and indexes (add, drop), and the table comment; a comment starting ``{old_name}``
        renames ``old_name``.  Unlike DataJoint (which renames on MySQL only and refuses foreign-key
        and index changes), renames work on PostgreSQL and SQLite too.  Primary-key changes raise
        NotImplementedError.  ``prompt`` shows the SQL and asks first (None: ``config["safemode"]``).
        Refused inside a transaction."""
        from .alter import alter

        alter(self, prompt=prompt, context=context)

    # -- describe ------------------------------------------------------------------------------------------
    def describe(self, context: dict | None = None, printout: bool = False) -> str:
        """Rebuild the definition string from the database."""
        conn = self.connection
        deps = conn.dependencies
        deps.load()
        heading = self.heading
        backend = conn.backend
        parents = deps.parents(self.full_table_name)
        # every foreign key, listed at its first attribute; several may share attributes
        # (`-> Run` and `-> DetectedPeaks` both on the run's key): ancestors first
        fk_by_attr: dict[str, list[tuple[str, dict]]] = {}
        for parent, info in parents.items():
            for attr_map in info["attr_maps"]:
                fk_by_attr.setdefault(next(iter(attr_map)), []).append((parent, attr_map))
        for fks in fk_by_attr.values():
            fks.sort(key=lambda fk: (len(deps.ancestors(fk[0])), fk[0]))
        lines = [f"# {heading.table_comment}"] if heading.table_comment else []
        done: set[str] = set()
        unique_fks = []
        indexes = backend.load_indexes(conn, self.database, self.table_name)
        unique_sets = [tuple(cols) for unique, cols in indexes if unique]
        in_key = True
        for attr in heading.all_attributes.values():
            if attr.name == "_singleton":
                continue
            if in_key and not attr.in_key:
                lines.append("---")
                in_key = False
            for parent, attr_map in fk_by_attr.get(attr.name, ()):
                done |= set(attr_map)
                schema, table = backend.split_full_name(parent)
                ref = to_camel_case(table) if tier_of(table) != "Part" else (
                    to_camel_case(part_master(table)) + "." + to_camel_case(table.split("__")[-1]))
                if schema != self.database:
                    ref = f"{schema}.{ref}"
                renames = {c: p for c, p in attr_map.items() if c != p}
                if renames:
                    ref += ".proj(" + ", ".join(f"{c}='{p}'" for c, p in renames.items()) + ")"
                options = []
                if not attr.in_key and attr.nullable:
                    options.append("nullable")
                if tuple(attr_map) in unique_sets:
                    options.append("unique")
                    unique_fks.append(tuple(attr_map))
                lines.append(f"-> {'[' + ', '.join(options) + '] ' if options else ''}{ref}")
            if attr.name in done:
                continue
            done.add(attr.name)
            if attr.nullable and not attr.in_key:
                default = "null"
            elif attr.default is not None:
                default = attr.default
            else:
                default = None
            kind = attr.type
            if attr.autoincrement and "auto_increment" not in kind.lower() and kind.lower() != "serial":
                kind += " auto_increment"  # the catalog gives the column type alone
            text = f"{attr.name}{' = ' + default if default is not None else ''} : {kind}"
            if attr.comment:
                text += f"  # {attr.comment}"
            lines.append(text)
        fk_index_sets = {tuple(m) for info in parents.values() for m in info["attr_maps"]}
        for unique, cols in indexes:
            if unique and tuple(cols) in unique_fks:
                continue
            if not unique and tuple(cols) in fk_index_sets:
                continue  # implicit index supporting a foreign key
            lines.append(f"{'unique ' if unique else ''}index ({', '.join(cols)})")
        definition = "\n".join(lines) + "\n"
        if printout:
            print(definition)
        return definition


def _confirm(question: str) -> bool:
    answer = ""
    while answer not in ("yes", "no"):
        answer = input(f"{question} [yes, No]: ").strip().lower() or "no"
    return answer == "yes"


def write_lineage(conn, schema: str, table: str, rows: list[tuple[str, str, str]]) -> None:
    backend = conn.backend
    tc = backend.table_clause(schema, LINEAGE_TABLE, ["table_name", "attribute_name", "lineage"])
    conn.execute(sa.delete(tc).where(tc.c.table_name == table))
    if rows:
        conn.execute(sa.insert(tc), [{"table_name": t, "attribute_name": a, "lineage": lin} for t, a, lin in rows])


class FreeTable(Table):
    """A table addressed by name, without a class: ``dj.FreeTable(conn, "lab.session")``."""

    def __init__(self, conn_or_name, full_table_name: str | None = None):
        if full_table_name is None:
            from .connection import conn as global_conn

            connection, full_table_name = global_conn(), conn_or_name
        else:
            connection = conn_or_name
        schema, table = connection.backend.split_full_name(full_table_name)
        self._connection = connection
        self.database = schema
        self._table_name = table
        self._restrictions = ()

    @property
    def table_name(self) -> str:
        return self._table_name

    @property
    def class_name(self) -> str:
        return to_camel_case(self._table_name)

    def __repr__(self) -> str:
        return f"FreeTable({self.full_table_name})\n" + super().__repr__()
