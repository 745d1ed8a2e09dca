"""MySQL 8 and MariaDB (PyMySQL), laid out as DataJoint 2.x lays it out.

A joinflow schema is a MySQL database; the declared type and comment of each column
go in its COMMENT (``:int32:free text``).  Sessions run in strict mode with
ONLY_FULL_GROUP_BY, as DataJoint's do.
"""

from __future__ import annotations

import re
from typing import Any

import pymysql
import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert

from ..heading import Attribute
from .base import Backend, ColumnInfo, ForeignKeyInfo

SQL_MODE = (
    "NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,STRICT_ALL_TABLES,"
    "NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY"
)

TYPES = {
    "int8": "tinyint",
    "int16": "smallint",
    "int32": "int",
    "int64": "bigint",
    "float32": "float",
    "float64": "double",
    "bool": "tinyint",
    "date": "date",
    "uuid": "binary(16)",
    "json": "json",
    "jsonb": "json",
    "bytes": "longblob",
}

SYSTEM_SCHEMAS = ("information_schema", "mysql", "performance_schema", "sys")

ERRORS = {
    1062: "duplicate",
    1216: "foreign_key",
    1217: "foreign_key",
    1451: "foreign_key",
    1452: "foreign_key",
    3730: "foreign_key",
    1048: "not_null",
    1364: "not_null",
    1264: "data",
    1265: "data",
    1292: "data",
    1366: "data",
    1406: "data",
    3819: "check",
    4025: "check",
    1064: "syntax",
    1146: "missing_table",
    1054: "unknown_column",
    2006: "lost",
    2013: "lost",
    0: "lost",
    1044: "access",
    1142: "access",
    1143: "access",
    1213: "deadlock",  # the transaction was rolled back to break a deadlock
    1205: "deadlock",  # lock wait timeout: the statement was rolled back
}


class MySQLBackend(Backend):
    name = "mysql"
    drivername = "mysql+pymysql"
    default_port = 3306
    max_name_length = 64
    begin_statement = "START TRANSACTION"

    def executemany_is_atomic(self, rows) -> bool:
        # PyMySQL sends many rows as multi-row INSERTs of up to ~1 MB each: one statement (which the
        # server undoes as a whole) only when the rows' SQL stays well under that
        size = 0
        for row in rows:
            for value in row.values() if isinstance(row, dict) else row:
                size += 2 * len(value) + 4 if isinstance(value, (str, bytes, bytearray)) else 32
            if size > 800_000:
                return False
        return True

    def make_url(self, cfg) -> sa.engine.URL:
        return sa.engine.URL.create(
            self.drivername,
            username=cfg["database.user"] or "root",
            password=cfg["database.password"] or None,
            host=cfg["database.host"] or "localhost",
            port=int(cfg["database.port"] or self.default_port),
            query={"charset": "utf8mb4"},
        )

    def engine_kwargs(self, cfg) -> dict:
        args: dict[str, Any] = {"init_command": f"SET SESSION sql_mode = '{SQL_MODE}'"}
        if cfg["database.use_tls"]:
            args["ssl"] = {"ssl": True}
        return {"connect_args": args}

    def stream_cursor(self, dbapi_conn):
        import pymysql.cursors

        return dbapi_conn.cursor(pymysql.cursors.SSCursor)  # unbuffered: rows are read as they are fetched

    @property
    def is_mariadb(self) -> bool:
        return bool(getattr(self.dialect, "is_mariadb", False))

    def database_name(self, engine) -> str:
        return ""

    # -- DDL -------------------------------------------------------------------------------
    def column_type(self, attr: Attribute, schema: str, table: str) -> str:
        if not attr.core:
            return attr.type
        if attr.type in TYPES:
            return TYPES[attr.type]
        info = attr.typeinfo
        if attr.category == "decimal":
            return f"decimal({info.precision},{info.scale})"
        return attr.type  # char/varchar/enum/datetime(p) are spelled the same

    def default_sql(self, attr: Attribute) -> str:
        text = super().default_sql(attr)
        if attr.category == "bool" and attr.default and attr.default.lower() in ("'true'", "'false'"):
            return " DEFAULT " + ("1" if attr.default.lower() == "'true'" else "0")
        return text

    def create_table(self, conn, schema: str, table: str, spec) -> None:
        lines = []
        for attr in spec.attributes:
            line = f"{self.quote(attr.name)} {self.column_type(attr, schema, table)}"
            line += " NOT NULL" if not attr.nullable else ""
            line += self.default_sql(attr)
            if attr.autoincrement and "auto_increment" not in attr.type:
                line += " AUTO_INCREMENT"
            comment = (f":{attr.type}:" if attr.core else "") + attr.comment
            if comment:
                line += f" COMMENT {self._literal(comment)}"
            lines.append(line)
        lines.append("PRIMARY KEY (" + ", ".join(self.quote(k) for k in spec.primary_key) + ")")
        for fk in spec.foreign_keys:
            lines.append(
                f"FOREIGN KEY ({', '.join(self.quote(c) for c in fk.attr_map)}) REFERENCES "
                f"{self.full_table_name(fk.parent_schema, fk.parent_table)} "
                f"({', '.join(self.quote(p) for p in fk.attr_map.values())}) "
                "ON UPDATE CASCADE ON DELETE RESTRICT"
            )
        for unique, cols in spec.indexes:
            lines.append(f"{'UNIQUE ' if unique else ''}INDEX ({', '.join(self.quote(c) for c in cols)})")
        sql = (
            f"CREATE TABLE IF NOT EXISTS {self.full_table_name(schema, table)} (\n  "
            + ",\n  ".join(lines)
            + f"\n) ENGINE=InnoDB, COMMENT {self._literal(spec.comment)}"
        )
        conn.ddl(sql)

    @staticmethod
    def _literal(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def _column_definition(self, attr: Attribute, schema: str, table: str) -> str:
        """``type [NOT NULL] [DEFAULT ..] COMMENT '..'`` of one column, as alter() writes it."""
        text = self.column_type(attr, schema, table)
        text += " NOT NULL" if not attr.nullable else ""
        text += self.default_sql(attr)
        comment = self.column_comment(attr)
        if comment:
            text += f" COMMENT {self._literal(comment)}"
        return text

    def alter_statements(self, conn, schema: str, table: str, plan) -> list[str]:
        """One ``ALTER TABLE`` (atomic in MySQL/MariaDB): DROP FOREIGN KEY, DROP INDEX, DROP, CHANGE
        (renames), MODIFY, ADD, ADD INDEX, ADD FOREIGN KEY, COMMENT."""
        full = self.full_table_name(schema, table)
        clauses = [f"DROP FOREIGN KEY {self.quote(name)}"
                   for name in self.dropped_foreign_key_names(conn, schema, table, plan)]
        clauses += [f"DROP INDEX {self.quote(name)}" for name in self.dropped_index_names(conn, schema, table, plan)]
        for change in plan.changes:
            old, new = change.old, change.new
            if new is None:
                clauses.append(f"DROP {self.quote(old.name)}")
            elif old is None:
                clauses.append(f"ADD {self.quote(new.name)} {self._column_definition(new, schema, table)}")
            elif change.renamed:
                clauses.append(f"CHANGE {self.quote(old.name)} {self.quote(new.name)} "
                               f"{self._column_definition(new, schema, table)}")
            else:
                clauses.append(f"MODIFY {self.quote(new.name)} {self._column_definition(new, schema, table)}")
        for unique, cols in plan.indexes_added:
            clauses.append(f"ADD {'UNIQUE ' if unique else ''}INDEX ({', '.join(self.quote(c) for c in cols)})")
        for fk in plan.foreign_keys_added:
            clauses.append("ADD " + self.foreign_key_sql(fk))
        if plan.comment is not None:
            clauses.append(f"COMMENT {self._literal(plan.comment)}")
        return [f"ALTER TABLE {full}\n  " + ",\n  ".join(clauses)]

    # -- schemas ---------------------------------------------------------------------------------
    def schema_exists(self, conn, schema: str) -> bool:
        return bool(
            conn.execute(
                sa.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"), {"s": schema}
            ).first()
        )

    def create_schema(self, conn, schema: str) -> None:
        conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {self.quote(schema)}"))

    def drop_schema(self, conn, schema: str) -> None:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.quote(schema)}"))

    def list_schemas(self, conn) -> list[str]:
        rows = conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata")).fetchall()
        return sorted(r[0] for r in rows if r[0] not in SYSTEM_SCHEMAS)

    def list_tables(self, conn, schema: str) -> list[str]:
        rows = conn.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s "
                "AND table_type = 'BASE TABLE' ORDER BY table_name"
            ),
            {"s": schema},
        ).fetchall()
        return [r[0] for r in rows]

    # -- catalog -------------------------------------------------------------------------------------
    def load_columns(self, conn, schema: str, table: str):
        rows = conn.execute(
            sa.text(
                """
                SELECT c.column_name, c.column_type, c.is_nullable, c.column_default, c.column_comment,
                       s.seq_in_index, c.extra, t.table_comment
                FROM information_schema.columns c
                JOIN information_schema.tables t
                  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                LEFT JOIN information_schema.statistics s
                  ON s.table_schema = c.table_schema AND s.table_name = c.table_name
                 AND s.column_name = c.column_name AND s.index_name = 'PRIMARY'
                WHERE c.table_schema = :s AND c.table_name = :t
                ORDER BY c.ordinal_position
                """
            ),
            {"s": schema, "t": table},
        ).fetchall()
        if not rows:
            return None
        columns = []
        for name, ctype, nullable, default, comment, pkpos, extra, _tc in rows:
            ctype = ctype.decode() if isinstance(ctype, bytes) else ctype
            columns.append(
                ColumnInfo(
                    name=name,
                    native_type=ctype,
                    nullable=nullable == "YES",
                    default=self._default(default, nullable == "YES"),
                    comment=comment or "",
                    in_key=pkpos is not None,
                    key_position=pkpos or 0,
                    autoincrement="auto_increment" in (extra or "").lower(),
                )
            )
        return columns, rows[0][7] or ""

    def _default(self, text: str | None, nullable: bool) -> str | None:
        if text is None:
            return None
        if self.is_mariadb:  # MariaDB reports SQL expressions: 'x', NULL, current_timestamp()
            if text.upper() == "NULL":
                return None
            if text.lower().startswith("current_timestamp"):
                return "CURRENT_TIMESTAMP" + (re.search(r"\(\d\)", text) or [""])[0]
            if text.startswith("'"):
                return text
            return "'" + text + "'"
        if text.upper().startswith("CURRENT_TIMESTAMP"):
            return text.upper()
        return "'" + text.replace("'", "''") + "'"

    def load_foreign_keys(self, conn, schemas=None) -> list[ForeignKeyInfo]:
        sql = """
            SELECT constraint_schema, constraint_name, table_schema, table_name, column_name,
                   referenced_table_schema, referenced_table_name, referenced_column_name
            FROM information_schema.key_column_usage
            WHERE referenced_table_name IS NOT NULL {where}
            ORDER BY constraint_schema, table_name, constraint_name, ordinal_position
        """
        if schemas:
            stmt = sa.text(sql.format(where="AND table_schema IN :schemas")).bindparams(
                sa.bindparam("schemas", expanding=True)
            )
            params = {"schemas": list(schemas)}
        else:
            stmt = sa.text(
                sql.format(where="AND table_schema NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema')")
            )
            params = {}
        found: dict[tuple, ForeignKeyInfo] = {}
        for cs, cname, ts, tn, col, ps, pt, pcol in conn.execute(stmt, params).fetchall():
            key = (cs, tn, cname)
            if key not in found:
                found[key] = ForeignKeyInfo(self.full_table_name(ts, tn), self.full_table_name(ps, pt), [], cname)
            found[key].columns.append((col, pcol))
        return list(found.values())

    def load_indexes(self, conn, schema: str, table: str):
        return [(unique, cols) for _name, unique, cols in self.index_names(conn, schema, table)]

    def index_names(self, conn, schema: str, table: str):
        rows = conn.execute(
            sa.text(
                "SELECT index_name, non_unique, column_name FROM information_schema.statistics "
                "WHERE table_schema = :s AND table_name = :t AND index_name <> 'PRIMARY' "
                "ORDER BY index_name, seq_in_index"
            ),
            {"s": schema, "t": table},
        ).fetchall()
        indexes: dict[str, tuple[bool, list[str]]] = {}
        for name, non_unique, col in rows:
            indexes.setdefault(name, (not int(non_unique), []))[1].append(col)
        return [(name, unique, cols) for name, (unique, cols) in indexes.items()]

    # -- statements --------------------------------------------------------------------------------------
    def insert(self, table, columns, primary_key, mode, select=None):
        if select is not None:
            stmt = mysql_insert(table).from_select(list(columns), select)
        else:
            stmt = mysql_insert(table).values({c: sa.bindparam(f"p{i}") for i, c in enumerate(columns)})
        if mode == "skip":
            first = primary_key[0]
            stmt = stmt.on_duplicate_key_update({first: table.c[first]})
        elif mode == "replace":
            updates = {c: stmt.inserted[c] for c in columns if c not in primary_key}
            first = primary_key[0]
            stmt = stmt.on_duplicate_key_update(updates or {first: table.c[first]})
        return stmt

    def lock_suffix(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def try_lock(self, conn, name: str) -> bool | None:
        return conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name[:64]}).scalar() == 1

    def wait_lock(self, conn, name: str) -> None:
        conn.execute(sa.text("SELECT GET_LOCK(:n, 3600)"), {"n": name[:64]})

    def unlock(self, conn, name: str) -> None:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})

    def classify_error(self, exc):
        if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
            code = exc.args[0]
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            return ERRORS.get(code), message
        return None, str(exc)
