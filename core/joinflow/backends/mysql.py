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

from ..errors import DataTypeError, DeclarationError
from ..heading import Attribute
from ..types import Default, current_timestamp_default
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


# the server refused a statement larger than max_allowed_packet (ER_NET_PACKET_TOO_LARGE), or a
# function result that would be (ER_WARN_ALLOWED_PACKET_OVERFLOWED)
PACKET_ERRORS = (1153, 1301)
# what a statement carries besides its values' bytes: the INSERT text, quoting, the other columns
STATEMENT_SLACK = 4096
WIDE_TYPES = ("bytes", "json", "jsonb")
# the bytes PyMySQL escapes with a backslash when it puts a value into the statement text
_ESCAPED = (b"\0", b"\\", b"\n", b"\r", b"\x1a", b'"', b"'")


def _sent_bytes(value) -> int:
    """The bytes ``value`` takes in the statement PyMySQL sends (escaped, quoted); 0 for non-text."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        return 0
    return len(value) + sum(value.count(c) for c in _ESCAPED) + 10  # _binary'...'


def _raw_bytes(value) -> int:
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    return 0


def _payload(params) -> int:
    """The bytes of the text and binary values in a statement's parameters (rows of them, too)."""
    if isinstance(params, dict):
        params = params.values()
    elif not isinstance(params, (list, tuple)):
        return _raw_bytes(params)
    return sum(_payload(p) if isinstance(p, (list, tuple, dict)) else _raw_bytes(p) for p in params)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _packet_fix() -> str:
    return ("Raise max_allowed_packet on the server (SET GLOBAL max_allowed_packet = <bytes>, and "
            "max_allowed_packet in the [mysqld] section of its config file to keep it; new connections see it), "
            "or keep such values in an object store: declare the attribute `<blob@>` (or `<attach@>`, "
            "`<hash@>`) instead of an in-row type.")


_ESCAPES = {"0": "\x00", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "Z": "\x1a"}


def _unescape(body: str) -> str:
    """The value of a MySQL string literal's body (backslash escapes, doubled quotes)."""
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        elif ch == "'" and body[i + 1 : i + 2] == "'":
            out.append("'")
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class MySQLBackend(Backend):
    name = "mysql"
    drivername = "mysql+pymysql"
    url_database_holds_schemas = False
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
        # PyMySQL's connect_timeout covers only the TCP connect; the handshake that follows reads
        # with read_timeout, which is None (wait forever) unless given: a port that accepts and
        # never answers hung connect() for ever.  The handshake (and the session set-up) reads and
        # writes under connect_timeout; install_events() then sets the session's own read timeout.
        timeout = cfg["database.connect_timeout"]
        self._session_read_timeout = cfg["database.read_timeout"]
        args: dict[str, Any] = {"init_command": f"SET SESSION sql_mode = '{SQL_MODE}'",
                                "connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}
        if cfg["database.use_tls"]:
            args["ssl"] = {"ssl": True}
        return {"connect_args": args}

    def install_events(self, engine: sa.engine.Engine) -> None:
        session_timeout = getattr(self, "_session_read_timeout", None)

        @sa.event.listens_for(engine, "connect")
        def _session_timeouts(dbapi_conn, _record):
            # PyMySQL reads these two before each packet (it has no public setter)
            dbapi_conn._read_timeout = session_timeout
            dbapi_conn._write_timeout = session_timeout

    def is_read_timeout(self, orig: BaseException) -> bool:
        return (getattr(self, "_session_read_timeout", None) is not None and isinstance(orig, pymysql.MySQLError)
                and bool(orig.args) and orig.args[0] == 2013 and "timed out" in str(orig))

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
        if attr.category == "enum":  # rebuilt from the members: the declared spelling is never pasted
            return self._enum_sql(attr, schema, table)
        return attr.type  # char/varchar/datetime(p) are spelled the same

    # -- the one quoting of DDL literals ---------------------------------------------------
    supports_on_update = True
    display_name = "MySQL/MariaDB"

    def ddl_literal(self, text: str, where: str = "A literal") -> str:
        """MySQL reads backslash escapes inside string literals (the session's sql_mode has no
        NO_BACKSLASH_ESCAPES): backslashes are doubled as well as quotes."""
        self.check_ddl_text(text, where)
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def check_ddl_text(self, text: str, where: str = "A literal") -> None:
        super().check_ddl_text(text, where)
        wide = next((ch for ch in text if ord(ch) > 0xFFFF), None)
        if wide is not None:
            raise DeclarationError(
                f"{where} contains {wide!r} (U+{ord(wide):X}): MySQL/MariaDB keep comments, defaults and "
                "enum members in their catalog as 3-byte UTF-8 and would store it as '?'. Use characters of "
                "the Basic Multilingual Plane there (values in rows keep any character)."
            )

    def current_timestamp_sql(self, parsed) -> str:
        return parsed.canonical

    def default_value_sql(self, attr: Attribute, text: str, where: str) -> str:
        if attr.category == "bool" and text.lower() in ("true", "false"):
            return "1" if text.lower() == "true" else "0"
        return self.ddl_literal(text, where)

    def _enum_sql(self, attr: Attribute, schema: str, table: str) -> str:
        where = f"Table {schema}.{table}: an enum member of attribute `{attr.name}`"
        return "enum(" + ", ".join(self.ddl_literal(v, where) for v in attr.typeinfo.enum_values) + ")"

    def create_table(self, conn, schema: str, table: str, spec) -> None:
        lines = []
        for attr in spec.attributes:
            line = f"{self.quote(attr.name)} {self.column_type(attr, schema, table)}"
            line += " NOT NULL" if not attr.nullable else ""
            line += self.default_sql(attr, f"{schema}.{table}")
            if attr.autoincrement and "auto_increment" not in attr.type:
                line += " AUTO_INCREMENT"
            comment = (f":{attr.type}:" if attr.core else "") + attr.comment
            if comment:
                line += f" COMMENT {self.comment_sql(comment, schema, table, attr.name)}"
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
            + f"\n) ENGINE=InnoDB, COMMENT {self.comment_sql(spec.comment, schema, table)}"
        )
        conn.ddl(sql)

    def _column_definition(self, attr: Attribute, schema: str, table: str) -> str:
        """``type [NOT NULL] [DEFAULT ..] COMMENT '..'`` of one column, as alter() writes it."""
        text = self.column_type(attr, schema, table)
        text += " NOT NULL" if not attr.nullable else ""
        text += self.default_sql(attr, f"{schema}.{table}")
        comment = self.column_comment(attr)
        if comment:
            text += f" COMMENT {self.comment_sql(comment, schema, table, attr.name)}"
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
            clauses.append(f"COMMENT {self.comment_sql(plan.comment, schema, table)}")
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
                    default=self._default(default, nullable == "YES", extra),
                    comment=comment or "",
                    in_key=pkpos is not None,
                    key_position=pkpos or 0,
                    autoincrement="auto_increment" in (extra or "").lower(),
                )
            )
        return columns, rows[0][7] or ""

    def _default(self, text: str | None, nullable: bool, extra: str = "") -> str | None:
        """The catalog's default in the dialect-free form of types.parse_default."""
        if text is None:
            return None
        if self.is_mariadb:  # MariaDB reports SQL expressions: 'x' (MySQL-escaped), NULL, current_timestamp()
            if text.upper() == "NULL":
                return None
            if text.startswith("'") and text.endswith("'") and len(text) >= 2:
                return Default("value", _unescape(text[1:-1])).canonical
            now = current_timestamp_default(text.replace("()", ""))
            if now is None:
                return Default("value", text).canonical  # a number
        else:  # MySQL 8 reports the value itself, or CURRENT_TIMESTAMP[(p)]
            now = current_timestamp_default(text)
            if now is None:
                return Default("value", text).canonical
        update = re.search(r"on update current_timestamp(?:\((\d)\))?", extra or "", re.I)
        if update:
            now = Default("now", precision=now.precision, on_update=True,
                          update_precision=int(update.group(1)) if update.group(1) else None)
        return now.canonical

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
    def column_default(self, table, attribute):
        return sa.func.default(table.c[attribute.name])  # DEFAULT(col): NULL for a nullable column without one

    def insert(self, table, columns, primary_key, mode, select=None, reset=()):
        if select is not None:
            stmt = mysql_insert(table).from_select(list(columns), select)
        else:
            stmt = mysql_insert(table).values({c: sa.bindparam(f"p{i}") for i, c in enumerate(columns)})
        if mode == "skip":
            first = primary_key[0]
            stmt = stmt.on_duplicate_key_update({first: table.c[first]})
        elif mode == "replace":
            updates = {c: stmt.inserted[c] for c in columns if c not in primary_key}
            updates.update({a.name: self.column_default(table, a) for a in reset})
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

    # -- statement size -----------------------------------------------------------------------------
    _max_packet: int | None = None  # the server's max_allowed_packet, read once per connection

    def max_packet(self, conn) -> int:
        if self._max_packet is None:
            self._max_packet = int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar())
        return self._max_packet

    def check_statement_size(self, conn, table: str, attributes, rows) -> None:
        # the values that can be large: codec and bytes/json columns, native types (longtext, ...)
        wide = [i for i, a in enumerate(attributes) if a.codec is not None or a.type in WIDE_TYPES or not a.core]
        if not wide:
            return
        limit = None
        for k, row in enumerate(rows):
            raw = 0
            for i in wide:
                raw += _raw_bytes(row[i])
            if 2 * raw + STATEMENT_SLACK <= 2**20:  # below the smallest limit worth a query (1 MiB)
                continue
            if limit is None:
                limit = self.max_packet(conn)
            if 2 * raw + STATEMENT_SLACK <= limit:  # fits even if every byte were escaped
                continue
            sizes = {i: _sent_bytes(row[i]) for i in wide}
            if sum(sizes.values()) + STATEMENT_SLACK <= limit:
                continue
            biggest = max(sizes, key=sizes.__getitem__)
            attr = attributes[biggest]
            raise DataTypeError(
                f"Table {table}, attribute `{attr.name}` ({attr.type}), row {k}: the value is "
                f"{_mib(sizes[biggest])} as "
                f"sent (the row {_mib(sum(sizes.values()))}), more than the MySQL server's max_allowed_packet of "
                f"{_mib(limit)} ({limit} bytes); the server would drop the connection ('server has gone away'). "
                f"Nothing was sent or written. {_packet_fix()}"
            )

    def statement_too_large(self, exc) -> bool:
        orig = getattr(exc, "orig", exc)
        code = orig.args[0] if isinstance(orig, pymysql.err.MySQLError) and orig.args else None
        if code in PACKET_ERRORS:
            return True
        if ERRORS.get(code) == "lost" or getattr(exc, "connection_invalidated", False):
            return _payload(getattr(exc, "params", None)) > (self._max_packet or 2**20)
        return False

    def translate_error(self, exc, table=None):
        if self.statement_too_large(exc):
            sent, limit = _payload(getattr(exc, "params", None)), self._max_packet
            where = f" on table {table}" if table else ""
            limit_text = (f"more than the server's max_allowed_packet of {_mib(limit)} ({limit} bytes)" if limit
                          else "likely more than the server's max_allowed_packet")
            return DataTypeError(
                f"The MySQL server refused a statement{where} that carried {_mib(sent)} of values, {limit_text}, "
                f"and closed the connection (it said: {getattr(exc, 'orig', exc)}). Nothing of the statement was "
                f"written; joinflow reconnects on the next statement. {_packet_fix()}"
            )
        return super().translate_error(exc, table)

    def classify_error(self, exc):
        if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
            code = exc.args[0]
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            return ERRORS.get(code), message
        return None, str(exc)
