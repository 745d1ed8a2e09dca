"""SQLite: the zero-set-up default.

All schemas share one database file.  The table ``#rig`` of schema ``lab`` is the table
named ``lab.#rig`` (a single quoted identifier), so foreign keys work across schemas, which
they cannot across attached databases.  Tables are STRICT (values must fit their column's
storage class) and carry CHECK constraints for lengths, enum members and integer ranges.
SQLite has no column comments: the declared type and comment of every column (and the
table comment) live in the hidden table ``~joinflow_comments``.
"""

from __future__ import annotations

import datetime
import decimal
import os
import re
import sqlite3
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import DataJointError, DataTypeError, DeclarationError
from ..heading import Attribute
from ..types import NUMBER_DEFAULT
from .base import VALUE, Backend, ColumnInfo, ForeignKeyInfo, _seconds, int_check

COMMENTS = "~joinflow_comments"
_LINEAGE = "~lineage"


class SQLiteBackend(Backend):
    name = "sqlite"
    drivername = "sqlite"
    begin_statement = "BEGIN IMMEDIATE"
    begin_waits_for_writers = True
    streams_on_own_session = False
    commit_chain_statement = None  # SQLite has no COMMIT AND CHAIN (and a chained write lock would block others)
    transactional_ddl = True
    lineage_marks_schema = True
    supports_schemas_natively = False
    max_name_length = 128

    def make_url(self, cfg) -> sa.engine.URL:
        path = cfg["database.name"] or "joinflow.db"
        if path != ":memory:":
            path = os.path.abspath(path)
        return sa.engine.URL.create("sqlite", database=path)

    def would_create(self, url: sa.engine.URL) -> str | None:
        path = url.database
        if path in (None, "", ":memory:") or os.path.exists(path):
            return None
        return path

    def engine_kwargs(self, cfg) -> dict:
        return {"connect_args": {"timeout": 60, "check_same_thread": False}}

    def install_events(self, engine: sa.engine.Engine) -> None:
        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA busy_timeout = 60000")
            if engine.url.database not in (None, "", ":memory:"):
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

    def database_name(self, engine) -> str:
        return engine.url.database or ":memory:"

    # -- names ------------------------------------------------------------------------------
    def full_table_name(self, schema: str, table: str) -> str:
        return self.quote(f"{schema}.{table}")

    def split_full_name(self, full_name: str) -> tuple[str, str]:
        text = full_name.strip().strip('"`')
        schema, _, table = text.partition(".")
        if not table:
            raise DataJointError(f"Table name {full_name!r} must be written as `schema.table`.")
        return schema, table

    def table_clause(self, schema: str, table: str, columns: Sequence[str]) -> sa.TableClause:
        return sa.table(f"{schema}.{table}", *[sa.column(c, VALUE) for c in columns])

    # -- values -------------------------------------------------------------------------------
    def date_to_db(self, value: Any, category: str, precision: int | None = None) -> Any:
        if isinstance(value, str):
            try:
                value = (
                    datetime.date.fromisoformat(value)
                    if category == "date"
                    else datetime.datetime.fromisoformat(value)
                )
            except ValueError:
                raise DataTypeError(f"{value!r} is not an ISO {category} (YYYY-MM-DD[ HH:MM:SS])") from None
        if category == "date":
            if isinstance(value, datetime.datetime):
                value = value.date()
            if not isinstance(value, datetime.date):
                raise DataTypeError(f"{value!r} is not a date")
            return value.isoformat()
        if isinstance(value, datetime.datetime):
            if precision is not None and value.microsecond:  # keep what datetime(p) keeps, as servers do
                step = 10 ** (6 - precision)
                micro = int(round(value.microsecond / step)) * step
                value = value.replace(microsecond=0) + datetime.timedelta(microseconds=micro)
            return value.isoformat(sep=" ")
        if isinstance(value, datetime.date):
            return datetime.datetime(value.year, value.month, value.day).isoformat(sep=" ")
        raise DataTypeError(f"{value!r} is not a datetime")

    def decimal_to_db(self, value: Any, attr: Attribute | None = None) -> Any:
        try:
            number = decimal.Decimal(str(value))
        except decimal.InvalidOperation:
            raise DataTypeError(f"{value!r} is not a decimal number") from None
        info = attr.typeinfo if attr is not None else None
        if info is not None and info.precision:
            number = number.quantize(decimal.Decimal(1).scaleb(-info.scale), rounding=decimal.ROUND_HALF_UP)
            if len(number.as_tuple().digits) - max(0, -number.as_tuple().exponent) > info.precision - info.scale:
                raise DataTypeError(f"{value!r} is out of range for {attr.type}")
        return str(number)

    def decoder(self, attr: Attribute):
        cat = attr.category
        if cat == "date":
            return lambda v: None if v is None else datetime.date.fromisoformat(v)
        if cat == "datetime":
            return lambda v: None if v is None else datetime.datetime.fromisoformat(v)
        if cat == "decimal":
            return lambda v: None if v is None else decimal.Decimal(v)
        return super().decoder(attr)

    # -- DDL ------------------------------------------------------------------------------------
    # INT, not INTEGER: a one-column INTEGER PRIMARY KEY would alias the rowid (ignoring defaults
    # and inventing values for NULL)
    STORAGE = {
        "int": "INT",
        "bool": "INT",
        "float": "REAL",
        "decimal": "TEXT",
        "string": "TEXT",
        "enum": "TEXT",
        "date": "TEXT",
        "datetime": "TEXT",
        "time": "TEXT",
        "uuid": "BLOB",
        "json": "TEXT",
        "bytes": "BLOB",
    }

    def column_type(self, attr: Attribute, schema: str, table: str) -> str:
        return self.STORAGE.get(attr.category, "ANY")

    def _checks(self, attr: Attribute, table: str = "") -> list[str]:
        col = self.quote(attr.name)
        info = attr.typeinfo
        checks = []
        if attr.category == "bool":
            checks.append(f"{col} IN (0, 1)")
        elif attr.category == "int" and int_check(attr):
            lo, hi = int_check(attr)
            checks.append(f"{col} BETWEEN {lo} AND {hi}")
        elif attr.category == "string" and info and info.length:
            checks.append(f"length({col}) <= {info.length}")
        elif attr.category == "enum":
            where = f"Table {table}: an enum member of attribute `{attr.name}`"
            members = ", ".join(self.ddl_literal(v, where) for v in attr.enum_values)
            checks.append(f"{col} IN ({members})")
        elif attr.category == "uuid":
            checks.append(f"length({col}) = 16")
        elif attr.category == "json":
            checks.append(f"({col} IS NULL OR json_valid({col}))")
        return checks

    display_name = "SQLite"

    def current_timestamp_sql(self, parsed) -> str:
        # SQLite's CURRENT_TIMESTAMP has no fraction; keep the column's ISO format
        return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"

    def default_value_sql(self, attr: Attribute, text: str, where: str) -> str:
        # a STRICT integer/real column takes a number, not a text, as its default
        if attr.category in ("int", "float", "bool"):
            number = {"true": "1", "false": "0"}.get(text.lower(), text) if attr.category == "bool" else text
            if NUMBER_DEFAULT.fullmatch(number):
                return number
        return self.ddl_literal(text, where)

    def _create_statements(self, schema: str, table: str, spec) -> list[str]:
        """CREATE TABLE and CREATE INDEX of create_table (alter()'s preview of a rebuild shows them)."""
        lines = []
        counter = [a for a in spec.attributes if a.autoincrement]
        if counter and (len(spec.primary_key) != 1 or counter[0].name != spec.primary_key[0]):
            raise DeclarationError(
                f"Table {schema}.{table}: SQLite counts (auto_increment) only a primary key of one attribute, "
                f"and `{counter[0].name}` is {'not in the primary key' if not counter[0].in_key else 'one of several'}"
                ". Make it the only primary-key attribute, or give its values yourself (drop auto_increment)."
            )
        for attr in spec.attributes:
            kind = "INTEGER PRIMARY KEY AUTOINCREMENT" if attr.autoincrement else self.column_type(attr, schema, table)
            line = f"{self.quote(attr.name)} {kind}"  # AUTOINCREMENT: the rowid, numbers never reused
            if not attr.nullable:
                line += " NOT NULL"
            line += self.default_sql(attr, f"{schema}.{table}")
            checks = self._checks(attr, f"{schema}.{table}")
            if checks:
                line += " CHECK (" + " AND ".join(checks) + ")"
            lines.append(line)
        if not counter:
            lines.append("PRIMARY KEY (" + ", ".join(self.quote(k) for k in spec.primary_key) + ")")
        for fk in spec.foreign_keys:
            child_cols = ", ".join(self.quote(c) for c in fk.attr_map)
            parent_cols = ", ".join(self.quote(p) for p in fk.attr_map.values())
            lines.append(
                f"FOREIGN KEY ({child_cols}) REFERENCES "
                f"{self.full_table_name(fk.parent_schema, fk.parent_table)} ({parent_cols}) "
                "ON UPDATE CASCADE ON DELETE RESTRICT"
            )
        full = self.full_table_name(schema, table)
        statements = [f"CREATE TABLE IF NOT EXISTS {full} (\n  " + ",\n  ".join(lines) + "\n) STRICT"]
        for i, (unique, cols) in enumerate(spec.indexes):
            name = self.quote(f"{schema}.{table}__{'u' if unique else 'i'}{i}_{'_'.join(cols)}"[:120])
            statements.append(
                f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {name} ON {full} "
                f"({', '.join(self.quote(c) for c in cols)})"
            )
        return statements

    def create_table(self, conn, schema: str, table: str, spec) -> None:
        statements = self._create_statements(schema, table, spec)
        self._ensure_comments(conn)
        for sql in statements:
            conn.ddl(sql)
        rows = [{"s": schema, "t": table, "a": "", "c": spec.comment}]
        rows += [
            {"s": schema, "t": table, "a": a.name, "c": (f":{a.type}:" if a.core else "") + a.comment}
            for a in spec.attributes
        ]
        conn.execute(
            sa.text(f'INSERT OR REPLACE INTO "{COMMENTS}" VALUES (:s, :t, :a, :c)'), rows
        )

    # -- alter ------------------------------------------------------------------------------------
    def _alter_needs_rebuild(self, plan) -> bool:
        """SQLite's ALTER TABLE adds, drops and renames columns; anything else (a foreign key
        added or dropped, too) rebuilds the table."""
        if plan.foreign_keys_added or plan.foreign_keys_dropped:
            return True
        for change in plan.changes:
            if change.old is not None and change.new is not None and change.definition_changed:
                return True
            new = change.new
            if change.old is None and (
                (not new.nullable and new.default is None)  # SQLite wants a default for NOT NULL
                or (new.default or "").upper().startswith("CURRENT_TIMESTAMP")  # not a constant
            ):
                return True
        return False

    def _comment_rows(self, schema: str, table: str, plan) -> tuple[list[str], list[dict]]:
        """(attribute names whose comment row goes, rows to write) for an alter without rebuild."""
        gone, rows = [], []
        for change in plan.changes:
            if change.old is not None and (change.new is None or change.renamed):
                gone.append(change.old.name)
            if change.new is not None and (change.old is None or change.renamed or change.comment_changed):
                rows.append({"s": schema, "t": table, "a": change.new.name, "c": self.column_comment(change.new)})
        if plan.comment is not None:
            rows.append({"s": schema, "t": table, "a": "", "c": plan.comment})
        return gone, rows

    def alter_statements(self, conn, schema: str, table: str, plan) -> list[str]:
        full = self.full_table_name(schema, table)
        if self._alter_needs_rebuild(plan):
            tmp = self.full_table_name(schema, table + "~alter")
            changed = ", ".join(self.quote(c.new.name) for c in plan.changes if c.new is not None)
            source = {c.new.name: c.old.name for c in plan.changes if c.old is not None and c.new is not None}
            added = {c.new.name for c in plan.changes if c.old is None}
            copied = [a.name for a in plan.spec.attributes if a.name not in added]
            fks = "; ".join([f"adds FOREIGN KEY ({', '.join(fk.attr_map)})" for fk in plan.foreign_keys_added]
                            + [f"drops FOREIGN KEY ({', '.join(c for c, _ in pairs)})"
                               for _p, pairs in plan.foreign_keys_dropped])
            return [
                "-- SQLite cannot change a column's type, default, nullability or foreign keys in place: the "
                f"table is rebuilt in one transaction (changed columns: {changed or 'none'}"
                + (f"; {fks}" if fks else "") + ")",
                f"ALTER TABLE {full} RENAME TO {tmp}",
                *[sql.replace(" IF NOT EXISTS", "") for sql in self._create_statements(schema, table, plan.spec)],
                f"INSERT INTO {full} ({', '.join(self.quote(n) for n in copied)}) SELECT "
                + ", ".join(self.quote(source.get(n, n)) for n in copied) + f" FROM {tmp}",
                f"DROP TABLE {tmp}",
                "PRAGMA foreign_key_check",
            ]
        statements = [f"DROP INDEX {self.quote(name)}" for name in self.dropped_index_names(conn, schema, table, plan)]
        for change in plan.changes:
            old, new = change.old, change.new
            if new is None:
                statements.append(f"ALTER TABLE {full} DROP COLUMN {self.quote(old.name)}")
            elif old is None:
                line = f"ALTER TABLE {full} ADD COLUMN {self.quote(new.name)} {self.column_type(new, schema, table)}"
                line += " NOT NULL" if not new.nullable else ""
                line += self.default_sql(new, f"{schema}.{table}")
                checks = self._checks(new, f"{schema}.{table}")
                if checks:
                    line += " CHECK (" + " AND ".join(checks) + ")"
                statements.append(line)
            elif change.renamed:
                statements.append(f"ALTER TABLE {full} RENAME COLUMN {self.quote(old.name)} TO {self.quote(new.name)}")
        taken = {r[0] for r in conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'index'")).fetchall()} if plan.indexes_added else set()
        for unique, cols in plan.indexes_added:
            i = 0
            while True:
                name = f"{schema}.{table}__{'u' if unique else 'i'}{i}_{'_'.join(cols)}"[:120]
                if name not in taken:
                    break
                i += 1
            taken.add(name)
            statements.append(f"CREATE {'UNIQUE ' if unique else ''}INDEX {self.quote(name)} ON {full} "
                              f"({', '.join(self.quote(c) for c in cols)})")
        gone, rows = self._comment_rows(schema, table, plan)
        for name in gone:
            statements.append(f'DELETE FROM "{COMMENTS}" WHERE schema_name = {self.ddl_literal(schema)} AND '
                              f"table_name = {self.ddl_literal(table)} AND attribute_name = {self.ddl_literal(name)}")
        for row in rows:
            what = f"the comment of attribute `{row['a']}`" if row["a"] else "the table comment"
            statements.append(f'INSERT OR REPLACE INTO "{COMMENTS}" VALUES ('
                              + ", ".join(self.ddl_literal(row[k], f"Table {schema}.{table}: {what}")
                                          for k in "stac") + ")")
        return statements

    def alter_table(self, conn, schema: str, table: str, plan) -> None:
        if self._alter_needs_rebuild(plan):
            return self._rebuild_table(conn, schema, table, plan)
        with conn.transaction:
            self._ensure_comments(conn)
            for sql in self.alter_statements(conn, schema, table, plan):
                if not sql.startswith(("DELETE", "INSERT")):
                    conn.ddl(sql)
            gone, rows = self._comment_rows(schema, table, plan)
            for name in gone:
                conn.execute(
                    sa.text(f'DELETE FROM "{COMMENTS}" WHERE schema_name = :s AND table_name = :t '
                            "AND attribute_name = :a"),
                    {"s": schema, "t": table, "a": name},
                )
            if rows:
                conn.execute(sa.text(f'INSERT OR REPLACE INTO "{COMMENTS}" VALUES (:s, :t, :a, :c)'), rows)

    def _rebuild_table(self, conn, schema: str, table: str, plan) -> None:
        """SQLite's documented procedure for other schema changes: create the altered table, copy
        the rows, drop the old one, check foreign keys -- in one transaction, with foreign-key
        enforcement off (it cannot change inside a transaction) and references left as written."""
        full = self.full_table_name(schema, table)
        tmp = self.full_table_name(schema, table + "~alter")
        source = {c.new.name: c.old.name for c in plan.changes if c.old is not None and c.new is not None}
        added = {c.new.name for c in plan.changes if c.old is None}
        copied = [a.name for a in plan.spec.attributes if a.name not in added]
        indexes = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"),
                {"t": f"{schema}.{table}"},
            ).fetchall()
        ]
        conn.execute(sa.text("PRAGMA foreign_keys = OFF"))
        conn.execute(sa.text("PRAGMA legacy_alter_table = ON"))  # children keep referencing `table`
        try:
            with conn.transaction:
                for name in indexes:
                    conn.ddl(f"DROP INDEX {self.quote(name)}")
                conn.ddl(f"ALTER TABLE {full} RENAME TO {tmp}")
                conn.execute(
                    sa.text(f'DELETE FROM "{COMMENTS}" WHERE schema_name = :s AND table_name = :t'),
                    {"s": schema, "t": table},
                )
                self.create_table(conn, schema, table, plan.spec)
                conn.ddl(
                    f"INSERT INTO {full} ({', '.join(self.quote(n) for n in copied)}) SELECT "
                    + ", ".join(self.quote(source.get(n, n)) for n in copied)
                    + f" FROM {tmp}"
                )
                conn.ddl(f"DROP TABLE {tmp}")
                broken = conn.execute(sa.text("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise DataJointError(
                        f"Rebuilding {full} would break {len(broken)} foreign-key reference(s) "
                        f"(first: {tuple(broken[0])}); nothing was changed."
                    )
        finally:
            conn.execute(sa.text("PRAGMA legacy_alter_table = OFF"))
            conn.execute(sa.text("PRAGMA foreign_keys = ON"))

    def _ensure_comments(self, conn) -> None:
        conn.execute(
            sa.text(
                f'CREATE TABLE IF NOT EXISTS "{COMMENTS}" (schema_name TEXT NOT NULL, '
                "table_name TEXT NOT NULL, attribute_name TEXT NOT NULL, comment TEXT NOT NULL, "
                "PRIMARY KEY (schema_name, table_name, attribute_name))"
            )
        )

    def drop_table(self, conn, schema: str, table: str) -> None:
        super().drop_table(conn, schema, table)
        if self._has_table(conn, COMMENTS):
            conn.execute(
                sa.text(f'DELETE FROM "{COMMENTS}" WHERE schema_name = :s AND table_name = :t'),
                {"s": schema, "t": table},
            )

    def _has_table(self, conn, name: str) -> bool:
        return bool(
            conn.execute(
                sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n"), {"n": name}
            ).first()
        )

    # -- schemas ----------------------------------------------------------------------------------
    def schema_exists(self, conn, schema: str) -> bool:
        return self._has_table(conn, f"{schema}.{_LINEAGE}")

    def create_schema(self, conn, schema: str) -> None:
        # a schema is born with its ~lineage table (created by the caller); nothing else to do
        self._ensure_comments(conn)

    def drop_schema(self, conn, schema: str) -> None:
        tables = self._all_tables(conn, schema)
        conn.execute(sa.text("PRAGMA foreign_keys = OFF")) if not conn.in_transaction else None
        try:
            for table in tables:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {self.full_table_name(schema, table)}"))
        finally:
            conn.execute(sa.text("PRAGMA foreign_keys = ON")) if not conn.in_transaction else None
        if self._has_table(conn, COMMENTS):
            conn.execute(sa.text(f'DELETE FROM "{COMMENTS}" WHERE schema_name = :s'), {"s": schema})

    def list_schemas(self, conn) -> list[str]:
        rows = conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE :p"),
            {"p": f"%.{_LINEAGE}"},
        ).fetchall()
        return sorted(r[0][: -len(_LINEAGE) - 1] for r in rows)

    def _all_tables(self, conn, schema: str) -> list[str]:
        rows = conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, :n) = :p"),
            {"n": len(schema) + 1, "p": schema + "."},
        ).fetchall()
        return [r[0][len(schema) + 1 :] for r in rows]

    def list_tables(self, conn, schema: str) -> list[str]:
        return self._all_tables(conn, schema)

    # -- catalog -----------------------------------------------------------------------------------
    def load_columns(self, conn, schema: str, table: str):
        full = f"{schema}.{table}"
        rows = conn.execute(sa.text("SELECT * FROM pragma_table_xinfo(:t)"), {"t": full}).fetchall()
        if not rows:
            return None
        comments = {}
        if self._has_table(conn, COMMENTS):
            comments = dict(
                conn.execute(
                    sa.text(
                        f'SELECT attribute_name, comment FROM "{COMMENTS}" '
                        "WHERE schema_name = :s AND table_name = :t"
                    ),
                    {"s": schema, "t": table},
                ).fetchall()
            )
        created = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                               {"t": full}).scalar() or ""
        counted = re.search(r'"((?:[^"]|"")+)"\s+INTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT', created, re.I)
        counter = counted.group(1).replace('""', '"') if counted else None
        columns = []
        for cid, name, ctype, notnull, default, pk, hidden in rows:
            if hidden:
                continue
            if default is not None and default.lstrip("(").startswith("strftime("):
                default = "CURRENT_TIMESTAMP"
            columns.append(
                ColumnInfo(
                    name=name,
                    native_type=(ctype or "ANY").lower(),
                    nullable=not notnull and not pk,
                    default=default,
                    comment=comments.get(name, ""),
                    in_key=bool(pk),
                    key_position=pk,
                    autoincrement=name == counter,
                )
            )
        return columns, comments.get("", "")

    def load_foreign_keys(self, conn, schemas=None) -> list[ForeignKeyInfo]:
        rows = conn.execute(
            sa.text(
                "SELECT m.name, f.id, f.seq, f.\"table\", f.\"from\", f.\"to\" FROM sqlite_master m "
                "JOIN pragma_foreign_key_list(m.name) f WHERE m.type = 'table' "
                "ORDER BY m.name, f.id, f.seq"
            )
        ).fetchall()
        found: dict[tuple[str, int], ForeignKeyInfo] = {}
        wanted = set(schemas) if schemas else None
        for child, fk_id, _seq, parent, col_from, col_to in rows:
            if wanted is not None and child.partition(".")[0] not in wanted:
                continue
            key = (child, fk_id)
            if key not in found:
                found[key] = ForeignKeyInfo(self.quote(child), self.quote(parent), [], name=str(fk_id))
            found[key].columns.append((col_from, col_to))
        return list(found.values())

    def index_names(self, conn, schema: str, table: str):
        return [(name, unique, cols) for name, (unique, cols) in self._indexes(conn, schema, table)]

    def load_indexes(self, conn, schema: str, table: str):
        return [entry for _name, entry in self._indexes(conn, schema, table)]

    def _indexes(self, conn, schema: str, table: str):
        full = f"{schema}.{table}"
        result = []
        for _seq, name, unique, origin, _partial in conn.execute(
            sa.text("SELECT * FROM pragma_index_list(:t) ORDER BY seq DESC"), {"t": full}  # creation order
        ).fetchall():
            if origin == "pk":
                continue
            cols = [
                r[2]
                for r in conn.execute(
                    sa.text("SELECT * FROM pragma_index_info(:i) ORDER BY seqno"), {"i": name}
                ).fetchall()
            ]
            result.append((name, (bool(unique), cols)))
        return result

    # -- statements ----------------------------------------------------------------------------------
    def rows_in(self, columns, rows):
        """SQLite scans the whole table for ``(a, b) IN ((..), ..)`` (and older versions refuse it);
        ``(a, b) IN (SELECT * FROM (VALUES (..), ..))`` searches the index instead."""
        marks, binds = [], []
        for row in rows:
            names = []
            for param in row:
                name = param.key
                if param.unique:  # an anonymous parameter: give it a name the text can use
                    name = f"jf_row_{len(binds)}"
                    param = sa.bindparam(name, param.value, type_=param.type, unique=True)
                binds.append(param)
                names.append(":" + name)
            marks.append("(" + ", ".join(names) + ")")
        values = sa.text("SELECT * FROM (VALUES " + ", ".join(marks) + ")").bindparams(*binds)
        return sa.tuple_(*columns).in_(values.columns(*[sa.column(f"column{i + 1}") for i in range(len(columns))]))

    def column_default(self, table, attribute):
        # SQLite has no DEFAULT in UPDATE: the declared default's SQL text, as the catalog gives it
        if attribute.default is None or attribute.default.upper() == "NULL":
            return sa.null()
        return sa.literal_column(attribute.default)

    def insert(self, table, columns, primary_key, mode, select=None, reset=()):
        if select is not None:
            stmt = sqlite_insert(table).from_select(list(columns), select.where(sa.true()))
        else:
            stmt = sqlite_insert(table).values({c: sa.bindparam(f"p{i}") for i, c in enumerate(columns)})
        if mode == "skip":
            stmt = stmt.on_conflict_do_nothing(index_elements=list(primary_key))
        elif mode == "replace":
            updates = {c: stmt.excluded[c] for c in columns if c not in primary_key}
            updates.update({a.name: self.column_default(table, a) for a in reset})
            stmt = (
                stmt.on_conflict_do_update(index_elements=list(primary_key), set_=updates)
                if updates
                else stmt.on_conflict_do_nothing(index_elements=list(primary_key))
            )
        return stmt

    def now(self):
        return sa.literal_column("strftime('%Y-%m-%d %H:%M:%f', 'now')")

    def lease_clock(self, shift=None):
        # the "server" is the database file, and every process that opens it runs on this machine
        # (WAL needs shared memory): SQLite's own 'now', the system clock in UTC read by the SQLite
        # library inside the statement, never Python's time
        if shift is None:
            return self.now()
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", sa.func.printf("%+.3f seconds", _seconds(shift)))

    def lock_suffix(self) -> str:
        return ""  # BEGIN IMMEDIATE already holds the write lock

    # -- named locks: a lock file next to the database file (every SQLite user is on this machine)
    def _lock_file(self, conn, name: str):
        path = conn.engine.url.database
        if not path or path == ":memory:":
            return None
        try:
            import fcntl  # noqa: F401  (POSIX only)
        except ImportError:  # pragma: no cover
            return None
        return open(f"{path}.{name}.lock", "a+")

    def try_lock(self, conn, name: str) -> bool | None:
        import fcntl

        handle = self._lock_file(conn, name)
        if handle is None:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        conn.__dict__.setdefault("_named_locks", {})[name] = handle
        return True

    def wait_lock(self, conn, name: str) -> None:
        import fcntl

        handle = self._lock_file(conn, name)
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
            conn.__dict__.setdefault("_named_locks", {})[name] = handle

    def unlock(self, conn, name: str) -> None:
        handle = conn.__dict__.get("_named_locks", {}).pop(name, None)
        if handle is not None:
            handle.close()  # closing the file releases its lock

    def classify_error(self, exc):
        message = str(exc)
        if isinstance(exc, sqlite3.IntegrityError):
            if message.startswith("UNIQUE constraint failed"):
                return "duplicate", message
            if message.startswith("FOREIGN KEY constraint failed"):
                return "foreign_key", message
            if message.startswith("NOT NULL constraint failed"):
                return "not_null", message
            if message.startswith("CHECK constraint failed"):
                return "check", message + " (the value is out of range, too long or not allowed)"
            if message.startswith("cannot store"):
                return "data", message
            return "foreign_key", message
        if isinstance(exc, sqlite3.OperationalError):
            if "no such table" in message:
                return "missing_table", message
            if "syntax error" in message:
                return "syntax", message
            if "no such column" in message:
                return "unknown_column", message
            if "database is locked" in message or "database table is locked" in message:
                return "deadlock", message
        if isinstance(exc, (sqlite3.DataError, sqlite3.InterfaceError, OverflowError)):
            return "data", message
        return None, message
