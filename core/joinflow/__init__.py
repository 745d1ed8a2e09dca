"""joinflow — the relational workflow model, compatible with DataJoint 2.x.

``import joinflow as dj`` gives the DataJoint 2.x API: tables are workflow steps, rows
are artifacts, foreign keys prescribe execution order.
"""

from __future__ import annotations

import logging

from . import errors
from . import blob
from .autopopulate import AutoPopulate
from .blob import MatCell, MatStruct
from .builtin_codecs import SchemaCodec
from .codecs import Codec, get_codec, list_codecs
from .condition import AndList, Not
from .connection import Connection, conn
from .errors import DataJointError, ThreadSafetyError
from .expression import QueryExpression, Top, U
from .instance import ConfigProxy, Instance
from .jobs import Job
from .objectref import NpyRef, ObjectRef
from .schemas import Schema, VirtualModule, list_schemas, virtual_schema
from . import settings as _settings
from .table import FreeTable, Table
from .user_tables import Compute, Computed, Entry, Imported, Ingest, Lookup, Manual, Part
from .validation import ValidationResult

config = ConfigProxy(_settings.config)  # refused under DJ_THREAD_SAFE, as in DataJoint

__version__ = "0.1.0"
__author__ = "joinflow developers"

logger = logging.getLogger("joinflow")
try:
    logger.setLevel(str(_settings.config["loglevel"]).upper())
except ValueError:
    logger.warning("Unknown loglevel %r in the configuration; using INFO.", _settings.config["loglevel"])
except errors.ConfigError:  # a malformed configuration file: every use of dj.config raises the error, naming it
    pass

__all__ = [
    "__version__", "config", "conn", "Connection", "Instance", "Schema", "VirtualModule", "virtual_schema",
    "list_schemas", "Table", "FreeTable", "Manual", "Entry", "Lookup", "Imported", "Ingest", "Computed",
    "Compute", "Part", "Not", "AndList", "Top", "U", "QueryExpression", "errors", "DataJointError", "ThreadSafetyError",
    "logger", "Codec", "SchemaCodec", "get_codec", "list_codecs", "blob", "Diagram", "diagram",
    "ObjectRef", "NpyRef", "gc", "ValidationResult", "AutoPopulate", "Job", "MatCell", "MatStruct",
    "utils", "lineage", "migrate", "deploy", "cli",
]


def __getattr__(name: str):
    """Imported on first use: ``dj.gc`` (as in DataJoint), and ``dj.Diagram`` / ``dj.diagram``
    (networkx and the drawing code cost about 0.1 s that most scripts never need)."""
    import importlib

    if name in ("gc", "diagram", "deploy", "utils", "lineage", "migrate", "cli"):
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    if name == "Diagram":
        cls = importlib.import_module(".diagram", __name__).Diagram
        globals()["Diagram"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
