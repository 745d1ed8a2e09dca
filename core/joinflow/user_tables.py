"""Table tiers: Manual, Lookup, Imported, Computed, Part (and DataJoint 2.3's aliases)."""

from __future__ import annotations

import re
import warnings

from .errors import DataJointError
from .autopopulate import AutoPopulate
from .expression import QueryExpression
from .table import Table, from_camel_case

# Methods and properties that work on the class itself (``Session.insert1(...)``).
CLASS_CALLABLES = frozenset(
    """key_source describe alter heading populate progress primary_key proj aggr join extend to_dicts
    to_pandas to_polars to_arrow to_arrays keys fetch fetch1 head tail descendants ancestors parents
    children parts insert insert1 insert_dataframe update1 validate drop drop_quick delete delete_quick
    restrict make_sql preview jobs is_declared class_name pending staged_insert1""".split()
)


class TableMeta(type):
    """Lets a table class stand for its unrestricted table: ``Session & key``, ``Session.insert1()``."""

    def __getattribute__(cls, name):
        if name in CLASS_CALLABLES and type.__getattribute__(cls, "database") is not None:
            return getattr(cls(), name)
        return type.__getattribute__(cls, name)

    @property
    def table_name(cls) -> str:
        return cls._compute_table_name()

    @property
    def full_table_name(cls) -> str:
        return cls().full_table_name

    @property
    def connection(cls):
        return type.__getattribute__(cls, "_connection")

    @property
    def master(cls):
        return type.__getattribute__(cls, "_master")

    def __and__(cls, other):
        return cls() & other

    def __sub__(cls, other):
        return cls() - other

    def __mul__(cls, other):
        return cls() * other

    def __rmul__(cls, other):
        return other * cls()

    def __add__(cls, other):
        return cls() + other

    def __neg__(cls):
        return -cls()

    def __iter__(cls):
        return iter(cls())

    def __matmul__(cls, other):
        return cls() @ other

    def __xor__(cls, other):
        return cls() ^ other


class UserTable(Table, metaclass=TableMeta):
    """Base of the tiers; a subclass declares ``definition``."""

    _master = None
    declaration_context: dict | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_table_name"):
            return
        name = cls.__name__
        if "_" in name:
            warnings.warn(
                f"Class name {name!r} contains underscores; they are ignored in the table name.",
                UserWarning,
                stacklevel=2,
            )
        if not re.match(r"^[A-Z][A-Za-z0-9_]*$", name):
            raise DataJointError(f"Table class name {name!r} must be CamelCase and start with a capital letter.")

    @classmethod
    def _compute_table_name(cls) -> str:
        if cls.__dict__.get("_table_name"):
            return cls.__dict__["_table_name"]
        return cls._tier_prefix + from_camel_case(cls.__name__.replace("_", ""))


class Manual(UserTable):
    """Rows entered by people or by ingest scripts outside the pipeline."""

    _tier_prefix = ""


class Lookup(UserTable):
    """Small reference tables; ``contents`` rows are inserted when the class is declared."""

    _tier_prefix = "#"
    contents: tuple = ()


class Imported(UserTable, AutoPopulate):
    """Rows brought in from outside the database by ``make()`` (e.g. from files)."""

    _tier_prefix = "_"
    _auto_populated = True


class Computed(UserTable, AutoPopulate):
    """Rows computed by ``make()`` from rows upstream."""

    _tier_prefix = "__"
    _auto_populated = True


class Part(UserTable):
    """A table nested in a master class: its rows are entered and deleted with the master's."""

    _is_part = True

    @classmethod
    def _compute_table_name(cls) -> str:
        if cls.__dict__.get("_table_name"):
            return cls.__dict__["_table_name"]
        master = cls._master
        if master is None:
            raise DataJointError(
                f"Part table {cls.__name__} must be nested inside its master class, which is decorated "
                "with @schema."
            )
        return master._compute_table_name() + "__" + from_camel_case(cls.__name__.replace("_", ""))

    @property
    def master(self):
        return type(self)._master

    def _check_direct_insert(self, allow_direct_insert) -> None:
        return None  # parts of computed tables are inserted by the master's make()


Entry = Manual
Ingest = Imported
Compute = Computed

__all__ = ["Manual", "Lookup", "Imported", "Computed", "Part", "Entry", "Ingest", "Compute", "UserTable", "QueryExpression"]
