"""PostgreSQL (psycopg 3), laid out as DataJoint 2.x lays it out.

A joinflow schema is a PostgreSQL schema inside one database (``database.name``,
default ``postgres``); enums are named types ``enum_<md5(sorted values)[:8]>`` in that
schema; comments go through ``COMMENT ON``.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..heading import Attribute
from ..types import NUMBER_DEFAULT

try:  # psycopg 3, the default driver
    from psycopg.pq import ExecStatus as _ExecStatus
except ImportError:  # pragma: no cover - another driver is installed
    _ExecStatus = None
from .base import Backend, ColumnInfo, ForeignKeyInfo, _seconds

TYPES = {
    "int8": "smallint",
    "int16": "smallint",
    "int32": "integer",
    "int64": "bigint",
    "float32": "real",
    "float64": "double precision",
    "bool": "boolean",
    "date": "date",
    "uuid": "uuid",
    "json": "jsonb",
    "jsonb": "jsonb",
    "bytes": "bytea",
}

SYSTEM_SCHEMAS = ("information_schema", "public")


def enum_type_name(values: Sequence[str]) -> str:
    return "enum_" + hashlib.md5("_".join(sorted(values)).encode()).hexdigest()[:8]


class PostgreSQLBackend(Backend):
    name = "postgresql"
    drivername = "postgresql+psycopg"
    default_port = 5432
    max_name_length = 63
    begin_statement = "BEGIN"
    transactional_ddl = True
    read_timeout_closes_connection = False  # statement_timeout: the server cancels the statement
    statement_savepoint = "jf_statement"  # a failed statement aborts the transaction: see Backend

    def transaction_aborted(self, dbapi_conn) -> bool:
        # read from the session's state, which the server reports with every result: no round trip
        info = getattr(dbapi_conn, "info", None)  # psycopg 3
        status = getattr(info, "transaction_status", None)
        if status is None:  # psycopg2
            get = getattr(dbapi_conn, "get_transaction_status", None)
            status = get() if get is not None else None
        return status is not None and int(status) == 3  # INERROR in both drivers

    def executemany_is_atomic(self, rows) -> bool:
        return True  # one call under the statement savepoint: a failure rolls all of it back

    def make_url(self, cfg) -> sa.engine.URL:
        return sa.engine.URL.create(
            self.drivername,
            username=cfg["database.user"] or "postgres",
            password=cfg["database.password"] or None,
            host=cfg["database.host"] or "localhost",
            port=int(cfg["database.port"] or self.default_port),
            database=cfg["database.name"] or "postgres",
        )

    def engine_kwargs(self, cfg) -> dict:
        tls = cfg["database.use_tls"]
        args: dict[str, Any] = {} if tls is None else {"sslmode": "require" if tls else "disable"}
        # libpq's connect_timeout: whole seconds, the connection and its start-up (2 at least);
        # without it a server that accepts and never answers holds connect() for minutes
        args["connect_timeout"] = max(2, math.ceil(cfg["database.connect_timeout"]))
        read_timeout = cfg["database.read_timeout"]
        self._statement_timeout_ms = None if read_timeout is None else max(1, round(read_timeout * 1000))
        if read_timeout is not None:
            # libpq has no client-side read timeout: the server cancels a statement that runs longer
            # (statement_timeout, set per session below), and unacknowledged data closes the socket
            args["tcp_user_timeout"] = self._statement_timeout_ms
        return {"connect_args": args}

    def is_read_timeout(self, orig: BaseException) -> bool:
        return (getattr(self, "_statement_timeout_ms", None) is not None
                and getattr(orig, "sqlstate", None) == "57014" and "statement timeout" in str(orig))

    def cursor_returns_rows(self, cursor) -> bool:
        # psycopg 3 builds a Column object per column on every `description` access; the
        # result's status says the same without that cost
        result = getattr(cursor, "pgresult", False)
        if result is False or _ExecStatus is None:  # another driver
            return cursor.description is not None
        return result is not None and result.status == _ExecStatus.TUPLES_OK

    def install_events(self, engine: sa.engine.Engine) -> None:
        statement_timeout = getattr(self, "_statement_timeout_ms", None)
        if statement_timeout is not None:
            @sa.event.listens_for(engine, "connect")
            def _statement_timeout(dbapi_connection, _record):  # database.read_timeout
                with dbapi_connection.cursor() as cursor:
                    cursor.execute(f"SET statement_timeout = {int(statement_timeout)}")
                dbapi_connection.commit()

        @sa.event.listens_for(engine, "connect")
        def _fast_toast_compression(dbapi_connection, _record):
            # The server compresses every large bytea/json value it stores (TOAST). Its default,
            # pglz, spends ~30 ms per MB on blobs of numeric data and usually gains nothing; lz4
            # (PostgreSQL 14+, when built with it) is ~10x faster. Values read back the same.
            try:
                with dbapi_connection.cursor() as cursor:
                    cursor.execute("SET default_toast_compression = 'lz4'")
                dbapi_connection.commit()
            except Exception:  # older server or no lz4: keep the server's default
                dbapi_connection.rollback()

    # -- values --------------------------------------------------------------------------
    def bool_to_db(self, value: Any) -> Any:
        return bool(value)

    def uuid_to_db(self, value) -> Any:
        return value

    def decoder(self, attr: Attribute):
        if attr.category == "json":
            return None  # psycopg parses jsonb already
        return super().decoder(attr)

    # -- DDL --------------------------------------------------------------------------------
    def stream_cursor(self, dbapi_conn):
        return dbapi_conn.cursor(name=f"jf_stream_{id(dbapi_conn):x}")  # a server-side (named) cursor

    def advance_counter(self, conn, schema: str, table: str, column: str) -> None:
        full, col = self.full_table_name(schema, table), self.quote(column)
        conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence(:t, :c), GREATEST((SELECT max({col}) FROM {full}), "
                             "1))"), {"t": full, "c": column}, table=full)

    def column_type(self, attr: Attribute, schema: str, table: str) -> str:
        if attr.autoincrement and attr.type.lower() != "serial":
            # MySQL's `int auto_increment`: an identity column (explicit values are accepted, as in MySQL)
            base = re.sub(r"\(\s*\d+\s*\)|\bauto_increment\b|\bunsigned\b", " ", attr.type, flags=re.I).split()
            kind = {"tinyint": "smallint", "smallint": "smallint", "bigint": "bigint"}.get(
                base[0].lower() if base else "", "integer")
            return f"{kind} GENERATED BY DEFAULT AS IDENTITY"
        if not attr.core:
            return attr.type
        info = attr.typeinfo
        if attr.type in TYPES:
            return TYPES[attr.type]
        if attr.category == "decimal":
            return f"numeric({info.precision},{info.scale})"
        if attr.category == "datetime":
            return f"timestamp({info.precision})" if "(" in attr.type else "timestamp"
        if attr.category == "enum":
            return f"{self.quote(schema)}.{self.quote(enum_type_name(info.enum_values))}"
        return attr.type  # char(n), varchar(n)

    # -- the one quoting of DDL literals ---------------------------------------------------
    display_name = "PostgreSQL"

    def ddl_literal(self, text: str, where: str = "A literal") -> str:
        """Quotes doubled; a text with backslashes as an escape string (E'..', backslashes doubled),
        which reads the same whatever the server's standard_conforming_strings."""
        self.check_ddl_text(text, where)
        quoted = "'" + text.replace("'", "''") + "'"
        return "E" + quoted.replace("\\", "\\\\") if "\\" in text else quoted

    def create_table(self, conn, schema: str, table: str, spec) -> None:
        full = self.full_table_name(schema, table)
        statements = []
        queued: set[str] = set()
        for attr in spec.attributes:
            statements += self._enum_type_statement(conn, schema, attr, queued)
        lines = []
        for attr in spec.attributes:
            line = f"{self.quote(attr.name)} {self.column_type(attr, schema, table)}"
            if not attr.nullable:
                line += " NOT NULL"
            line += self.default_sql(attr, f"{schema}.{table}")
            if attr.core and attr.type == "int8":  # smallint is wider than int8
                line += f" CHECK ({self.quote(attr.name)} BETWEEN -128 AND 127)"
            lines.append(line)
        lines.append("PRIMARY KEY (" + ", ".join(self.quote(k) for k in spec.primary_key) + ")")
        for fk in spec.foreign_keys:
            lines.append(
                f"FOREIGN KEY ({', '.join(self.quote(c) for c in fk.attr_map)}) REFERENCES "
                f"{self.full_table_name(fk.parent_schema, fk.parent_table)} "
                f"({', '.join(self.quote(p) for p in fk.attr_map.values())}) "
                "ON UPDATE CASCADE ON DELETE RESTRICT"
            )
        statements.append(f"CREATE TABLE IF NOT EXISTS {full} (\n  " + ",\n  ".join(lines) + "\n)")
        declared = [cols for _u, cols in spec.indexes]
        def index(unique: bool, cols: list[str]) -> str:
            name = self.quote(f"idx_{table}_{'_'.join(cols)[:30]}"[:63])  # DataJoint's index names
            return (f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON {full} "
                    f"({', '.join(self.quote(c) for c in cols)})")

        for unique, cols in spec.indexes:
            statements.append(index(unique, cols))
        for fk in sorted(spec.foreign_keys, key=lambda f: -len(f.attr_map)):  # PG does not index FKs itself
            cols = list(fk.attr_map)
            if spec.primary_key[: len(cols)] == cols or any(d[: len(cols)] == cols for d in declared):
                continue
            declared.append(cols)
            statements.append(index(False, cols))
        if spec.comment:
            statements.append(f"COMMENT ON TABLE {full} IS {self.comment_sql(spec.comment, schema, table)}")
        for attr in spec.attributes:
            text = (f":{attr.type}:" if attr.core else "") + attr.comment
            if text:
                statements.append(
                    f"COMMENT ON COLUMN {full}.{self.quote(attr.name)} IS "
                    f"{self.comment_sql(text, schema, table, attr.name)}"
                )
        for sql in statements:
            conn.ddl(sql)

    def _enum_type_statement(self, conn, schema: str, attr: Attribute, queued: set) -> list[str]:
        """``CREATE TYPE`` for the enum of ``attr`` when the schema lacks it (create_table, alter)."""
        if not (attr.core and attr.category == "enum"):
            return []
        name = enum_type_name(attr.enum_values)
        if name in queued:
            return []
        queued.add(name)
        exists = conn.execute(
            sa.text(
                "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = :s AND t.typname = :t"
            ),
            {"s": schema, "t": name},
        ).first()
        if exists:
            return []
        where = f"Schema {schema}: an enum member of attribute `{attr.name}`"
        members = ", ".join(self.ddl_literal(v, where) for v in attr.enum_values)
        return [f"CREATE TYPE {self.quote(schema)}.{self.quote(name)} AS ENUM ({members})"]

    def _column_checks(self, conn, schema: str, table: str, column: str) -> list[str]:
        rows = conn.execute(
            sa.text(
                "SELECT con.conname FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
                "AND a.attname = :a WHERE n.nspname = :s AND c.relname = :t AND con.contype = 'c' "
                "AND con.conkey = ARRAY[a.attnum]"
            ),
            {"s": schema, "t": table, "a": column},
        ).fetchall()
        return [r[0] for r in rows]

    def alter_statements(self, conn, schema: str, table: str, plan) -> list[str]:
        """``ALTER TABLE`` statements plus ``COMMENT ON``; alter_table runs them in one transaction.

        Renames use ``RENAME COLUMN`` (DataJoint renames on MySQL only)."""
        full = self.full_table_name(schema, table)
        head: list[str] = []
        statements: list[str] = []
        queued: set[str] = set()
        for change in plan.changes:
            old, new = change.old, change.new
            if new is None:
                statements.append(f"ALTER TABLE {full} DROP COLUMN {self.quote(old.name)}")
                continue
            col = self.quote(new.name)
            ctype = self.column_type(new, schema, table)
            head += self._enum_type_statement(conn, schema, new, queued)
            if old is None:
                line = f"ALTER TABLE {full} ADD COLUMN {col} {ctype}"
                line += " NOT NULL" if not new.nullable else ""
                line += self.default_sql(new, f"{schema}.{table}")
                if new.core and new.type == "int8":
                    line += f" CHECK ({col} BETWEEN -128 AND 127)"
                statements.append(line)
            else:
                if change.renamed:
                    statements.append(f"ALTER TABLE {full} RENAME COLUMN {self.quote(old.name)} TO {col}")
                if change.type_changed:
                    for check in self._column_checks(conn, schema, table, old.name):
                        statements.append(f"ALTER TABLE {full} DROP CONSTRAINT {self.quote(check)}")
                    if change.default_changed or old.default is not None:
                        statements.append(f"ALTER TABLE {full} ALTER COLUMN {col} DROP DEFAULT")
                    via = "::text" if "enum" in (old.category, new.category) else ""
                    statements.append(f"ALTER TABLE {full} ALTER COLUMN {col} TYPE {ctype} USING {col}{via}::{ctype}")
                    if new.core and new.type == "int8":
                        statements.append(f"ALTER TABLE {full} ADD CHECK ({col} BETWEEN -128 AND 127)")
                if change.default_changed or (change.type_changed and old.default is not None):
                    default = self.default_sql(new, f"{schema}.{table}").strip()
                    statements.append(f"ALTER TABLE {full} ALTER COLUMN {col} "
                                      + (f"SET {default}" if default else "DROP DEFAULT"))
                if change.nullable_changed:
                    statements.append(f"ALTER TABLE {full} ALTER COLUMN {col} "
                                      + ("DROP NOT NULL" if new.nullable else "SET NOT NULL"))
                if not (change.type_changed or change.comment_changed):
                    continue
            comment = self.column_comment(new)
            statements.append(f"COMMENT ON COLUMN {full}.{col} IS "
                              + (self.comment_sql(comment, schema, table, new.name) if comment else "NULL"))
        if plan.comment is not None:
            statements.append(f"COMMENT ON TABLE {full} IS "
                              + (self.comment_sql(plan.comment, schema, table) if plan.comment else "NULL"))
        return head + self._alter_key_drops(conn, schema, table, plan) + statements \
            + self._alter_key_adds(conn, schema, table, plan)

    def _alter_key_drops(self, conn, schema: str, table: str, plan) -> list[str]:
        """DROP CONSTRAINT of dropped foreign keys, DROP INDEX of dropped indexes (before the columns go)."""
        full = self.full_table_name(schema, table)
        out = [f"ALTER TABLE {full} DROP CONSTRAINT {self.quote(name)}"
               for name in self.dropped_foreign_key_names(conn, schema, table, plan)]
        return out + [f"DROP INDEX {self.quote(schema)}.{self.quote(name)}"
                      for name in self.dropped_index_names(conn, schema, table, plan)]

    def _alter_key_adds(self, conn, schema: str, table: str, plan) -> list[str]:
        """CREATE INDEX of added indexes, ADD FOREIGN KEY of added foreign keys with the plain index
        create_table gives a foreign key (PostgreSQL does not index foreign keys itself)."""
        if not (plan.indexes_added or plan.foreign_keys_added):
            return []
        full = self.full_table_name(schema, table)
        taken = {r[0] for r in conn.execute(
            sa.text("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s"), {"s": schema}).fetchall()}

        def index(unique: bool, cols) -> str:
            base = f"idx_{table}_{'_'.join(cols)[:30]}"[:63]  # as create_table names them
            name, i = base, 1
            while name in taken:
                name = f"{base[:60]}_{i}"
                i += 1
            taken.add(name)
            return (f"CREATE {'UNIQUE ' if unique else ''}INDEX {self.quote(name)} ON {full} "
                    f"({', '.join(self.quote(c) for c in cols)})")

        out = [index(unique, cols) for unique, cols in plan.indexes_added]
        covered = [list(plan.spec.primary_key)] + [list(c) for _u, c in plan.spec.indexes] \
            + [list(c) for _u, c in self.load_indexes(conn, schema, table)]
        for fk in plan.foreign_keys_added:
            out.append(f"ALTER TABLE {full} ADD {self.foreign_key_sql(fk)}")
            cols = list(fk.attr_map)
            if not any(c[: len(cols)] == cols for c in covered):
                covered.append(cols)
                out.append(index(False, cols))
        return out

    def foreign_key_names(self, conn, schema: str, table: str) -> dict[tuple, str]:
        by_oid = super().foreign_key_names(conn, schema, table)
        if not by_oid:
            return {}
        rows = conn.execute(
            sa.text("SELECT oid, conname FROM pg_constraint WHERE oid IN :oids").bindparams(
                sa.bindparam("oids", expanding=True)),
            {"oids": [int(o) for o in by_oid.values()]},
        ).fetchall()
        names = {str(oid): name for oid, name in rows}
        return {key: names[oid] for key, oid in by_oid.items() if oid in names}

    def index_names(self, conn, schema: str, table: str):
        rows = conn.execute(
            sa.text(
                """
                SELECT ic.relname, i.indisunique, a.attname
                FROM pg_index i
                JOIN pg_class c ON c.oid = i.indrelid
                JOIN pg_class ic ON ic.oid = i.indexrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                WHERE n.nspname = :s AND c.relname = :t AND NOT i.indisprimary
                ORDER BY i.indexrelid, k.ord
                """
            ),
            {"s": schema, "t": table},
        ).fetchall()
        indexes: dict[str, tuple[bool, list[str]]] = {}
        for name, unique, col in rows:
            indexes.setdefault(name, (bool(unique), []))[1].append(col)
        return [(name, unique, cols) for name, (unique, cols) in indexes.items()]

    def drop_table(self, conn, schema: str, table: str) -> None:
        super().drop_table(conn, schema, table)
        # enum types no other column uses any more
        rows = conn.execute(
            sa.text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = :s AND t.typtype = 'e' AND t.typname LIKE 'enum\\_%' AND NOT EXISTS "
                "(SELECT 1 FROM pg_attribute a WHERE a.atttypid = t.oid AND NOT a.attisdropped)"
            ),
            {"s": schema},
        ).fetchall()
        for (name,) in rows:
            conn.execute(sa.text(f"DROP TYPE IF EXISTS {self.quote(schema)}.{self.quote(name)}"))

    # -- schemas ------------------------------------------------------------------------------
    def schema_exists(self, conn, schema: str) -> bool:
        return bool(
            conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
        )

    def create_schema(self, conn, schema: str) -> None:
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}"))

    def drop_schema(self, conn, schema: str) -> None:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {self.quote(schema)} CASCADE"))

    def list_schemas(self, conn) -> list[str]:
        rows = conn.execute(
            sa.text(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname NOT IN ('information_schema', 'public') ORDER BY nspname"
            )
        ).fetchall()
        return [r[0] for r in rows]

    def list_tables(self, conn, schema: str) -> list[str]:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relkind IN ('r', 'p') ORDER BY c.relname"
            ),
            {"s": schema},
        ).fetchall()
        return [r[0] for r in rows]

    # -- catalog ---------------------------------------------------------------------------------
    def load_columns(self, conn, schema: str, table: str):
        rows = conn.execute(
            sa.text(
                """
                SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
                       pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum),
                       array_position(pk.indkey::int2[], a.attnum), a.attidentity <> '' OR
                       coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%', false),
                       obj_description(c.oid, 'pg_class'), t.typtype
                FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                JOIN pg_type t ON t.oid = a.atttypid
                LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
                LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
                WHERE n.nspname = :s AND c.relname = :t
                ORDER BY a.attnum
                """
            ),
            {"s": schema, "t": table},
        ).fetchall()
        if not rows:
            return None
        columns = []
        for name, ntype, nullable, default, comment, pkpos, autoinc, table_comment, typtype in rows:
            if typtype == "e":
                ntype = "enum"
            columns.append(
                ColumnInfo(
                    name=name,
                    native_type=ntype,
                    nullable=bool(nullable),
                    default=None if autoinc else self._default(default),
                    comment=comment or "",
                    in_key=pkpos is not None,
                    key_position=pkpos or 0,
                    autoincrement=bool(autoinc),
                )
            )
        return columns, rows[0][7] or ""

    @staticmethod
    def _default(text: str | None) -> str | None:
        if text is None:
            return None
        text = re.sub(r"::[\w\s.\"()\[\]]+$", "", text.strip())
        low = text.lower()
        if low == "null":
            return None
        if low.startswith("current_timestamp") or low.startswith("now()"):
            return "CURRENT_TIMESTAMP"
        if low in ("true", "false"):
            return "'1'" if low == "true" else "'0'"
        if text.startswith("E'") and text.endswith("'"):  # an escape string (standard_conforming_strings off)
            body = text[2:-1].replace("''", "'")
            return "'" + re.sub(r"\\(.)", r"\1", body).replace("'", "''") + "'"
        if not text.startswith("'"):
            number = text.strip("()")
            # an expression (a table joinflow did not declare) stays as it is: declaring it again
            # (describe(), joinflow copy) refuses it by name instead of storing its text as a string
            return "'" + number + "'" if NUMBER_DEFAULT.fullmatch(number) else text
        return text

    def load_foreign_keys(self, conn, schemas=None) -> list[ForeignKeyInfo]:
        sql = """
            SELECT con.oid, cn.nspname, cc.relname, pn.nspname, pc.relname, ca.attname, pa.attname
            FROM pg_constraint con
            JOIN pg_class cc ON cc.oid = con.conrelid
            JOIN pg_namespace cn ON cn.oid = cc.relnamespace
            JOIN pg_class pc ON pc.oid = con.confrelid
            JOIN pg_namespace pn ON pn.oid = pc.relnamespace
            CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(ck, pk, ord)
            JOIN pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = k.ck
            JOIN pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.pk
            WHERE con.contype = 'f' {where}
            ORDER BY con.oid, k.ord
        """
        params: dict[str, Any] = {}
        where = "AND cn.nspname NOT LIKE 'pg\\_%' AND cn.nspname <> 'information_schema'"
        if schemas:
            where = "AND cn.nspname IN :schemas"
            params["schemas"] = tuple(schemas)
        stmt = sa.text(sql.format(where=where))
        if schemas:
            stmt = stmt.bindparams(sa.bindparam("schemas", expanding=True))
        found: dict[int, ForeignKeyInfo] = {}
        for oid, cs, ct, ps, pt, ccol, pcol in conn.execute(stmt, params).fetchall():
            if oid not in found:
                found[oid] = ForeignKeyInfo(self.full_table_name(cs, ct), self.full_table_name(ps, pt), [], str(oid))
            found[oid].columns.append((ccol, pcol))
        return list(found.values())

    def load_indexes(self, conn, schema: str, table: str):
        return [(unique, cols) for _name, unique, cols in self.index_names(conn, schema, table)]

    # -- statements ---------------------------------------------------------------------------------
    def insert(self, table, columns, primary_key, mode, select=None, reset=()):
        if select is not None:
            stmt = pg_insert(table).from_select(list(columns), select)
        else:
            stmt = pg_insert(table).values({c: sa.bindparam(f"p{i}") for i, c in enumerate(columns)})
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
        return sa.literal_column("LOCALTIMESTAMP(3)")

    def lease_clock(self, shift=None):
        # LOCALTIMESTAMP is the transaction's start: a lease renewed at the end of a long make
        # transaction must get the time of that statement
        now = sa.literal_column("CAST(statement_timestamp() AS timestamp(3))")
        if shift is None:
            return now
        return now + sa.func.make_interval(0, 0, 0, 0, 0, 0, _seconds(shift))

    def lock_suffix(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def try_lock(self, conn, name: str) -> bool | None:
        return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(hashtextextended(:n, 0))"), {"n": name}).scalar())

    def wait_lock(self, conn, name: str) -> None:
        conn.execute(sa.text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"), {"n": name})

    def unlock(self, conn, name: str) -> None:
        conn.execute(sa.text("SELECT pg_advisory_unlock(hashtextextended(:n, 0))"), {"n": name})

    def classify_error(self, exc):
        state = getattr(exc, "sqlstate", None) or ""
        diag = getattr(exc, "diag", None)
        message = (getattr(diag, "message_primary", None) or str(exc)).strip()
        detail = getattr(diag, "message_detail", None)
        if detail:
            message = f"{message} ({detail})"
        if state == "23505":
            return "duplicate", message
        if state == "23503":
            return "foreign_key", message
        if state == "23502":
            return "not_null", message
        if state == "23514":
            return "check", message
        if state.startswith("22"):
            return "data", message
        if state == "42601":
            return "syntax", message
        if state == "42P01":
            return "missing_table", message
        if state == "42703":
            return "unknown_column", message
        if state.startswith("08") or state == "57P01":
            return "lost", message
        if state == "42501":
            return "access", message
        if state in ("40P01", "40001", "55P03"):  # deadlock, serialization failure, lock not available
            return "deadlock", message
        return None, message
