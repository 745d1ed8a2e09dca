"""Schemas: the ``@schema`` decorator, activation, virtual modules."""

from __future__ import annotations

import inspect
import logging
import re
import types
from typing import Any

import sqlalchemy as sa

from .declare import TableSpec
from .errors import DataJointError
from .heading import Attribute
from .table import LINEAGE_TABLE, FreeTable, Table, part_master, tier_of, to_camel_case, write_lineage
from .types import parse_type
from .user_tables import Computed, Imported, Lookup, Manual, Part, UserTable

logger = logging.getLogger("joinflow")

SCHEMA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # case kept: DataJoint takes "Schema_A"
TIERS = {"Manual": Manual, "Lookup": Lookup, "Imported": Imported, "Computed": Computed, "Part": Part}


def create_lineage_table(conn, schema_name: str) -> None:
    """Create the schema's ``~lineage`` table (DataJoint 2.x's layout)."""
    conn.backend.create_table(conn, schema_name, LINEAGE_TABLE, _lineage_spec())


def _lineage_spec() -> TableSpec:
    def column(name: str, length: int, comment: str) -> Attribute:
        info = parse_type(f"varchar({length})")
        return Attribute(name=name, type=info.declared, category="string", in_key=name != "lineage",
                         comment=comment, core=False, typeinfo=info)

    return TableSpec(
        [column("table_name", 64, "table name within the schema"),
         column("attribute_name", 64, "attribute name"),
         column("lineage", 255, "origin: schema.table.attribute")],
        ["table_name", "attribute_name"],
    )


def _caller_context(depth: int = 2) -> dict[str, Any]:
    frame = inspect.currentframe()
    try:
        for _ in range(depth):
            frame = frame.f_back
        return {**frame.f_globals, **frame.f_locals}
    finally:
        del frame


class Schema:
    """A database schema and the decorator that binds table classes to it.

    ``Schema(schema_name=None, context=None, *, connection=None, create_schema=True,
    create_tables=None, add_objects=None)``.  Without a name, classes queue until
    ``activate(name)``.
    """

    def __init__(self, schema_name: str | None = None, context: dict | None = None, *, connection=None,
                 create_schema: bool = True, create_tables: bool | None = None, add_objects: dict | None = None):
        self.database: str | None = None
        self.context = context
        self.connection = connection
        self.create_schema = create_schema
        self.create_tables = create_tables
        self.add_objects = add_objects
        self.declare_list: list[tuple[type, dict]] = []
        self.classes: list[type] = []  # the table classes decorated by this schema, in order
        if schema_name is not None:
            self.activate(schema_name, connection=connection, create_schema=create_schema,
                          create_tables=create_tables, add_objects=add_objects)

    # -- activation --------------------------------------------------------------------------
    def is_activated(self) -> bool:
        return self.database is not None

    def activate(self, schema_name: str | None = None, *, connection=None, create_schema: bool | None = None,
                 create_tables: bool | None = None, add_objects: dict | None = None) -> None:
        if schema_name is None:
            if self.database is None:
                raise DataJointError("Schema.activate needs a schema name.")
            return
        if self.database is not None:
            if schema_name != self.database:
                raise DataJointError(
                    f"The schema is already activated as `{self.database}`; it cannot be re-activated as "
                    f"`{schema_name}`. Make a new Schema object."
                )
            return
        if not SCHEMA_NAME.match(schema_name):
            raise DataJointError(
                f"Invalid schema name {schema_name!r}: use letters, digits and underscores, "
                "starting with a letter."
            )
        from .connection import conn as global_conn
        from .instance import check_thread_safe

        if connection is None and self.connection is None:
            check_thread_safe("dj.Schema() without connection=")
        self.connection = connection or self.connection or global_conn()
        if create_schema is not None:
            self.create_schema = create_schema
        if create_tables is not None:
            self.create_tables = create_tables
        if add_objects:
            self.add_objects = add_objects
        conn = self.connection
        backend = conn.backend
        if len(schema_name) > backend.max_name_length - 12:
            raise DataJointError(f"Schema name {schema_name!r} is too long for {backend.name}.")
        if not backend.schema_exists(conn, schema_name):
            if not self.create_schema:
                raise DataJointError(
                    f"Database `{schema_name}` has not yet been declared. Set argument create_schema=True "
                    "to create it."
                )
            backend.create_schema(conn, schema_name)
            if backend.lineage_marks_schema:  # SQLite; elsewhere ~lineage comes with the first table, as DataJoint
                self._create_lineage_table(schema_name)
        elif (self._creates_tables and backend.load_columns(conn, schema_name, LINEAGE_TABLE) is None
              and any(not t.startswith("~") for t in backend.list_tables(conn, schema_name))):
            # tables from before DataJoint 2.x's ~lineage: joinflow's semantic checks read it
            self._create_lineage_table(schema_name)
        self.database = schema_name
        conn.schemas[schema_name] = self
        queued, self.declare_list = self.declare_list, []
        for cls, context in queued:
            self._decorate_table(cls, context)

    @property
    def _creates_tables(self) -> bool:
        if self.create_tables is not None:
            return bool(self.create_tables)
        return bool(self.connection.config["database.create_tables"])

    def _create_lineage_table(self, schema_name: str) -> None:
        create_lineage_table(self.connection, schema_name)

    # -- decoration ---------------------------------------------------------------------------------
    def __call__(self, cls: type, *, context: dict | None = None) -> type:
        if isinstance(cls, type) and issubclass(cls, Part):
            raise DataJointError(
                f"Part table {cls.__name__} must not be decorated; nest it in its master class and "
                "decorate the master."
            )
        if not (isinstance(cls, type) and issubclass(cls, UserTable)):
            raise DataJointError(
                f"@schema decorates table classes (dj.Manual, dj.Lookup, dj.Imported, dj.Computed); "
                f"got {cls!r}."
            )
        context = context if context is not None else (self.context if self.context is not None else _caller_context())
        if self.add_objects:
            context = {**context, **self.add_objects}
        if self.database is None:
            self.declare_list.append((cls, context))
        else:
            self._decorate_table(cls, context)
        return cls

    def _decorate_table(self, cls: type, context: dict) -> None:
        cls.database = self.database
        cls._connection = self.connection
        cls.declaration_context = context
        ctx = {**context, cls.__name__: cls, "self": cls}
        self._declare(cls, ctx)
        if cls not in self.classes:
            self.classes.append(cls)
        for member in list(vars(cls).values()):
            if isinstance(member, type) and issubclass(member, Part):
                member._master = cls
                member.database = self.database
                member._connection = self.connection
                member.declaration_context = context
                # the part's own name is not added: `-> Unit` in a part named Unit is the outer Unit
                self._declare(member, {**ctx, "master": cls})
        if issubclass(cls, Lookup):
            table = cls()
            contents = table.contents  # a list, or a @property (a generator) computing it
            contents = [] if contents is None else list(contents)
            if contents and len(contents) > len(table):
                if any(a.autoincrement for a in table.heading.attributes.values()):
                    logger.warning("Lookup %s has an auto_increment key; contents are not inserted.", cls.__name__)
                else:
                    table.insert(contents, skip_duplicates=True)

    def _declare(self, cls: type, ctx: dict) -> None:
        table = cls()
        if table.is_declared:
            return
        if not self._creates_tables:
            raise DataJointError(
                f"Table {table.full_table_name} is not declared and create_tables is off. Declare it "
                "from a pipeline that creates tables, or set create_tables=True."
            )
        table.declare(ctx)

    # -- inspection ------------------------------------------------------------------------------------
    def _require_active(self) -> None:
        if self.database is None:
            raise DataJointError("The schema is not activated; call schema.activate(name).")

    @property
    def exists(self) -> bool:
        self._require_active()
        return self.connection.backend.schema_exists(self.connection, self.database)

    def list_tables(self) -> list[str]:
        """Table names of this schema, parents before children (hidden ``~`` tables left out)."""
        self._require_active()
        conn = self.connection
        backend = conn.backend
        names = [t for t in backend.list_tables(conn, self.database) if not t.startswith("~")]
        deps = conn.dependencies
        deps.load()
        full = {backend.full_table_name(self.database, t): t for t in names}
        return [full[n] for n in deps.topological(full)]

    @property
    def jobs(self) -> list:
        """The job queues of this schema: a ``Job`` for each Computed or Imported table whose job
        table (``~~name``) exists.  Job tables are made on first use of ``Table.jobs`` or of
        ``populate(reserve_jobs=True)``, so a table never populated with jobs has none."""
        from .jobs import Job, job_table_name

        self._require_active()
        conn = self.connection
        backend = conn.backend
        present = set(backend.list_tables(conn, self.database))
        classes = {cls.table_name: cls for cls in self.classes
                   if isinstance(cls, type) and issubclass(cls, (Computed, Imported)) and cls.database == self.database}
        found = []
        for name in self.list_tables():
            if tier_of(name) not in ("Computed", "Imported") or job_table_name(name) not in present:
                continue
            cls = classes.get(name)
            target = cls() if cls is not None else FreeTable(conn, backend.full_table_name(self.database, name))
            found.append(Job(target))
        return found

    def __iter__(self):
        """The schema's tables as FreeTable objects, parents before children (as DataJoint)."""
        for name in self.list_tables():
            yield self.get_table(name)

    def __contains__(self, name: str) -> bool:
        try:
            self.get_table(name)
        except DataJointError:
            return False
        return True

    def get_table(self, name: str) -> FreeTable:
        tables = self.list_tables()
        if name in tables:
            return FreeTable(self.connection, self.connection.backend.full_table_name(self.database, name))
        for table in tables:
            bare = table.lstrip("#_")
            if name in (bare, to_camel_case(table), to_camel_case(bare)) or (
                "." in name and to_camel_case(table.split("__")[-1]) == name.split(".")[-1]
                and to_camel_case(part_master(table) or "") == name.split(".")[0]
            ):
                return FreeTable(self.connection, self.connection.backend.full_table_name(self.database, table))
        raise DataJointError(f"Table {name!r} is not in schema `{self.database}`. Tables: {', '.join(tables)}")

    __getitem__ = get_table

    def make_classes(self, into: dict | None = None) -> dict:
        """Create table classes for the tables of this schema (from the database alone)."""
        self._require_active()
        if into is None:  # the schema's context, else the caller's namespace (as DataJoint)
            if self.context is not None:
                into = self.context
            else:
                frame = inspect.currentframe().f_back
                into = frame.f_locals  # a module's globals at module level; a function's locals inside one
                del frame
        classes: dict[str, type] = {}
        for table in self.list_tables():
            tier = tier_of(table)
            if tier is None:
                logger.warning("Table %s has no tier-conforming name; no class made for it.", table)
                continue
            if tier == "Part":
                master_name = part_master(table)
                master = classes.get(master_name)
                if master is None:
                    continue
                part_name = to_camel_case(table[len(master_name) + 2 :])
                part = type(part_name, (Part,), {"_table_name": table, "database": self.database,
                                                 "_connection": self.connection, "_master": master,
                                                 "__module__": "joinflow.virtual"})
                setattr(master, part_name, part)
                continue
            class_name = to_camel_case(table)
            existing = into.get(class_name)
            if isinstance(existing, type) and issubclass(existing, Table) and existing.database == self.database:
                classes[table] = existing
                continue
            cls = type(class_name, (TIERS[tier],), {"_table_name": table, "database": self.database,
                                                    "_connection": self.connection, "__module__": "joinflow.virtual"})
            classes[table] = cls
            into[class_name] = cls
        return {cls.__name__: cls for cls in classes.values()}

    @property
    def lineage(self) -> dict[str, str]:
        self._require_active()
        backend = self.connection.backend
        tc = backend.table_clause(self.database, LINEAGE_TABLE, ["table_name", "attribute_name", "lineage"])
        rows = self.connection.execute(sa.select(tc.c.table_name, tc.c.attribute_name, tc.c.lineage)).fetchall()
        return {f"{self.database}.{t}.{a}": lin for t, a, lin in rows}

    @property
    def lineage_table_exists(self) -> bool:
        return self.connection.backend.load_columns(self.connection, self.database, LINEAGE_TABLE) is not None

    def rebuild_lineage(self) -> None:
        """Recompute ``~lineage`` from the foreign keys in the catalog (upstream tables first)."""
        self._require_active()
        conn = self.connection
        if not self.lineage_table_exists:
            self._create_lineage_table(self.database)
        deps = conn.dependencies
        deps.load()
        for table in self.list_tables():
            full = conn.backend.full_table_name(self.database, table)
            heading = FreeTable(conn, full).heading
            rows = {}
            for parent, info in deps.parents(full).items():
                parent_heading = FreeTable(conn, parent).heading
                pschema, ptable = conn.backend.split_full_name(parent)
                for attr_map in info["attr_maps"]:
                    for child, par in attr_map.items():
                        rows[child] = parent_heading[par].lineage or f"{pschema}.{ptable}.{par}"
            for name in heading.primary_key:
                rows.setdefault(name, f"{self.database}.{table}.{name}")
            write_lineage(conn, self.database, table, [(table, a, lin) for a, lin in rows.items()])
            conn.forget_catalog()

    def dependents(self) -> list[str]:
        """Tables of other schemas that depend on this one (directly or through other tables),
        parents first.  ``drop()`` refuses while there are any, unless ``drop_dependents=True``."""
        self._require_active()
        conn = self.connection
        backend = conn.backend
        deps = conn.dependencies
        deps.load()
        own = {backend.full_table_name(self.database, t) for t in backend.list_tables(conn, self.database)}
        outside = set()
        for name in own:
            outside |= deps.descendants(name)
        return deps.topological(outside - own)

    def drop(self, prompt: bool | None = None, *, drop_dependents: bool = False) -> None:
        """Drop the whole schema and everything in it.

        Refused (DataJointError naming them, nothing dropped) while tables of other schemas
        reference this one.  ``drop_dependents=True`` drops those tables first (leaves first;
        the prompt lists them)."""
        self._require_active()
        conn = self.connection
        if conn.in_transaction:
            raise DataJointError("Cannot drop a schema inside a transaction.")
        dependents = self.dependents()
        if dependents and not drop_dependents:
            raise DataJointError(
                f"Cannot drop schema `{self.database}`: tables of other schemas depend on it: "
                f"{', '.join(dependents)}. Nothing was dropped. Drop those first, or call "
                "drop(drop_dependents=True) to drop them with this schema."
            )
        prompt = conn.config["safemode"] if prompt is None else prompt
        if prompt:
            from .table import _confirm

            for name in dependents:
                print(f"{name} (depends on `{self.database}`; {len(FreeTable(conn, name))} tuples)")
            if not _confirm(f"Proceed to delete entire schema `{self.database}`"
                            + (f" and {len(dependents)} dependent table(s)?" if dependents else "?")):
                print("Drop cancelled.")
                return
        from .copy import remove_incomplete_copy_objects

        remove_incomplete_copy_objects(conn, self.database)  # an interrupted copy's objects go too
        for name in reversed(dependents):
            FreeTable(conn, name).drop_quick()
        conn.backend.drop_schema(conn, self.database)
        conn.schemas.pop(self.database, None)
        conn.forget_catalog()

    def __repr__(self) -> str:
        return f"Schema `{self.database}`" if self.database else "Schema (not activated)"


class VirtualModule(types.ModuleType):
    """A module whose table classes are made from the database alone."""

    def __init__(self, module_name: str, schema_name: str, *, create_schema: bool = False,
                 create_tables: bool = False, connection=None, add_objects: dict | None = None):
        super().__init__(name=module_name)
        schema = Schema(schema_name, connection=connection, create_schema=create_schema,
                        create_tables=create_tables)
        if add_objects:
            self.__dict__.update(add_objects)
        self.__dict__["schema"] = schema
        schema.make_classes(into=self.__dict__)


def virtual_schema(schema_name: str, *, connection=None, create_schema: bool = False,
                   create_tables: bool = False, add_objects: dict | None = None) -> VirtualModule:
    return VirtualModule(schema_name, schema_name, connection=connection, create_schema=create_schema,
                         create_tables=create_tables, add_objects=add_objects)


def list_schemas(connection=None) -> list[str]:
    from .connection import conn as global_conn

    connection = connection or global_conn()
    return connection.backend.list_schemas(connection)
