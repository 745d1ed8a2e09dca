"""One joinflow session per task thread, so parallel ``make()`` calls in task threads overlap.

A joinflow ``Connection`` is not thread-safe, and a pipeline module holds one (its tables'
classes, its ``dj.Schema`` and often a module-level ``connection`` all point to it).
:func:`per_thread` turns such a connection, in place, into one that hands every thread other
than the one that turned it a session of its own on the same database (the same URL and
configuration): every reference to it - the classes, the schema, a ``make()`` that uses the
module's ``connection`` - then reaches the calling thread's session, and no lock is needed
around a task's database work.  The thread that turned it (the flow's thread) keeps the original.

A task takes a session from the connection's pool for its duration (:func:`session`): at most
``limit`` sessions exist per connection (``PREFECT_JOINFLOW_SESSIONS``, default 8), so an
unbounded thread pool does not open a database connection per task; a task waits for a free one.
A thread that uses the connection outside :func:`session` gets a session of its own for its
lifetime (closed when a later session is made after the thread ended, or by ``close()``).

An in-memory SQLite database cannot be shared between sessions: such a connection is left as
it is (:func:`per_thread` returns False) and the caller keeps serializing behind its lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

DEFAULT_LIMIT = int(os.environ.get("PREFECT_JOINFLOW_SESSIONS", "8") or 8)

# read from the original in every thread: they are the same for all of a connection's sessions
_SHARED = frozenset({"url", "config", "close", "__class__", "__dict__", "__repr__"})
_classes: dict[type, type] = {}
_classes_lock = threading.Lock()
_install_lock = threading.Lock()


def _thread_class(base: type) -> type:
    """The subclass of a Connection class whose instances hand each thread its own session."""
    with _classes_lock:
        if base in _classes:
            return _classes[base]

        def __getattribute__(self, name):  # noqa: N807
            state = object.__getattribute__(self, "__dict__")
            if name.startswith("_jf_") or name in _SHARED or threading.get_ident() == state["_jf_owner"]:
                return object.__getattribute__(self, name)
            return getattr(_session(self), name)

        def __setattr__(self, name, value):  # noqa: N807
            state = object.__getattribute__(self, "__dict__")
            if name.startswith("_jf_") or threading.get_ident() == state["_jf_owner"]:
                object.__setattr__(self, name, value)
            else:
                setattr(_session(self), name, value)

        def close(self) -> None:
            """Close this thread's session; from the owning thread, every session and the original."""
            state = object.__getattribute__(self, "__dict__")
            if threading.get_ident() != state["_jf_owner"]:
                session = getattr(state["_jf_local"], "connection", None)
                if session is not None:
                    session.close()
                return
            with state["_jf_lock"]:
                pinned, state["_jf_sessions"] = state["_jf_sessions"], []
                idle, state["_jf_idle"][:] = list(state["_jf_idle"]), []
            for session in [s for _t, s in pinned] + idle:
                _quietly_close(session)
            base.close(self)

        cls = type(f"PerThread{base.__name__}", (base,), {
            "__getattribute__": __getattribute__, "__setattr__": __setattr__, "close": close,
            "__module__": __name__, "__doc__": f"A {base.__name__} with one session per thread."})
        _classes[base] = cls
        return cls


def _quietly_close(session) -> None:
    try:
        session.close()
    except Exception:  # pragma: no cover - closing must not hide a result
        pass


def _session(conn) -> Any:
    """The calling thread's session of ``conn`` (opened on first use)."""
    state = object.__getattribute__(conn, "__dict__")
    local = state["_jf_local"]
    session = getattr(local, "connection", None)
    if session is None:
        with state["_jf_lock"]:  # sessions of threads that have ended are closed
            alive = [(t, s) for t, s in state["_jf_sessions"] if t.is_alive()]
            dead = [s for t, s in state["_jf_sessions"] if not t.is_alive()]
            state["_jf_sessions"] = alive
        for old in dead:
            _quietly_close(old)
        session = _new_session(conn)
        local.connection = session
        with state["_jf_lock"]:
            state["_jf_sessions"].append((threading.current_thread(), session))
    return session


def _new_session(conn) -> Any:
    state = object.__getattribute__(conn, "__dict__")
    original = object.__getattribute__(conn, "url")
    return state["_jf_base"](url=original.render_as_string(hide_password=False),
                             config=object.__getattribute__(conn, "config"))


@contextlib.contextmanager
def session(conn: Any) -> Iterator[None]:
    """This thread uses a session from ``conn``'s pool inside (waiting while all are busy).

    A no-op in the thread that owns ``conn`` and for a connection that is not per thread.
    """
    if not is_per_thread(conn):
        yield
        return
    state = object.__getattribute__(conn, "__dict__")
    local = state["_jf_local"]
    if threading.get_ident() == state["_jf_owner"] or getattr(local, "connection", None) is not None:
        yield
        return
    slots = state["_jf_slots"]
    slots.acquire()
    try:
        with state["_jf_lock"]:
            taken = state["_jf_idle"].pop() if state["_jf_idle"] else None
        if taken is None:
            taken = _new_session(conn)
        local.connection = taken
        try:
            yield
        finally:
            local.connection = None
            try:
                if taken.in_transaction:  # never hand on (or keep idle) an open transaction
                    taken.cancel_transaction()
                if hasattr(taken, "end_chain"):
                    taken.end_chain()
                keep = True
            except Exception:
                keep = False
            if keep:
                with state["_jf_lock"]:
                    state["_jf_idle"].append(taken)
            else:
                _quietly_close(taken)
    finally:
        slots.release()


def is_per_thread(conn: Any) -> bool:
    return "_jf_owner" in getattr(conn, "__dict__", {})


def per_thread(conn: Any, limit: int | None = None) -> bool:
    """Give every thread but the calling one its own session of ``conn`` (in place).

    Returns True when ``conn`` now does (or already did), False when it cannot (an in-memory
    SQLite database, which a second session would not see).
    """
    with _install_lock:
        if is_per_thread(conn):
            return True
        url = conn.url
        if url.get_backend_name() == "sqlite" and (url.database or ":memory:") in ("", ":memory:"):
            return False
        base = type(conn)
        state = conn.__dict__
        state["_jf_base"] = base
        state["_jf_local"] = threading.local()
        state["_jf_lock"] = threading.Lock()
        state["_jf_sessions"] = []  # (thread, session) of threads outside session()
        state["_jf_idle"] = []  # pooled sessions not in use
        state["_jf_slots"] = threading.BoundedSemaphore(max(1, int(limit or DEFAULT_LIMIT)))
        state["_jf_owner"] = threading.get_ident()
        conn.__class__ = _thread_class(base)
        return True


def sessions(conn: Any) -> int:
    """How many sessions ``conn`` keeps open besides the original: pooled idle + per-thread."""
    if not is_per_thread(conn):
        return 0
    state = object.__getattribute__(conn, "__dict__")
    with state["_jf_lock"]:
        return len(state["_jf_sessions"]) + len(state["_jf_idle"])
