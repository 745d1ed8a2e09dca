"""One joinflow connection per thread, so parallel ``make()`` calls in task threads overlap.

A joinflow ``Connection`` is not thread-safe, and a pipeline module holds one (its tables'
classes, its ``dj.Schema`` and often a module-level ``connection`` all point to it).
:func:`per_thread` turns such a connection, in place, into one that gives every thread other
than the one that turned it its own session on the same database (the same URL and
configuration, opened on first use in that thread and reused by every later task of the thread):
every reference to it - the classes, the schema, a ``make()`` that uses the module's
``connection`` - then reaches the calling thread's session, and no lock is needed around a
task's database work.  The thread that turned it (the flow's thread) keeps the original.

An in-memory SQLite database cannot be shared between sessions: such a connection is left as
it is (:func:`per_thread` returns False) and the caller keeps serializing behind its lock.
"""

from __future__ import annotations

import threading
from typing import Any

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
                sessions, state["_jf_sessions"] = state["_jf_sessions"], []
            for _thread, session in sessions:
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
        base = state["_jf_base"]
        with state["_jf_lock"]:  # sessions of threads that have ended are closed
            alive = [(t, s) for t, s in state["_jf_sessions"] if t.is_alive()]
            dead = [s for t, s in state["_jf_sessions"] if not t.is_alive()]
            state["_jf_sessions"] = alive
        for old in dead:
            _quietly_close(old)
        original = object.__getattribute__(conn, "url")
        session = base(url=original.render_as_string(hide_password=False),
                       config=object.__getattribute__(conn, "config"))
        local.connection = session
        with state["_jf_lock"]:
            state["_jf_sessions"].append((threading.current_thread(), session))
    return session


def is_per_thread(conn: Any) -> bool:
    return "_jf_owner" in getattr(conn, "__dict__", {})


def per_thread(conn: Any) -> bool:
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
        state["_jf_sessions"] = []
        state["_jf_owner"] = threading.get_ident()
        conn.__class__ = _thread_class(base)
        return True


def sessions(conn: Any) -> int:
    """How many thread sessions ``conn`` has open (for tests and diagnostics)."""
    if not is_per_thread(conn):
        return 0
    state = object.__getattribute__(conn, "__dict__")
    with state["_jf_lock"]:
        return len(state["_jf_sessions"])
