"""Copy schemas with their data and objects from one database to another.

``copy_schemas(["lab", "ephys"], "sqlite:///joinflow.db", "postgresql+psycopg://host/db")``
is what a user who started on SQLite runs when the pipeline outgrows one machine (and
``joinflow copy --from URL --to URL SCHEMA...`` runs it from the shell).

The steps, each checked before the next starts:

1. **Plan.**  Read the source catalog; order every table of the named schemas parents
   first (across schemas).  A foreign key to a schema that is not copied must find its
   parent table in the target already.
2. **Refuse** when a target schema already holds a table with rows: nothing is changed.
3. **Declare** each target table from the source's definition (``describe()``), in
   dependency order, then compare the target heading with the source heading.
4. **Copy rows** in batches in dependency order.  Values are moved as stored (a blob's
   bytes are not unpacked and packed again) and converted only between the dialects'
   driver representations.  Objects that rows reference in a store (hash-addressed
   ``<blob@>``/``<attach@>``/``<hash@>`` and any codec that lists its paths) are copied
   to the target's store when the two configurations name different stores, or when a
   schema is renamed (hash-addressed paths contain the schema name).
5. **Verify** the row count of every table.

If a step after the refusal check fails, what the copy created is removed again (the
tables and schemas it declared, the rows it inserted, the objects it wrote), so the
target is as it was.

6. **Job tables.**  The queue of each copied Imported/Computed table (``~~table``) comes
   along: its pending, error, ignored and success rows, with their messages, tracebacks and
   priorities, so keys a user marked ``ignore`` stay ignored and errors stay visible.
   Reservations are not copied: they are leases of workers on the source database (their
   keys are pending again at the next refresh).

**An interrupted copy is visible.**  Before it declares anything, the copy writes a marker
table ``~copy`` into every target schema, records there each table it declares and each
object it is about to write (before writing it), and drops the marker last, after the row
counts are verified and the job tables copied.  A copy that is killed (power loss, SIGKILL,
an out-of-memory kill) leaves the marker behind: a new copy into that schema, and ``joinflow
status``, report "incomplete copy from X"; ``copy_schemas(..., resume=True)`` (``joinflow
copy --resume``) finishes it (tables already complete are kept, a partly filled table is
emptied and copied again); :func:`discard_copy` (``joinflow copy --discard``) or
``Schema.drop()`` removes it with the objects it wrote.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import socket
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa

from .backends.base import bound
from .condition import Not
from .errors import DataJointError
from .table import FreeTable, part_master, tier_of, to_camel_case

COPY_MARKER = "~copy"  # in each target schema while a copy into it is unfinished
FK_LINE = re.compile(r"^->\s*(?P<opts>\[[^\]]*\]\s*)?(?P<ref>[A-Za-z_][\w.]*?)(?P<proj>\.proj\(.*\))?\s*$")


class CopyError(DataJointError):
    """A copy was refused or failed (the target is left as it was)."""


@dataclass
class TablePlan:
    source_schema: str
    target_schema: str
    table: str  # table name (same in source and target)
    source_full: str
    target_full: str = ""
    rows: int = 0
    reuse: bool = False  # an empty target table of the same heading exists already


@dataclass
class CopyReport:
    """What a copy did: rows per table (source and target), objects copied."""

    source: str
    target: str
    schemas: dict[str, str]  # source name -> target name
    tables: list[dict] = field(default_factory=list)
    objects_copied: int = 0
    jobs_copied: int = 0  # job-table rows (pending, error, ignore, success)
    dry_run: bool = False
    resumed: bool = False  # finished a copy that had been interrupted


    def as_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "schemas": dict(self.schemas),
                "tables": list(self.tables), "objects_copied": self.objects_copied, "jobs_copied": self.jobs_copied,
                "dry_run": self.dry_run, "resumed": self.resumed,
                "rows": sum(t["target_rows"] or 0 for t in self.tables)}


def parse_schema_names(names: Iterable[str]) -> dict[str, str]:
    """``["lab", "ephys=ephys_v2"]`` -> ``{"lab": "lab", "ephys": "ephys_v2"}`` (source -> target)."""
    mapping: dict[str, str] = {}
    for item in names:
        source, sep, target = str(item).partition("=")
        source, target = source.strip(), (target.strip() if sep else source.strip())
        if not source or not target:
            raise CopyError(f"Schema argument {item!r}: write SCHEMA or SOURCE=TARGET.")
        if source in mapping:
            raise CopyError(f"Schema `{source}` is named twice.")
        mapping[source] = target
    if not mapping:
        raise CopyError("Name at least one schema to copy.")
    if len(set(mapping.values())) != len(mapping):
        raise CopyError("Two schemas would be copied into the same target schema; give distinct target names.")
    return mapping


def _connect(url_or_connection, config, role: str):
    from .connection import Connection
    from .settings import config as global_config

    if isinstance(url_or_connection, Connection):
        return url_or_connection, False
    if not url_or_connection:
        raise CopyError(f"No {role} database URL given.")
    from .settings import mask_text, remember_url

    remember_url(str(url_or_connection))  # its password never shows in a message
    try:
        sa.engine.make_url(str(url_or_connection))
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise CopyError(f"The {role} URL {mask_text(url_or_connection)!r} is not a database URL "
                        f"({mask_text(exc)}). Write e.g. sqlite:///path/joinflow.db or postgresql://user@host/db.") from None
    return Connection(url=str(url_or_connection), config=config or global_config), True


def _show(conn) -> str:
    return conn.url.render_as_string(hide_password=True)


def _user_tables(conn, schema: str) -> list[str]:
    return [t for t in conn.backend.list_tables(conn, schema) if not t.startswith("~")]


def _count(conn, full: str) -> int:
    return len(FreeTable(conn, full))


def _storage_attr(attr):
    from .codecs import storage_attribute

    return storage_attribute(attr) if attr.codec is not None else attr


class _ObjectMover:
    """Copies the objects a row references from the source stores to the target stores."""

    def __init__(self, source_cfg, target_cfg, renames: Mapping[str, str]):
        self.source_cfg = source_cfg
        self.target_cfg = target_cfg
        self.renames = renames
        self.written: list[tuple[Any, str]] = []
        self.copied = 0
        self._done: set[tuple[str, str]] = set()
        # objects to write for the rows of the current batch: (store, path, recursive, write)
        self.pending: list[tuple[Any, str, bool, Callable[[], None]]] = []
        self.record: Callable[[str, list], None] | None = None  # (target schema, [(store, path, recursive)])

    def flush(self, target_schema: str) -> None:
        """Record the batch's objects in the target's marker, then write them (before the rows)."""
        if not self.pending:
            return
        if self.record is not None:
            self.record(target_schema, [(store, path, recursive) for store, path, recursive, _ in self.pending])
        pending, self.pending = self.pending, []
        for _store, _path, _recursive, write in pending:
            write()

    @staticmethod
    def _spec(cfg, name):
        from .storage import resolve_store_name

        resolved = resolve_store_name(cfg, name)
        return resolved, (cfg["stores"] or {})[resolved]

    def check(self, attr, table: str) -> None:
        """The target configuration must have the store the attribute names (checked before any change)."""
        from .storage import resolve_store_name

        chain = attr.codec
        for cfg, which in ((self.source_cfg, "source"), (self.target_cfg, "target")):
            try:
                resolve_store_name(cfg, chain.store)
            except DataJointError as exc:
                raise CopyError(
                    f"Table {table}, attribute `{attr.name}` ({attr.type}) keeps objects in a store, and the {which} "
                    f"configuration cannot resolve it: {exc} Give the {which} configuration its stores "
                    f"(--{'from' if which == 'source' else 'to'}-config FILE)."
                ) from None

    def _copy_file(self, src, tgt, src_path: str, tgt_path: str) -> None:
        """One object: a file, or a folder of files with its ``.manifest.json`` beside it."""
        from .storage import MANIFEST_SUFFIX

        key = (f"{tgt.protocol}://{tgt.root}", tgt_path)
        if key in self._done:
            return
        self._done.add(key)
        if tgt.exists(tgt_path):
            return
        full = src.full_path(src_path).rstrip("/")
        if src.fs.isdir(full):
            self.pending.append((tgt, tgt_path, True, lambda: self._write_folder(src, tgt, src_path, tgt_path)))
            self.pending.append((tgt, tgt_path + MANIFEST_SUFFIX, False, lambda: None))
        else:
            self.pending.append((tgt, tgt_path, False, lambda: self._write_file(src, tgt, src_path, tgt_path)))

    def _write_file(self, src, tgt, src_path: str, tgt_path: str) -> None:
        tgt.put(tgt_path, src.get(src_path))
        self.written.append((tgt, tgt_path))
        self.copied += 1

    def _write_folder(self, src, tgt, src_path: str, tgt_path: str) -> None:
        from .storage import MANIFEST_SUFFIX

        full = src.full_path(src_path).rstrip("/")
        for name in src.fs.find(full):
            rel = name[len(full) + 1 :] if name.startswith(full + "/") else name.rsplit("/", 1)[-1]
            src.check_inside(f"{src_path.rstrip('/')}/{rel}")  # no link out of the source store
            target = tgt.check_inside(f"{tgt_path.rstrip('/')}/{rel}")
            tgt.put(target, src.fs.cat_file(name))
            self.written.append((tgt, target))
        if src.exists(src_path + MANIFEST_SUFFIX):
            tgt.put(tgt_path + MANIFEST_SUFFIX, src.get(src_path + MANIFEST_SUFFIX))
            self.written.append((tgt, tgt_path + MANIFEST_SUFFIX))
        self.copied += 1

    def _schema_path(self, path: str, src, tgt) -> str:
        """A schema-addressed path (``_schema/{schema}/...``) under the target's schema name."""
        prefix = f"{src.schema_prefix}/"
        if not path.startswith(prefix):
            return path
        schema, _, rest = path[len(prefix) :].partition("/")
        return f"{tgt.schema_prefix}/{self.renames.get(schema, schema)}/{rest}"

    @staticmethod
    def _inside(store, path: str, attr, table: str, side: str) -> str:
        """``path`` if it resolves inside ``store``; a CopyError naming the table and attribute if not."""
        from .storage import StorePathError

        try:
            return store.check_inside(path)
        except StorePathError as exc:
            raise CopyError(f"Table {table}, attribute `{attr.name}`: a row refers to an object outside the {side} "
                            f"store; nothing is read or written there. {exc} Correct or delete that row in the "
                            "source, then copy again.") from None

    def move(self, attr, stored: Any, table: str) -> Any:
        """Copy what ``stored`` references; returns the (possibly rewritten) stored value."""
        from .storage import content_hash, get_store

        chain = attr.codec
        if chain.codecs[-1].name == "hash" and isinstance(stored, dict) and "hash" in stored:
            store_name = stored.get("store") or chain.store
            src = get_store(self.source_cfg, store_name)
            tgt = get_store(self.target_cfg, store_name)
            schema = self.renames.get(stored.get("schema"), stored.get("schema"))
            self._inside(src, stored["path"], attr, table, "source")
            new_path = tgt.hash_path(str(stored["hash"]), str(schema)) if schema else stored["path"]
            self._inside(tgt, new_path, attr, table, "target")
            same = self._spec(self.source_cfg, store_name) == self._spec(self.target_cfg, store_name)
            if same and new_path == stored["path"]:
                return stored
            key = (f"{tgt.protocol}://{tgt.root}", new_path)
            if key not in self._done and not tgt.exists(new_path):
                def write(src=src, tgt=tgt, old_path=stored["path"], new_path=new_path, digest=stored["hash"]):
                    data = src.get(old_path)
                    if content_hash(data) != digest:
                        raise CopyError(f"Table {table}, attribute `{attr.name}`: object {old_path} in store "
                                        f"'{src.name}' does not match its hash; the source store is corrupted.")
                    tgt.put(new_path, data)
                    self.written.append((tgt, new_path))
                    self.copied += 1

                self.pending.append((tgt, new_path, False, write))
            self._done.add(key)
            return {**stored, "path": new_path, "schema": schema, "store": tgt.name}
        if getattr(chain.codecs[-1], "section", None) == "schema" and isinstance(stored, dict) and "path" in stored:
            store_name = stored.get("store") or chain.store
            src, tgt = get_store(self.source_cfg, store_name), get_store(self.target_cfg, store_name)
            self._inside(src, stored["path"], attr, table, "source")
            new_path = self._inside(tgt, self._schema_path(stored["path"], src, tgt), attr, table, "target")
            same = self._spec(self.source_cfg, store_name) == self._spec(self.target_cfg, store_name)
            if same and new_path == stored["path"]:
                return stored
            self._copy_file(src, tgt, stored["path"], new_path)
            return {**stored, "path": new_path, "store": tgt.name}
        for path, store_name in chain.referenced_paths(stored):  # any other codec that names its objects
            store_name = store_name or chain.store
            if self._spec(self.source_cfg, store_name) == self._spec(self.target_cfg, store_name):
                continue
            src, tgt = get_store(self.source_cfg, store_name), get_store(self.target_cfg, store_name)
            self._inside(src, path, attr, table, "source")
            self._inside(tgt, path, attr, table, "target")
            self._copy_file(src, tgt, path, path)
        return stored

    def undo(self) -> None:
        for store, path in reversed(self.written):
            try:
                store.remove(path)
            except Exception:  # pragma: no cover - best effort clean-up
                pass
        self.written.clear()


# -- the marker of an unfinished copy -------------------------------------------------------------------
def _marker_spec():
    from .declare import TableSpec
    from .heading import Attribute
    from .types import parse_type

    def column(name: str, declared: str, in_key: bool = False) -> Attribute:
        info = parse_type(declared)
        return Attribute(name=name, type=info.declared, category=info.category, in_key=in_key, core=False,
                         typeinfo=info)

    return TableSpec([column("entry", "varchar(64)", True), column("kind", "varchar(16)"),
                      column("info", "varchar(4000)")], ["entry"])


class _Marker:
    """The ``~copy`` table of one target schema: the copy itself (entry ``copy``), each table it
    declared or filled, each object it is about to write.  It exists while the copy is unfinished."""

    def __init__(self, conn, schema: str):
        self.conn, self.schema = conn, schema

    def _clause(self):
        return self.conn.backend.table_clause(self.schema, COPY_MARKER, ["entry", "kind", "info"])

    @property
    def exists(self) -> bool:
        backend = self.conn.backend
        return backend.schema_exists(self.conn, self.schema) and \
            backend.load_columns(self.conn, self.schema, COPY_MARKER) is not None

    def create(self, info: dict) -> None:
        self.conn.backend.create_table(self.conn, self.schema, COPY_MARKER, _marker_spec())
        self.conn.forget_catalog()
        self.add([("copy", "copy", info)])

    def entries(self) -> list[tuple[str, str, dict]]:
        tc = self._clause()
        rows = self.conn.execute(sa.select(tc.c.entry, tc.c.kind, tc.c.info)).fetchall()
        return [(str(e), str(k), json.loads(i)) for e, k, i in rows]

    def info(self) -> dict | None:
        """The copy's own entry (source, schemas, start), or None without a marker."""
        if not self.exists:
            return None
        for entry, _kind, info in self.entries():
            if entry == "copy":
                return info
        return {}

    def add(self, items: list[tuple[str, str, dict]]) -> None:
        """Insert ``(entry, kind, info)`` rows not present yet (resuming records some twice)."""
        if not items:
            return
        tc = self._clause()
        wanted = {e: (k, i) for e, k, i in items}
        have = set()
        names = list(wanted)
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            have.update(str(r[0]) for r in self.conn.execute(sa.select(tc.c.entry).where(tc.c.entry.in_(chunk))))
        rows = [{"entry": e, "kind": k, "info": json.dumps(i, default=str)} for e, (k, i) in wanted.items()
                if e not in have]
        if rows:
            self.conn.execute(sa.insert(tc), rows)

    def record_table(self, table: str, created: bool) -> None:
        self.add([("t" + hashlib.md5(table.encode()).hexdigest(), "table",
                   {"table": table, "created": created, "seq": time.time_ns()})])

    def record_objects(self, objects) -> None:
        items = []
        for store, path, recursive in objects:
            location = f"{store.protocol}://{store.root}"
            digest = hashlib.md5(f"{location}\0{path}".encode()).hexdigest()
            items.append(("o" + digest, "object", {"store": store.name, "location": location, "path": path,
                                                   "recursive": recursive}))
        self.add(items)

    def drop(self) -> None:
        self.conn.backend.drop_table(self.conn, self.schema, COPY_MARKER)
        self.conn.forget_catalog()


def incomplete_copy(conn, schema: str) -> dict | None:
    """What an unfinished copy into ``schema`` recorded about itself (source, schemas, start, host),
    or None when ``schema`` holds no unfinished copy."""
    return _Marker(conn, schema).info()


def incomplete_message(schema: str, info: dict, where: str) -> str:
    """The warning for a schema that holds an unfinished copy, with the two ways out."""
    mapping = info.get("schemas") or {}
    args = " ".join(s if s == t else f"{s}={t}" for s, t in mapping.items()) or schema
    return (f"Schema `{schema}` in {where} holds an incomplete copy from {info.get('source', 'an unknown source')} "
            f"(started {info.get('started', '?')} on {info.get('host', '?')}): it was interrupted, so some of its "
            f"tables may be empty or partly filled. Finish it with `joinflow copy --resume --from SOURCE --to TARGET "
            f"{args}` (copy_schemas(..., resume=True)), or remove it and the objects it wrote with `joinflow copy "
            f"--discard --to TARGET {args}` (discard_copy(...)).")


def _remove_recorded_objects(conn, schema: str, cfg, entries, check_only: bool = False) -> int:
    """Delete the objects an unfinished copy recorded (all checked against ``cfg`` first)."""
    from .storage import get_store

    objects = [info for _e, kind, info in entries if kind == "object"]
    stores = {}
    for info in objects:
        name = info.get("store")
        if name in stores:
            continue
        try:
            store = get_store(cfg, name)
        except DataJointError as exc:
            raise CopyError(f"Schema `{schema}`: the incomplete copy wrote objects to store '{name}' "
                            f"({info.get('location')}), which this configuration lacks ({exc}). Give the target's "
                            "stores as during the copy (--to-config FILE) so they can be removed.") from None
        if f"{store.protocol}://{store.root}" != info.get("location"):
            raise CopyError(f"Schema `{schema}`: the incomplete copy wrote objects to store '{name}' at "
                            f"{info.get('location')}, but this configuration puts '{name}' at "
                            f"{store.protocol}://{store.root}. Give the target's stores as during the copy "
                            "(--to-config FILE) so they can be removed.")
        stores[name] = store
    if check_only:
        return 0
    removed = 0
    for info in objects:
        if stores[info["store"]].remove(info["path"], recursive=bool(info.get("recursive"))):
            removed += 1
    return removed


def remove_incomplete_copy_objects(conn, schema: str) -> int:
    """Before ``schema`` is dropped: delete the objects an interrupted copy into it wrote (none
    without its marker), so they do not stay in the store where no row, and no gc, reaches them."""
    marker = _Marker(conn, schema)
    if not marker.exists:
        return 0
    removed = _remove_recorded_objects(conn, schema, conn.config, marker.entries())
    _unregister_target(conn, schema, conn.config)
    return removed


def discard_copy(schemas: Sequence[str] | Mapping[str, str], target_url, *, target_config=None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Remove an unfinished copy: the objects it wrote, the tables it declared (the schemas it
    created), the rows it put into tables that existed.  ``schemas`` as for :func:`copy_schemas`
    (the target names count).  Refused, nothing removed, for a schema without the marker."""
    from .settings import config as global_config

    mapping = dict(schemas) if isinstance(schemas, Mapping) else parse_schema_names(schemas)
    cfg = target_config or global_config
    say = log or (lambda text: None)
    target, own = _connect(target_url, cfg, "target")
    try:
        tb = target.backend
        markers = {}
        for t in dict.fromkeys(mapping.values()):
            marker = _Marker(target, t)
            if not marker.exists:
                raise CopyError(f"Schema `{t}` in {_show(target)} holds no incomplete copy (no `{COPY_MARKER}` "
                                "table); --discard removes only an interrupted copy. Nothing was removed.")
            markers[t] = (marker, marker.entries())
        for t, (_marker, entries) in markers.items():  # every store is right before anything is removed
            _remove_recorded_objects(target, t, cfg, entries, check_only=True)
        report = {"target": _show(target), "schemas": list(markers), "objects_removed": 0, "tables_dropped": 0}
        for t, (marker, entries) in markers.items():
            report["objects_removed"] += _remove_recorded_objects(target, t, cfg, entries)
            info = next((i for e, _k, i in entries if e == "copy"), {})
            tables = sorted((i for _e, k, i in entries if k == "table"), key=lambda i: i.get("seq", 0), reverse=True)
            if info.get("created_schema"):
                tb.drop_schema(target, t)
                report["tables_dropped"] += sum(1 for i in tables if i.get("created"))
            else:
                for item in tables:
                    if tb.load_columns(target, t, item["table"]) is None:
                        continue
                    if item.get("created"):
                        tb.drop_table(target, t, item["table"])
                        report["tables_dropped"] += 1
                    else:
                        FreeTable(target, tb.full_table_name(t, item["table"])).delete_quick()
                marker.drop()
            target.forget_catalog()
            _unregister_target(target, t, cfg)  # gc on the source need not wait for a database that no longer uses it
            say(f"discarded the incomplete copy in `{t}`")
        return report
    finally:
        if own:
            target.close()


def _unregister_target(target, schema: str, cfg) -> None:
    """The discarded copy's database no longer has rows of ``schema``: drop its registration in
    every configured store (gc refuses while a registered database may use the objects)."""
    from .storage import database_identity, get_store, unregister_database

    identity = database_identity(target)
    for name in (cfg["stores"] or {}):
        try:
            store = get_store(cfg, name)
        except DataJointError:
            continue  # checked before anything was removed; a store that cannot be opened holds nothing of ours
        unregister_database(store, schema, identity)


def _register_store_users(source, target, mapping, in_store, source_cfg, target_cfg) -> None:
    """Both databases' rows refer to objects in the stores (the same objects when the two
    configurations share a store): record both in each store, so that gc run on either one
    refuses to delete objects the other still uses."""
    from .storage import database_identity, get_store, register_database

    names = {attr.codec.store for attr, _table in in_store if attr.codec.codecs[-1].name != "filepath"}
    for name in names:
        for conn, cfg, schemas in ((source, source_cfg, mapping.keys()), (target, target_cfg, mapping.values())):
            store = get_store(cfg, name)
            for schema in schemas:
                register_database(store, schema, database_identity(conn))


def _definition_context(classes: dict[str, dict[str, type]]) -> dict:
    """The names a rewritten definition uses: ``schema.Class`` and ``schema.Master.Part``."""
    return {source_schema: types.SimpleNamespace(**by_name) for source_schema, by_name in classes.items()}


def _make_class(target, target_schema: str, table: str, definition: str) -> type:
    from .schemas import TIERS

    tier = tier_of(table)
    if tier is None:
        raise CopyError(f"Table `{target_schema}`.`{table}` has no tier-conforming name; joinflow cannot declare it.")
    name = to_camel_case(table.split("__")[-1]) if tier == "Part" else to_camel_case(table)
    # declared as written in the source: a copied Computed table may have its own key attributes
    return type(name, (TIERS[tier],), {"_table_name": table, "database": target_schema, "_connection": target,
                                       "definition": definition, "_auto_populated": False,
                                       "__module__": "joinflow.copied"})


def _rewrite_definition(definition: str, source_schema: str, local: set[str]) -> str:
    """Qualify every foreign-key reference with its source schema name (``Run`` -> ``lab.Run``)."""
    lines = []
    for line in definition.splitlines():
        match = FK_LINE.match(line.strip())
        if match:
            ref = match.group("ref")
            head = ref.split(".")[0]
            if head in local:  # a table of the same schema: Class or Master.Part
                ref = f"{source_schema}.{ref}"
            line = f"-> {match.group('opts') or ''}{ref}{match.group('proj') or ''}"
        lines.append(line)
    return "\n".join(lines)


class _Run:
    """One copy's markers: one per target schema, written before anything else and dropped last."""

    def __init__(self, target, resume: bool, info: dict):
        self.target, self.resume, self.info = target, resume, info
        self.markers: dict[str, _Marker] = {}

    def start(self, schema: str, created: bool) -> None:
        marker = _Marker(self.target, schema)
        if not marker.exists:
            marker.create({**self.info, "created_schema": created})
        self.markers[schema] = marker

    def record_table(self, schema: str, table: str, created: bool) -> None:
        self.markers[schema].record_table(table, created)

    def record_objects(self, schema: str, objects) -> None:
        self.markers[schema].record_objects(objects)

    def finish(self) -> None:
        for marker in self.markers.values():
            marker.drop()
        self.markers.clear()


def copy_schemas(schemas: Sequence[str] | Mapping[str, str], source_url, target_url, *, source_config=None,
                 target_config=None, batch_size: int = 10000, progress: bool | None = None,
                 dry_run: bool = False, resume: bool = False,
                 log: Callable[[str], None] | None = None) -> CopyReport:
    """Copy ``schemas`` (names, ``SOURCE=TARGET`` renames, or a mapping) with their rows and objects.

    ``source_url``/``target_url`` are SQLAlchemy URLs (or open :class:`joinflow.Connection`
    objects).  ``source_config``/``target_config`` supply each side's ``stores`` (default:
    ``dj.config``); objects are copied when the two configure a store differently.  ``progress``
    shows a tqdm bar (default: when stderr is a terminal).  ``dry_run`` plans and checks
    only.  Raises :class:`CopyError` (target unchanged) when a target schema already has
    rows, a referenced schema is missing, or a step fails.

    A target schema that holds an interrupted copy (its ``~copy`` marker) is refused with a
    message that says so; ``resume=True`` finishes that copy instead (same schemas, same source):
    complete tables are kept, a partly filled one is emptied and copied again, and a failure
    leaves the marker for another ``resume`` or :func:`discard_copy`.
    """
    from .settings import config as global_config

    mapping = dict(schemas) if isinstance(schemas, Mapping) else parse_schema_names(schemas)
    source_cfg = source_config or global_config
    target_cfg = target_config or global_config
    say = log or (lambda text: None)
    source, own_source = _connect(source_url, source_cfg, "source")
    try:
        target, own_target = _connect(target_url, target_cfg, "target")
    except BaseException:
        if own_source:
            source.close()
        raise
    report = CopyReport(_show(source), _show(target), mapping, dry_run=dry_run, resumed=resume)
    try:
        markers = {}
        for t in dict.fromkeys(mapping.values()):
            info = incomplete_copy(target, t)
            if info is not None:
                markers[t] = info
        if markers and not resume:
            t, info = next(iter(markers.items()))
            raise CopyError(incomplete_message(t, info, report.target))
        if resume and not markers:
            raise CopyError(f"Nothing to resume: no schema of {', '.join(dict.fromkeys(mapping.values()))} in "
                            f"{report.target} holds an incomplete copy. Run the copy without --resume.")
        for t, info in markers.items():
            if info.get("schemas") not in (None, mapping):
                raise CopyError(f"The incomplete copy in `{t}` copies {info['schemas']}, not {mapping}: resume it "
                                "with the same schema arguments.")
            if info.get("source") not in (None, report.source):
                raise CopyError(f"The incomplete copy in `{t}` is from {info['source']}, not {report.source}: "
                                "resume it from the same source.")
        plan, in_store = _plan(source, target, mapping, set(markers))
        report.tables = [{"table": p.target_full, "source_rows": p.rows, "target_rows": None} for p in plan]
        mover = _ObjectMover(source_cfg, target_cfg, mapping)
        for attr, table in in_store:
            mover.check(attr, table)
        if dry_run:
            return report
        _register_store_users(source, target, mapping, in_store, source_cfg, target_cfg)
        created_schemas: list[str] = []
        created_tables: list[TablePlan] = []
        filled: list[TablePlan] = []
        run = _Run(target, resume, {"source": report.source, "target": report.target, "schemas": mapping,
                                    "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                    "host": socket.gethostname(), "pid": os.getpid()})
        mover.record = run.record_objects
        try:
            _declare(source, target, plan, mapping, created_schemas, created_tables, say, run)
            _copy_rows(source, target, plan, mover, batch_size, progress, filled, say, run)
            for entry, p in zip(report.tables, plan):
                entry["target_rows"] = _count(target, p.target_full)
            wrong = [e for e in report.tables if e["target_rows"] != e["source_rows"]]
            if wrong:
                raise CopyError("Row counts differ after the copy: " + ", ".join(
                    f"{e['table']} source {e['source_rows']} target {e['target_rows']}" for e in wrong)
                    + ". Was the source written to during the copy? Run the copy again when it is idle.")
            report.jobs_copied = _copy_jobs(source, target, plan, batch_size, created_tables, say, run)
            run.finish()  # last: from here on the target is a complete copy
        except BaseException as exc:
            if resume:  # what the first run did stays, with its marker: resume again, or discard
                if isinstance(exc, CopyError):
                    raise CopyError(f"{exc} The target still holds the incomplete copy: run the copy with --resume "
                                    "again, or remove it with --discard.") from None
                raise
            _undo(target, created_schemas, created_tables, filled, mover, run)
            raise
        report.objects_copied = mover.copied
        say(f"copied {sum(p.rows for p in plan)} rows in {len(plan)} tables and {mover.copied} objects")
        return report
    finally:
        if own_target:
            target.close()
        if own_source:
            source.close()


def _plan(source, target, mapping, resuming: set = frozenset()) -> tuple[list[TablePlan], list]:
    sb, tb = source.backend, target.backend
    missing = [s for s in mapping if not sb.schema_exists(source, s)]
    if missing:
        known = sb.list_schemas(source)
        raise CopyError(f"Schema `{missing[0]}` does not exist in the source {_show(source)} (schemas there: "
                        f"{', '.join(known) or 'none'}).")
    deps = source.dependencies.load()
    by_full: dict[str, TablePlan] = {}
    for s, t in mapping.items():
        for table in _user_tables(source, s):
            full = sb.full_table_name(s, table)
            by_full[full] = TablePlan(s, t, table, full, tb.full_table_name(t, table))
    order = deps.topological(by_full)
    plan = [by_full[f] for f in order]
    # foreign keys leaving the copied schemas must find their parent in the target
    for p in plan:
        for parent in deps.parents(p.source_full):
            if parent in by_full:
                continue
            ps, pt = sb.split_full_name(parent)
            if tb.load_columns(target, ps, pt) is None:
                raise CopyError(
                    f"Table {p.source_full} references {parent}, whose schema `{ps}` is not being copied and is not "
                    f"in the target {_show(target)}. Add `{ps}` to the schemas to copy.")
    # refuse a target that has rows; reuse empty tables of the same heading
    for t in set(mapping.values()):
        if t in resuming or not tb.schema_exists(target, t):
            continue
        for table in _user_tables(target, t):
            n = _count(target, tb.full_table_name(t, table))
            if n:
                raise CopyError(
                    f"The target schema `{t}` in {_show(target)} already has data (table `{table}` has {n} rows); "
                    "joinflow copy never overwrites. Drop the target schema, or copy into a new name "
                    f"(SOURCE={t}_copy).")
    needs_store = []
    for p in plan:
        p.rows = _count(source, p.source_full)
        heading = FreeTable(source, p.source_full).heading
        for attr in heading.all_attributes.values():
            if attr.codec is not None and attr.codec.in_store:
                needs_store.append((attr, p.source_full))
        if tb.schema_exists(target, p.target_schema) and tb.load_columns(target, p.target_schema, p.table):
            theirs = FreeTable(target, p.target_full).heading
            _compare(heading, theirs, p.target_full, existing=True)
            p.reuse = True
    return plan, needs_store


def _compare(ours, theirs, table: str, existing: bool = False) -> None:
    problems = []
    for name, attr in ours.all_attributes.items():
        other = theirs.all_attributes.get(name)
        if other is None:
            problems.append(f"`{name}` is missing")
        elif other.in_key != attr.in_key:
            problems.append(f"`{name}` is {'not ' if attr.in_key else ''}in the target's primary key")
        elif other.type != attr.type and (attr.core or attr.codec is not None):  # native types differ by dialect
            problems.append(f"`{name}` is {other.type} in the target, {attr.type} in the source")
    extra = [n for n in theirs.all_attributes if n not in ours.all_attributes]
    problems += [f"`{n}` exists only in the target" for n in extra]
    if problems:
        how = ("the target already has this table with a different heading; drop it or copy into a new schema name"
               if existing else "the declared copy differs from the source")
        raise CopyError(f"Table {table}: {'; '.join(problems)} ({how}).")


def _declare(source, target, plan, mapping, created_schemas, created_tables, say, run) -> None:
    from .schemas import Schema

    tb = target.backend
    for t in dict.fromkeys(mapping.values()):
        if not tb.schema_exists(target, t):
            Schema(t, connection=target, create_tables=True)
            created_schemas.append(t)
            run.start(t, created=True)
            say(f"created schema `{t}`")
        else:
            Schema(t, connection=target, create_tables=True)  # adds ~lineage if it is missing
            run.start(t, created=False)
    classes: dict[str, dict[str, type]] = {s: {} for s in mapping}
    local = {s: {to_camel_case(p.table) for p in plan if p.source_schema == s and tier_of(p.table) != "Part"}
             for s in mapping}
    outside: dict[str, Any] = {}
    for p in plan:
        src_table = FreeTable(source, p.source_full)
        definition = src_table.describe()
        tier = tier_of(p.table)
        cls = _make_class(target, p.target_schema, p.table,
                          _rewrite_definition(definition, p.source_schema, local[p.source_schema]))
        if tier == "Part":
            master = classes[p.source_schema].get(to_camel_case(part_master(p.table)))
            if master is not None:
                setattr(master, cls.__name__, cls)
        else:
            classes[p.source_schema][cls.__name__] = cls
        if p.reuse:
            run.record_table(p.target_schema, p.table, created=False)  # kept if an earlier run declared it
            continue
        run.record_table(p.target_schema, p.table, created=True)  # before declaring: never unrecorded
        context = dict(outside)
        context.update(_definition_context(classes))
        for parent in source.dependencies.parents(p.source_full):
            ps, _ = source.backend.split_full_name(parent)
            if ps not in mapping and ps not in context:
                from .schemas import virtual_schema

                context[ps] = outside[ps] = virtual_schema(ps, connection=target)
        try:
            cls().declare(context)
        except DataJointError as exc:
            raise CopyError(f"Cannot declare {p.target_full} in the target from the source definition: {exc}\n"
                            f"The definition was:\n{definition}") from None
        created_tables.append(p)
        target.forget_catalog()
        _compare(src_table.heading, FreeTable(target, p.target_full).heading, p.target_full)
        say(f"declared {p.target_full}")


def _copy_rows(source, target, plan, mover, batch_size, progress, filled, say, run) -> None:
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(p.rows for p in plan), unit="rows", desc="copy", file=sys.stderr)
    try:
        for p in plan:
            if not p.rows:
                continue
            if run.resume:
                there = _count(target, p.target_full)
                if there == p.rows:
                    say(f"{p.target_full} was copied before")
                    if bar is not None:
                        bar.update(there)
                    continue
                if there:  # partly filled when the copy stopped: its children are still empty
                    FreeTable(target, p.target_full).delete_quick()
                    say(f"emptied the partly copied {p.target_full}")
            filled.append(p)
            for n in _copy_table(source, target, p, mover, batch_size):
                if bar is not None:
                    bar.set_postfix_str(p.table, refresh=False)
                    bar.update(n)
            say(f"copied {p.rows} rows into {p.target_full}")
    finally:
        if bar is not None:
            bar.close()


def _copy_table(source, target, p: TablePlan, mover: _ObjectMover | None, batch_size: int, where=None):
    """Copy one table in primary-key order, ``batch_size`` rows at a time (keyset pagination).

    ``where(table_clause)``, when given, is a condition on the source rows to copy."""
    sb, tb = source.backend, target.backend
    src = FreeTable(source, p.source_full)
    dst = FreeTable(target, p.target_full)
    heading = src.heading
    target_heading = dst.heading
    names = list(heading.all_attributes)
    pk = heading.primary_key
    columns = []  # (decode from source driver, transform, encode for target driver)
    for name in names:
        attr = heading[name]
        decode = sb.decoder(_storage_attr(attr))
        encode = tb.encoder(_storage_attr(target_heading[name]))
        move = None
        if attr.codec is not None and attr.codec.in_store:
            move = (lambda a: (lambda v: mover.move(a, v, p.source_full)))(attr)
        columns.append((decode, move, encode))
    tc = sb.table_clause(p.source_schema, p.table, names)
    last = None
    while True:
        stmt = sa.select(*[tc.c[n] for n in names]).order_by(*[tc.c[k] for k in pk]).limit(batch_size)
        if where is not None:
            stmt = stmt.where(where(tc))
        if last is not None:
            stmt = stmt.where(sa.tuple_(*[tc.c[k] for k in pk]) > sa.tuple_(*[bound(v) for v in last]))
        rows = source.execute(stmt, table=p.source_full).fetchall()
        if not rows:
            return
        last = [rows[-1][names.index(k)] for k in pk]
        values = []
        for row in rows:
            out = []
            for value, (decode, move, encode) in zip(row, columns):
                if value is not None:
                    if decode is not None:
                        value = decode(value)
                    if move is not None:
                        value = move(value)
                    if encode is not None:
                        value = encode(value)
                out.append(value)
            values.append(out)
        if mover is not None:
            mover.flush(p.target_schema)  # the batch's objects: recorded, written, then its rows
        dst._execute_insert(names, values, None, chunk_size=batch_size)
        yield len(values)
        if len(rows) < batch_size:
            return


def _copy_jobs(source, target, plan, batch_size: int, created_tables: list, say, run=None) -> int:
    """Copy the job tables of the copied auto-populated tables, reservations left out."""
    from .jobs import Job, job_table_name

    sb, tb = source.backend, target.backend
    total = 0
    for p in plan:
        if tier_of(p.table) not in ("Imported", "Computed"):
            continue
        name = job_table_name(p.table)
        if sb.load_columns(source, p.source_schema, name) is None:
            continue
        job = TablePlan(p.source_schema, p.target_schema, name, sb.full_table_name(p.source_schema, name),
                        tb.full_table_name(p.target_schema, name))
        target.forget_catalog()
        source_jobs = FreeTable(source, job.source_full)
        # keyed as the source's job table (the key source's primary key, not always the table's)
        target_jobs = Job(FreeTable(target, p.target_full), key_names=source_jobs.primary_key)
        status = target_jobs.cols.status  # job_status where the key has an attribute `status`
        wanted = len(source_jobs.restrict(Not({status: "reserved"})))
        if not wanted:
            continue
        if not target_jobs.is_declared:
            if run is not None:
                run.record_table(p.target_schema, name, created=True)
            target_jobs.ensure()
            created_tables.append(job)
        elif len(target_jobs) and run is not None and run.resume:  # copied by the interrupted run: again
            FreeTable(target, job.target_full).delete_quick()
        elif len(target_jobs):
            raise CopyError(f"The target job table {job.target_full} already has rows; drop it (or the target "
                            "schema) and copy again.")
        copied = sum(_copy_table(source, target, job, None, batch_size,
                                 where=lambda tc: tc.c[status] != bound("reserved")))
        if copied != wanted:
            raise CopyError(f"Job table {job.target_full}: {copied} rows copied, the source has {wanted}. Was a "
                            "worker running on the source during the copy? Run the copy again when it is idle.")
        say(f"copied {copied} job rows into {job.target_full}")
        total += copied
    return total


def _undo(target, created_schemas, created_tables, filled, mover, run=None) -> None:
    """Remove what a failed copy created: rows in reused tables, declared tables, new schemas, objects."""
    tb = target.backend
    try:
        if target.in_transaction:
            target.cancel_transaction()
        created = {p.target_full for p in created_tables}
        for p in reversed(filled):
            if p.reuse and p.target_full not in created:
                FreeTable(target, p.target_full).delete_quick()
        for p in reversed(created_tables):
            if p.target_schema not in created_schemas:
                tb.drop_table(target, p.target_schema, p.table)
        for s in reversed(created_schemas):
            tb.drop_schema(target, s)
        for s, marker in (run.markers if run is not None else {}).items():
            if s not in created_schemas:
                marker.drop()
        target.forget_catalog()
    except Exception as exc:  # pragma: no cover - report, the original error matters more
        print(f"joinflow copy: clean-up after the failure was incomplete: {exc}", file=sys.stderr)
    mover.undo()


__all__ = ["copy_schemas", "discard_copy", "incomplete_copy", "incomplete_message", "CopyError", "CopyReport",
           "parse_schema_names", "COPY_MARKER"]
