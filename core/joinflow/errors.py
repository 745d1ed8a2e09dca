"""Exception hierarchy, importable under DataJoint 2.x's names.

Every error raised by joinflow is a :class:`DataJointError`.  Messages name the
table, the attribute and the fix wherever those are known.
"""

from __future__ import annotations


class DataJointError(Exception):
    """Base class of every joinflow error (DataJoint's name, kept for compatibility)."""

    def suggest(self, *args) -> "DataJointError":
        """Return a copy of this error with extra hints appended to its arguments."""
        return self.__class__(*(self.args + args))

    def __str__(self) -> str:
        # secrets (URL passwords, passwords, store keys) never show in a message or a traceback
        from .settings import mask_text

        return mask_text(super().__str__())


JoinflowError = DataJointError


class LostConnectionError(DataJointError):
    """The connection to the database server was lost."""


class QueryError(DataJointError):
    """The database server rejected a statement."""


class QuerySyntaxError(QueryError):
    """Malformed SQL (usually a bad restriction string)."""


class AccessError(QueryError):
    """The database user lacks a privilege."""


class DeadlockError(QueryError):
    """The server aborted a statement or transaction to resolve a deadlock, a lock wait
    timeout or a serialization conflict.  Nothing of it was written; it is safe to retry.

    joinflow retries such statements by itself when they ran outside a transaction; inside
    a transaction the whole transaction must be run again (``populate`` re-runs the key).
    """


class DuplicateError(QueryError):
    """A row with the same primary key (or unique index value) exists already."""


class IntegrityError(QueryError):
    """A foreign-key or other integrity constraint would be violated."""


class UnknownAttributeError(QueryError, KeyError):
    """An attribute name that the table's heading does not have.

    Also a ``KeyError`` so that code written against DataJoint 2.3.5 (which raises a
    bare ``KeyError`` for unknown insert fields) keeps working.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingAttributeError(QueryError):
    """A required attribute (no default, not nullable) was not given."""


class DataTypeError(QueryError, ValueError):
    """A value does not fit its attribute's type."""


class MissingTableError(DataJointError):
    """A table that the statement refers to does not exist."""


class MissingExternalFile(DataJointError):
    """An object referenced by a row is missing from its store."""


class BucketInaccessible(DataJointError):
    """An object store cannot be reached."""


class ThreadSafetyError(DataJointError):
    """Global state was used while thread-safe mode is on; use ``dj.Instance``."""


class DeclarationError(DataJointError):
    """A table definition could not be parsed or declared."""


class BlobError(DataJointError):
    """Stored blob bytes cannot be decoded: they are truncated, corrupted or crafted (a declared
    size larger than the bytes that follow, a zlib stream longer than its declared size, nesting
    deeper than ``joinflow.blob.MAX_DEPTH``), or were written by a serializer joinflow does not know."""


class ConfigError(DataJointError):
    """A configuration file, environment variable or setting is malformed (the message names it)."""


class WrongDatabaseError(ConfigError):
    """A step run by an orchestrator is not connected to its pipeline's database: joinflow is not
    configured in the worker, the configured SQLite file does not exist, or the configuration names
    another database than the pipeline (its manifest).  Retrying does not help: fix the setting."""


class WorkerDiedError(DataJointError):
    """A worker process of ``populate(processes=N)`` died (killed, out of memory) while making a
    key; the key is an error job, reported with the error."""


class MissingPackageError(DataJointError, ImportError):
    """An optional package a method needs is not installed (the message names the pip install).
    Also an ImportError, as DataJoint raises there."""
