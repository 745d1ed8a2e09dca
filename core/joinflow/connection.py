"""Connection: one SQLAlchemy connection (autocommit) with explicit transactions."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import pickle
import random
import re
import time
from typing import Any, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from . import settings
from .backends import get_backend
from .errors import AccessError, DataJointError, DataTypeError, DeadlockError, LostConnectionError, QueryError

logger = logging.getLogger("joinflow")

# A statement that ran outside a transaction and was aborted by the server to break a
# deadlock (or a lock wait timeout / serialization conflict) is run again, this many times,
# after a short randomized pause.  Nothing of an aborted statement was written.
QUERY_CACHE_SUFFIX = ".jfcache"
DEADLOCK_RETRIES = 6
DEADLOCK_PAUSE = 0.05  # seconds; doubled per attempt, randomized

# What a statement run inside a transaction does to the statement savepoint (backends whose failed
# statement aborts the transaction, see Backend.statement_savepoint): a READ leaves it where it is
# (rolling back to it undoes no data), a WRITE makes the next statement move it past this one, and
# CONTROL (the caller's own SAVEPOINT / RELEASE / ROLLBACK TO) stops joinflow's savepoint for the rest
# of the transaction, so it never releases a savepoint the caller set.
READ, WRITE, CONTROL = 0, 1, 2
RAW = 3  # joinflow's own savepoint statements: run as they are
_SP_CLEAN, _SP_MOVE = 1, 2  # the savepoint is set, with nothing / something written after it
_LOCKS_OR_WRITES = re.compile(r"\bFOR\s+(?:UPDATE|SHARE|NO\s+KEY|KEY\s+SHARE)\b|\bINTO\b", re.I)


def statement_kind(sql: str) -> int:
    """READ for a plain SELECT (no row locks, no SELECT INTO), CONTROL for savepoint statements, else WRITE."""
    head = sql.lstrip()[:9].upper()
    if head.startswith("SELECT"):
        return WRITE if _LOCKS_OR_WRITES.search(sql) else READ
    if head.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
        return CONTROL
    return WRITE


# A check of every connection about to be opened, set by joinflow.pipeline (expect_database) while an
# orchestrated step imports its pipeline module and binds its table: called with (backend, URL,
# configured) before anything is connected or created; it raises to refuse the connection.
connect_check: contextvars.ContextVar = contextvars.ContextVar("joinflow_connect_check", default=None)


class Connection:
    """A connection to one database server (or SQLite file).

    ``Connection(host, user, password, port=None, use_tls=None, *, database_name=None,
    backend=None, url=None, config=None)``: arguments left out come from ``config``
    (default: ``dj.config``).  ``url`` (or ``JOINFLOW_DATABASE_URL``) is an SQLAlchemy URL
    and wins over the separate settings.
    """

    def __init__(
        self,
        host: str | None = None,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        use_tls: bool | None = None,
        *,
        database_name: str | None = None,
        backend: str | None = None,
        url: str | None = None,
        config: settings.Config | None = None,
    ):
        cfg = (config or settings.config).copy()
        if host and ":" in host and not host.startswith("["):
            host, _, port_text = host.rpartition(":")
            port = port or int(port_text)
        for key, value in (
            ("database.host", host),
            ("database.user", user),
            ("database.password", password),
            ("database.port", port),
            ("database.use_tls", use_tls),
            ("database.name", database_name),
            ("database.backend", backend),
            ("database.url", url),
        ):
            if value is not None:
                cfg[key] = value
        self.config = config or settings.config
        url_text = cfg["database.url"]
        if url_text:
            try:
                sa_url = make_url(url_text)
            except (sa.exc.ArgumentError, ValueError) as exc:
                raise DataJointError(
                    f"database.url {settings.mask_text(url_text)!r} is not a database URL ({exc}). Write e.g. "
                    "sqlite:///path/joinflow.db or postgresql://user@host:5432/db."
                ) from None
            self.backend = get_backend(sa_url.get_backend_name())
            if sa_url.drivername in ("postgresql", "mysql", "mariadb"):
                sa_url = sa_url.set(drivername=self.backend.drivername)
            # ?connect_timeout= / ?read_timeout= in the URL are the settings of the same name (kept in
            # self.url, so that a connection made from it has them too; the driver gets the settings)
            for name in ("connect_timeout", "read_timeout"):
                if name in sa_url.query:
                    cfg[f"database.{name}"] = sa_url.query[name]
        else:
            self.backend = get_backend(cfg["database.backend"])
            sa_url = self.backend.make_url(cfg)
        settings.remember_secret(sa_url.password)  # masked in every message from now on
        self.url = sa_url
        # False: made from joinflow's defaults alone (no database setting anywhere: SQLite joinflow.db
        # in the working directory), which an orchestrated step refuses (joinflow.pipeline)
        self.configured = any(cfg.is_set(key) for key in settings.DATABASE_KEYS)
        check = connect_check.get()
        if check is not None:
            check(self.backend, sa_url, self.configured)
        self._connect_timeout = cfg["database.connect_timeout"]
        self._read_timeout = cfg["database.read_timeout"]
        self.engine = sa.create_engine(sa_url.difference_update_query(["connect_timeout", "read_timeout"]),
                                       **self.backend.engine_kwargs(cfg))
        self.backend.dialect = self.engine.dialect
        self.backend.install_events(self.engine)
        self._conn: sa.Connection | None = None
        self._driver: tuple | None = None  # (SQLAlchemy connection, its DBAPI connection, a cursor)
        self._dbapi_error = self.engine.dialect.loaded_dbapi.Error
        self._returns_rows = self.backend.cursor_returns_rows
        self._in_transaction = False
        # after commit_transaction(chain=True): the server has the next transaction open already
        # (COMMIT AND CHAIN); start_transaction() takes it over, any other statement ends it first
        self._chained = False
        # statement savepoints (PostgreSQL): their SQL, and the state in the open transaction (0: none)
        self._sp_sql = self.backend.savepoint_statements() if self.backend.statement_savepoint else None
        self._savepoint = 0
        self._failure: str | None = None  # the last statement error inside the open transaction
        self._doomed: str | None = None  # the server aborted the open transaction (deadlock): it cannot commit
        self._atomic_depth = 0  # open atomic_block() blocks
        self._query_cache: str | None = None  # set_query_cache(name): fetched rows kept in config["query_cache"]
        self._reconnect = bool(cfg["database.reconnect"])
        self.headings: dict[str, Any] = {}  # heading cache by full table name
        self.schemas: dict[str, Any] = {}  # activated Schema objects by name
        self._dependencies = None
        self.connect()

    # -- lifecycle ---------------------------------------------------------------------------
    def connect(self) -> None:
        try:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.DBAPIError as exc:
            where = self.url.render_as_string(hide_password=True)
            if self.url.host:
                where += f" ({self.url.host}:{self.url.port or self.backend.default_port})"
            if self.backend.is_connect_timeout(exc.orig):
                hint = (f"The server did not answer within database.connect_timeout = {self._connect_timeout} s: is "
                        "the host and port right and the server running? Raise database.connect_timeout (or "
                        "JOINFLOW_CONNECT_TIMEOUT) for a slow network.")
            else:
                hint = "Check database.host/port/user/password (or JOINFLOW_DATABASE_URL)."
            raise LostConnectionError(f"Cannot connect to {where}: {settings.mask_text(exc.orig)}. {hint}") from None
        self._in_transaction = False
        self._chained = False
        self._end_transaction_state()

    def _end_transaction_state(self) -> None:
        self._savepoint = 0
        self._failure = self._doomed = None
        self._atomic_depth = 0

    def close(self) -> None:
        self._driver = None
        self._chained = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return f"joinflow.Connection({self.url.render_as_string(hide_password=True)!r}) {state}"

    @property
    def is_connected(self) -> bool:
        try:
            self.ping()
        except Exception:
            return False
        return True

    def ping(self) -> None:
        self.execute(sa.text("SELECT 1"))

    @property
    def dialect(self) -> str:
        return self.backend.name

    @property
    def database_name(self) -> str:
        return self.backend.database_name(self.engine)

    @property
    def conn_info(self) -> dict:
        url = self.url
        return {"backend": self.backend.name, "host": url.host, "port": url.port, "user": url.username,
                "database": url.database}

    def get_user(self) -> str:
        return self.url.username or ""

    # -- query cache ----------------------------------------------------------------------------
    def set_query_cache(self, query_cache: str | None = None) -> None:
        """Keep the rows of every fetch outside a transaction in ``config["query_cache"]`` under the
        name ``query_cache`` and answer the same query from there next time (None: stop).

        For repeated reads of data that does not change (an analysis session over a finished
        pipeline); rows written later are not seen until :meth:`purge_query_cache`.  The files are
        Python pickles: point ``query_cache`` at a folder only you write to."""
        if query_cache is not None and not self.config["query_cache"]:
            raise DataJointError(
                "set_query_cache() needs a folder for the cached results: set dj.config['query_cache'] to a "
                "directory, then call it again."
            )
        self._query_cache = query_cache

    def refuse_writes_while_cached(self, action: str, table: str) -> None:
        """Writes while the query cache is on would not be seen by the cached reads: refuse them, as
        DataJoint does (only reads are allowed while it is on)."""
        if self._query_cache is not None:
            raise DataJointError(
                f"Cannot {action} {table} while the query cache {self._query_cache!r} is on: cached reads "
                "would not see the change. Call connection.set_query_cache() (no argument) to turn it "
                "off first."
            )

    def purge_query_cache(self) -> int:
        """Delete every cached result in ``config["query_cache"]``; returns how many files went."""
        folder = self.config["query_cache"]
        if not folder or not os.path.isdir(folder):
            return 0
        removed = 0
        for name in os.listdir(folder):
            if name.endswith(QUERY_CACHE_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
                    removed += 1
        return removed

    def cached_rows(self, sql: str, args: Any, fetch) -> list:
        """``fetch()``'s rows, through the query cache when one is set and no transaction is open."""
        if self._query_cache is None or self._in_transaction or not self.config["query_cache"]:
            return fetch()
        digest = hashlib.sha256(repr((self._query_cache, self.backend.name, sql, args)).encode()).hexdigest()
        path = os.path.join(self.config["query_cache"], f"{self._query_cache}-{digest[:40]}{QUERY_CACHE_SUFFIX}")
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except FileNotFoundError:
            pass
        except Exception as exc:  # an unreadable entry is fetched again and rewritten
            logger.warning("Query cache entry %s is unreadable (%s); fetching again.", path, exc)
        rows = fetch()
        os.makedirs(self.config["query_cache"], exist_ok=True)
        temp = f"{path}.tmp-{os.getpid()}"
        with open(temp, "wb") as f:
            pickle.dump([tuple(r) for r in rows], f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temp, path)
        return rows

    # -- statements -------------------------------------------------------------------------
    @property
    def sa_connection(self) -> sa.Connection:
        if self._conn is None:
            self.connect()
        return self._conn

    def execute(self, statement, params: Any = None, *, table: str | None = None):
        """Execute a SQLAlchemy statement (or SQL text); errors become joinflow errors."""
        if isinstance(statement, str):
            statement = sa.text(statement)
        kind = WRITE
        if self._savepoint:  # inside a transaction that keeps statement savepoints
            if isinstance(statement, sa.TextClause):
                kind = statement_kind(statement.text)
            elif getattr(statement, "is_select", False) and not getattr(statement, "_for_update_arg", None):
                kind = READ
        if params is None:
            return self._run(lambda c: c.execute(statement), table, kind)
        return self._run(lambda c: c.execute(statement, params), table, kind)

    def run_sql(self, sql: str, args: Any = None, *, table: str | None = None):
        """Run pre-compiled SQL (the dialect's paramstyle) with one parameter set, or many.

        The same policy as every statement: reconnect after a lost connection and retry a
        deadlock while no transaction is open; driver errors become joinflow errors.  The
        statement goes straight to the driver's cursor (SQLAlchemy's execution machinery costs
        more client time than the statement itself for short queries); the result is read at
        once and returned as a `DriverResult`.
        """
        return self._run(lambda c: self._driver_execute(c, sql, args), table,
                         statement_kind(sql) if self._savepoint else WRITE)

    def executemany_driver(self, sql: str, rows: Sequence, *, table: str | None = None):
        """Run pre-compiled SQL over many parameter rows with the driver's executemany."""
        rows = rows if isinstance(rows, list) else list(rows)
        return self._run(lambda c: self._driver_execute(c, sql, rows), table)

    def stream(self, sql: str, args: Any, batch_size: int) -> Iterator[list]:
        """Run a SELECT and yield its rows in lists of up to ``batch_size``, read from the server as
        they are consumed (a server-side cursor), so memory stays flat however many rows there are.

        Outside a transaction the rows come through a session of their own (PostgreSQL, MySQL), and
        this connection stays free for other statements meanwhile; inside one, through this session,
        so the transaction's own writes are seen.  Closing the generator early releases the cursor.
        """
        own = self.backend.streams_on_own_session and not self._in_transaction
        if own:
            try:
                dbapi_conn = self.engine.raw_connection()
            except sa.exc.DBAPIError as exc:
                raise self.translate_error(exc) from exc
        else:
            if self._chained:
                self.end_chain()
            if self._in_transaction and self._doomed is not None:
                raise self._doomed_error()
            dbapi_conn = self.sa_connection.connection.dbapi_connection
        kind = statement_kind(sql) if not own and self._in_transaction and self._savepoint else CONTROL
        guarded = kind != CONTROL
        cursor = None
        try:
            if guarded and self._savepoint == _SP_MOVE:
                self._run(lambda c: self._move_savepoint(c), None, RAW)
            cursor = self.backend.stream_cursor(dbapi_conn) if own else dbapi_conn.cursor()
            try:
                cursor.execute(sql, args)
                if guarded and kind == WRITE:  # e.g. FOR UPDATE: its row locks stay after a later failure
                    self._savepoint = _SP_MOVE
                while True:
                    rows = cursor.fetchmany(batch_size)
                    if not rows:
                        return
                    yield rows
            except self._dbapi_error as exc:
                if guarded:
                    self._roll_back_statement(exc)
                error = self.translate_error(
                    sa.exc.DBAPIError.instance(sql, args, exc, self._dbapi_error, dialect=self.engine.dialect)
                )
                if not own:
                    self._note_failure(error)
                raise error from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
            if own:
                with contextlib.suppress(Exception):
                    dbapi_conn.rollback()  # a read-only transaction (PostgreSQL's named cursor needs one)
                dbapi_conn.close()  # back to the pool

    def _driver_execute(self, sa_conn: sa.Connection, sql: str, args: Any) -> "DriverResult":
        """Execute on the DBAPI cursor of ``sa_conn``; a driver error is raised the way SQLAlchemy
        raises it (``sa.exc.DBAPIError``, the session invalidated when the server is gone)."""
        if sa_conn._has_events or self.engine._has_events:  # cursor-execute listeners must see it
            return sa_conn.exec_driver_sql(sql, args) if args is not None else sa_conn.exec_driver_sql(sql)
        _, dbapi_conn, cursor = self._driver_for(sa_conn)
        try:
            if args is None:
                cursor.execute(sql)
            elif type(args) is list:
                if len(args) == 1:
                    cursor.execute(sql, args[0])
                elif args:
                    cursor.executemany(sql, args)
                else:
                    cursor.execute(sql)
            else:
                cursor.execute(sql, args)
            return DriverResult(cursor, self._returns_rows(cursor))
        except self._dbapi_error as exc:
            raise self._driver_error(exc, sql, args) from exc

    def _driver_for(self, sa_conn: sa.Connection) -> tuple:
        """(sa_conn, its DBAPI connection, a cursor on it), made once per session."""
        if self._driver is None or self._driver[0] is not sa_conn:
            dbapi_conn = sa_conn.connection.dbapi_connection
            self._driver = (sa_conn, dbapi_conn, dbapi_conn.cursor())
        return self._driver

    def _driver_error(self, exc: BaseException, sql: str, args: Any) -> sa.exc.DBAPIError:
        """Wrap a driver error as SQLAlchemy does; invalidate the session if the server is gone."""
        sa_conn, dbapi_conn, cursor = self._driver
        dialect = self.engine.dialect
        try:
            lost = bool(dialect.is_disconnect(exc, dbapi_conn, cursor))
        except Exception:  # pragma: no cover - a dialect check must not hide the error
            lost = False
        self._driver = None
        if lost:
            with contextlib.suppress(Exception):
                sa_conn.invalidate(exc)
        return sa.exc.DBAPIError.instance(sql, args, exc, self._dbapi_error, connection_invalidated=lost,
                                          dialect=dialect)

    def _run(self, action, table: str | None, kind: int = WRITE):
        """Run ``action(sa_connection)``: reconnect once after a lost connection and retry
        deadlocks while no transaction is open; every other failure becomes a joinflow error.
        ``kind`` (READ, WRITE, CONTROL) places the statement savepoint where the backend keeps one."""
        lost_retried = False
        deadlocks = 0
        if self._chained:
            self.end_chain()
        if self._in_transaction and self._doomed is not None:
            raise self._doomed_error()
        while True:
            if self._conn is not None and self._conn.invalidated and not self._in_transaction:
                self._discard_connection()  # the session died earlier: start a fresh one
            if self._in_transaction and (self._conn is None or self._conn.invalidated):
                # never let a fresh session run the rest of a transaction the server has forgotten
                raise LostConnectionError(
                    "The connection to the database was lost inside a transaction; the transaction was rolled "
                    "back by the server and nothing of it was written. Roll back (leave the `with` block) and "
                    "run it again."
                )
            try:
                if self._savepoint and self._in_transaction:
                    return self._guarded(action, kind)
                return action(self.sa_connection)
            except OverflowError as exc:  # the driver refuses an integer beyond 64 bits before the server sees it
                raise DataTypeError(
                    f"{exc}{f' in table {table}' if table else ''}: a value is out of range for its column."
                ) from None
            except sa.exc.DBAPIError as exc:
                if not lost_retried and self._should_retry(exc, 0):
                    lost_retried = True
                    continue
                error = self.translate_error(exc, table)
                if isinstance(error, DeadlockError) and not self._in_transaction and deadlocks < DEADLOCK_RETRIES:
                    deadlocks += 1
                    logger.info("Deadlock or lock timeout%s; retrying (attempt %d).",
                                f" on {table}" if table else "", deadlocks + 1)
                    time.sleep(DEADLOCK_PAUSE * (2 ** (deadlocks - 1)) * (0.5 + random.random()))
                    continue
                self._note_failure(error)
                raise error from exc

    # -- statement savepoints ----------------------------------------------------------------------
    def _guarded(self, action, kind: int):
        """Run ``action`` after the statement savepoint; a failed statement is rolled back to it, so
        the transaction stays usable when the caller catches the error (PostgreSQL)."""
        sa_conn = self.sa_connection
        if kind == RAW:
            return action(sa_conn)
        if kind == CONTROL:  # the caller manages savepoints in this transaction: joinflow's steps aside
            self._savepoint = 0
            return action(sa_conn)
        if self._savepoint == _SP_MOVE and not self._atomic_depth:  # in atomic_block(): it stays before the block
            self._move_savepoint(sa_conn)
        try:
            result = action(sa_conn)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                self._roll_back_statement(exc.orig)
            raise
        if kind == WRITE:
            self._savepoint = _SP_MOVE
        return result

    def _move_savepoint(self, sa_conn) -> None:
        """Release the savepoint and set it again after the statements that succeeded (one round trip)."""
        self._driver_execute(sa_conn, self._sp_sql[1], None)
        self._savepoint = _SP_CLEAN

    def _roll_back_statement(self, orig: BaseException) -> None:
        """Undo the failed statement (back to the savepoint).  After a deadlock or lock timeout the
        whole transaction is rolled back at once, releasing its locks as the server would without
        savepoints (another session may be waiting for them); the connection then refuses every
        statement and the COMMIT of this transaction (doomed).  A lost session is left as it is."""
        kind = self.backend.classify_error(orig)[0]
        if kind == "lost":
            return
        try:
            self._driver_execute(self.sa_connection, "ROLLBACK" if kind == "deadlock" else self._sp_sql[2], None)
        except sa.exc.DBAPIError:  # the transaction stays aborted; COMMIT refuses it
            logger.warning("Rolling back the failed statement failed; the transaction cannot be committed.")

    def _note_failure(self, error: DataJointError) -> None:
        """Remember a statement error inside the open transaction; after a deadlock (the server
        aborted the transaction's work) the transaction is doomed: nothing more runs in it and COMMIT
        refuses, on every backend."""
        if not self._in_transaction:
            return
        self._failure = f"{type(error).__name__}: {error}"
        if isinstance(error, DeadlockError):
            self._doomed = self._failure

    @contextlib.contextmanager
    def atomic_block(self) -> Iterator["Connection"]:
        """For joinflow's own multi-statement steps: the block's statements take effect together or
        not at all.

        Outside a transaction, the block is a transaction.  Inside one, an exception leaving the
        block undoes the block's statements only (a savepoint), and the transaction goes on if the
        caller catches it: ``insert()`` of many rows uses it, so a refused row never leaves the rows
        before it behind.  Any failed statement in the block undoes the whole block (PostgreSQL keeps
        one statement savepoint, before the block), so the block must not catch statement errors."""
        if not self._in_transaction:
            with self.transaction:
                yield self
            return
        if self._doomed is not None:
            raise self._doomed_error()
        statement_savepoint = bool(self._savepoint)
        if statement_savepoint:  # PostgreSQL: the statement savepoint, placed before the block, covers it
            if self._savepoint == _SP_MOVE and not self._atomic_depth:
                self._run(lambda c: self._move_savepoint(c), None, RAW)
            names = (None, None, self._sp_sql[2])
        else:
            name = f"jf_atomic{self._atomic_depth}"
            names = (f"SAVEPOINT {name}", f"RELEASE SAVEPOINT {name}", f"ROLLBACK TO SAVEPOINT {name}")
            self._run(lambda c: self._driver_execute(c, names[0], None), None, RAW)
        self._atomic_depth += 1
        try:
            yield self
        except BaseException:
            self._atomic_depth -= 1
            if self._in_transaction and self._doomed is None and self._conn is not None \
                    and not self._conn.invalidated:
                try:
                    self._run(lambda c: self._driver_execute(c, names[2], None), None, RAW)
                    if names[1]:
                        self._run(lambda c: self._driver_execute(c, names[1], None), None, RAW)
                except DataJointError as exc:  # the transaction cannot go on: make sure it never commits
                    self._doomed = self._doomed or f"{type(exc).__name__}: {exc}"
            raise
        self._atomic_depth -= 1
        if names[1]:
            self._run(lambda c: self._driver_execute(c, names[1], None), None, RAW)

    def _doomed_error(self) -> DeadlockError:
        return DeadlockError(
            f"This transaction was aborted by the server earlier ({self._doomed}); nothing of it can be written. "
            "Roll it back (leave the `with` block with the error) and run it again."
        )

    def _commit_refusal(self) -> DataJointError | None:
        """Why the open transaction must not be committed, or None."""
        if self._doomed is not None:
            return DeadlockError(
                f"COMMIT refused: the server aborted this transaction earlier ({self._doomed}). It was rolled "
                "back; nothing of it was written. Run the transaction again."
            )
        if self._sp_sql is not None and self.backend.transaction_aborted(self._driver_for(self._conn)[1]):
            return QueryError(
                "COMMIT refused: a statement in this transaction failed "
                f"({self._failure or 'the error was not seen by joinflow'}) and the server aborted the whole "
                "transaction, so committing would silently write nothing. It was rolled back; nothing of it was "
                "written. Fix the failing statement and run the transaction again."
            )
        return None

    def translate_error(self, exc: BaseException, table: str | None = None) -> DataJointError:
        """The joinflow error for a driver error, with the fix for permission and deadlock errors."""
        error = self.backend.translate_error(exc, table)
        if self.backend.is_read_timeout(getattr(exc, "orig", exc)):
            what = f"A statement{f' on {table}' if table else ''} ran past database.read_timeout = {self._read_timeout} s"
            fix = "Raise database.read_timeout (or JOINFLOW_READ_TIMEOUT), or set it to None for no limit."
            if self.backend.read_timeout_closes_connection:
                return LostConnectionError(
                    f"{what}; joinflow stopped waiting and closed the connection ({getattr(exc, 'orig', exc)}). It "
                    "was not retried. Outside a transaction the server may still have completed it; inside one, "
                    f"nothing of the transaction is written. {fix}")
            return QueryError(f"{what} and the server cancelled it ({getattr(exc, 'orig', exc)}): nothing of it was "
                              f"done, and an open transaction must be rolled back. {fix}")
        # (a DataTypeError here: the backend knows the statement itself made the server hang up)
        lost = not isinstance(error, (LostConnectionError, DataTypeError))
        if getattr(exc, "connection_invalidated", False) and lost:
            error = LostConnectionError(
                f"The database server closed the connection{f' during a statement on {table}' if table else ''}: "
                f"{error}. joinflow reconnects on the next statement; a transaction that was open is rolled back."
            )
        if isinstance(error, AccessError):
            error = AccessError(
                f"{error}. This is a permissions "
                f"problem: the database user {self.get_user()!r} lacks the privilege for this statement. Ask "
                "the database administrator to GRANT it, or connect as a user who has it. Nothing was changed."
            )
        elif isinstance(error, DeadlockError) and self._in_transaction:
            error = DeadlockError(
                f"{error}. The server aborted the transaction's work to resolve a deadlock, a lock wait "
                "timeout or a conflicting concurrent update; once rolled back, nothing of it is written. "
                "Run the transaction again."
            )
        return error

    def rowcount(self, statement, *, table: str | None = None) -> int:
        """Execute and return the affected row count as the driver reports it.

        (SQLAlchemy reports -1 for INSERT ... SELECT constructs on some dialects.)
        """
        compiled = statement.compile(dialect=self.engine.dialect)
        params = compiled.params
        args = tuple(params[name] for name in compiled.positiontup) if compiled.positional else params
        return self._run(lambda c: self._driver_execute(c, compiled.string, args), table).rowcount

    def _discard_connection(self) -> None:
        """Forget a dead session; the next statement opens a new one."""
        self._driver = None
        self._chained = False
        self._savepoint = 0
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _should_retry(self, exc: sa.exc.DBAPIError, attempt: int) -> bool:
        if attempt or not exc.connection_invalidated or self._in_transaction or not self._reconnect:
            return False
        if self.backend.statement_too_large(exc):  # sent again, it would be dropped again
            return False
        if self.backend.is_read_timeout(exc.orig):  # the server may still be running it: never run it twice
            self._discard_connection()
            return False
        logger.warning("Lost the database connection; reconnecting.")
        self._discard_connection()
        self.connect()
        return True

    def query(self, sql: str, args: Any = None, *, as_dict: bool = False):
        """Run raw SQL with bound parameters (``:name`` style); returns rows."""
        result = self.execute(sa.text(sql), args)
        if result.returns_rows:
            return [dict(r._mapping) for r in result] if as_dict else result.fetchall()
        return result

    def ddl(self, sql: str) -> None:
        """Run a DDL statement given as SQL text (colons are not bind markers here)."""
        self.execute(sa.text(sql.replace(":", "\\:")))

    # -- transactions ---------------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    def start_transaction(self) -> None:
        if self._in_transaction:
            raise DataJointError("Nested connections are not supported.")
        self._end_transaction_state()
        if self._chained:  # the previous commit opened this transaction already (and its savepoint)
            self._chained = False
            if self._conn is not None and not self._conn.invalidated:
                self._in_transaction = True
                self._savepoint = _SP_CLEAN if self._sp_sql else 0
                return
            self._discard_connection()
        # a lost connection (e.g. the server dropped us during a long compute) reconnects here;
        # a lock timeout on BEGIN (SQLite's BEGIN IMMEDIATE) is retried like any statement
        begin = self.backend.begin_statement
        if self._sp_sql:  # the first statement savepoint goes in the same round trip
            begin = f"{begin}; {self._sp_sql[0]}"
        self._run(lambda c: self._driver_execute(c, begin, None), None)
        self._in_transaction = True
        self._savepoint = _SP_CLEAN if self._sp_sql else 0

    def commit_transaction(self, chain: bool = False) -> None:
        """COMMIT.  With ``chain`` (where the backend has COMMIT AND CHAIN) the next transaction is
        opened by the same round trip: the caller's next ``start_transaction()`` costs nothing, and
        any other statement first commits the (empty) chained transaction.  For loops that start
        the next transaction at once, never before a pause."""
        if self._conn is None or self._conn.invalidated:
            actions = self.__dict__.pop("_rollback_actions", [])
            self._in_transaction = False
            self._discard_connection()
            self._undo(actions)
            raise LostConnectionError("The connection to the database was lost before COMMIT; the transaction was "
                                      "rolled back by the server and nothing of it was written. Run it again.")
        refusal = self._commit_refusal()
        if refusal is not None:  # never a COMMIT that returns normally and writes nothing
            self.cancel_transaction()
            raise refusal
        actions = self.__dict__.pop("_rollback_actions", [])
        self._end_transaction_state()
        statement = (chain and self.backend.commit_chain_statement) or "COMMIT"
        chained = statement != "COMMIT"
        if chained and self._sp_sql:  # the next transaction's first savepoint, in the same round trip
            statement = f"{statement}; {self._sp_sql[0]}"
        try:
            self._driver_execute(self._conn, statement, None)
        except sa.exc.DBAPIError as exc:
            error = self.translate_error(exc)
            self._in_transaction = False
            if isinstance(error, LostConnectionError):
                # the commit may or may not have happened: keep the objects (gc removes orphans)
                logger.warning("The connection was lost during COMMIT; the outcome is unknown.")
                self._discard_connection()
            else:  # the server refused the commit: the transaction is rolled back
                with contextlib.suppress(Exception):
                    self._driver_execute(self.sa_connection, "ROLLBACK", None)
                self._undo(actions)
            raise error from exc
        self._in_transaction = False
        self._chained = chained

    def end_chain(self) -> None:
        """Commit the empty transaction a chained commit left open, if any (one round trip)."""
        if not self._chained:
            return
        self._chained = False
        if self._conn is None or self._conn.invalidated:
            self._discard_connection()
            return
        try:
            self._driver_execute(self._conn, "COMMIT", None)
        except sa.exc.DBAPIError:  # nothing was in it; the next statement reconnects if the session is gone
            self._discard_connection()

    def cancel_transaction(self) -> None:
        self._in_transaction = False
        self._end_transaction_state()
        if self._conn is None or self._conn.invalidated:  # the session is gone, and its transaction with it
            self._discard_connection()
        else:
            try:
                self._driver_execute(self._conn, "ROLLBACK", None)
            except (sa.exc.DBAPIError, sa.exc.PendingRollbackError):
                logger.warning("ROLLBACK failed; the connection is reset.")
                self._discard_connection()  # the next statement reconnects
        self._undo(self.__dict__.pop("_rollback_actions", []))

    @staticmethod
    def _undo(actions) -> None:
        for action in reversed(actions):
            try:
                action()
            except Exception as exc:  # pragma: no cover - clean-up must not hide the original error
                logger.warning("Clean-up after a rolled-back transaction failed: %s", exc)

    def on_rollback(self, action) -> None:
        """Call ``action()`` if the open transaction is rolled back (objects written in it are deleted)."""
        if not self._in_transaction:
            raise DataJointError("on_rollback() needs an open transaction.")
        self.__dict__.setdefault("_rollback_actions", []).append(action)

    @property
    @contextlib.contextmanager
    def transaction(self) -> Iterator["Connection"]:
        """``with conn.transaction:`` — commit on success, roll back on any exception."""
        self.start_transaction()
        try:
            yield self
        except BaseException:
            self.cancel_transaction()
            raise
        else:
            self.commit_transaction()

    @contextlib.contextmanager
    def transaction_if_needed(self) -> Iterator["Connection"]:
        """A transaction unless one is open already (then the caller's)."""
        if self._in_transaction:
            yield self
        else:
            with self.transaction:
                yield self

    # -- catalog ------------------------------------------------------------------------------------
    @property
    def dependencies(self):
        if self._dependencies is None:
            from .dependencies import Dependencies

            self._dependencies = Dependencies(self)
        return self._dependencies

    def register(self, schema) -> None:
        """Record an activated Schema object with this connection (DataJoint 2.x's
        ``Connection.register``); the dependency graph is read again on next use."""
        if getattr(schema, "database", None) is None:
            raise DataJointError("Connection.register needs an activated Schema (call schema.activate(name) first).")
        self.schemas[schema.database] = schema
        if self._dependencies is not None:
            self._dependencies.clear()

    def forget_catalog(self) -> None:
        """Drop cached headings and the dependency graph (after DDL)."""
        self.headings.clear()
        if self._dependencies is not None:
            self._dependencies.clear()


class DriverResult:
    """The result of a statement run on the driver's cursor, read at once.

    It offers the part of SQLAlchemy's ``CursorResult`` that joinflow uses: ``rowcount``,
    ``lastrowid``, ``returns_rows``, ``fetchall()``, ``fetchone()``, ``first()``, ``scalar()``,
    iteration, ``close()``, and ``cursor`` (itself while it holds rows).  Rows are the driver's
    tuples.
    """

    __slots__ = ("rowcount", "lastrowid", "_rows", "_pos")

    def __init__(self, cursor, returns_rows: bool):
        self.rowcount = cursor.rowcount
        self.lastrowid = getattr(cursor, "lastrowid", None)
        self._rows = cursor.fetchall() if returns_rows else None
        self._pos = 0

    @property
    def returns_rows(self) -> bool:
        return self._rows is not None

    @property
    def cursor(self):
        return self if self._rows is not None else None

    def _need_rows(self) -> list:
        if self._rows is None:
            raise sa.exc.ResourceClosedError("This result object does not return rows.")
        return self._rows

    def fetchall(self) -> list:
        rows = self._need_rows()
        out = rows[self._pos:] if self._pos else rows
        self._pos = len(rows)
        return out

    def fetchone(self):
        rows = self._need_rows()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def first(self):
        row = self.fetchone()
        self.close()
        return row

    def scalar(self):
        row = self.first()
        return None if row is None else row[0]

    def __iter__(self):
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        if self._rows is not None:
            self._pos = len(self._rows)


_singleton: Connection | None = None


def conn(host=None, user=None, password=None, *, reset: bool = False, use_tls=None) -> Connection:
    """The process-wide connection, made from ``dj.config`` on first use."""
    global _singleton
    from .instance import check_thread_safe

    check_thread_safe("dj.conn()")
    if _singleton is None or reset:
        if _singleton is not None:
            with contextlib.suppress(Exception):
                _singleton.close()
        _singleton = Connection(host, user, password, use_tls=use_tls)
    return _singleton
