"""Garbage collection of object stores: delete the objects no row refers to any more.

Rows refer to objects in two sections of a store (DataJoint 2.x layout):

* hash-addressed (``<hash@>``, ``<blob@>``, ``<attach@>``): ``{hash_prefix}/{schema}/{hash}`` —
  deduplicated per schema, so one object may be shared by many rows of many tables;
* schema-addressed (``<object@>``, ``<npy@>``): ``{schema_prefix}/{schema}/{table}/{pk}/…`` —
  one object (a file, or a folder of files plus its ``.manifest.json``) per row and field.

Deleting rows never deletes objects (as in DataJoint): the collector finds the orphans.
It reads **every** reference of the given schemas first, then lists the stored objects of
those schemas, and only then deletes — and it refuses to delete anything if any table
could not be read (a partial scan could take live objects for orphans)::

    collector = dj.gc.GarbageCollector(schema1, schema2, store="main")
    report = collector.collect()               # dry run: what would be deleted
    report = collector.collect(dry_run=False)  # delete the orphans

Each path embeds its schema, so collection is confined to the given schemas: objects of
other schemas in the same store, and files referenced by ``<filepath@>``, are never touched.

What gc never deletes, whatever runs beside it:

* **Recent objects.**  An object written (or refreshed) less than ``grace_period`` seconds before
  the collection started (the store's ``grace_period``, default 3600) is kept even when no row
  refers to it yet: it
  may belong to an insert that has not committed.  An insert that reuses an existing
  hash-addressed object older than half the grace period refreshes it first, and the age is
  checked again on the store at the moment of deletion, so gc running beside inserts loses
  no committed row's object (as long as a transaction commits within half the grace period).
* **Objects of other store names at the same location.**  References are matched by where the
  object is (protocol, endpoint, root), not by the store's name: ``stores = {main: loc,
  lake: loc}`` is one store.
* **Objects other databases use.**  Each database that writes rows referring to a store
  registers itself there (``_joinflow/databases/{schema}/``); ``joinflow copy`` registers the
  target.  gc refuses to delete while a database that it was not given a schema of uses the
  schema: pass one ``Schema`` per database (``GarbageCollector(schema_sqlite, schema_pg)``)
  so that the references of all of them are read.

Configurations gc cannot be safe with are refused: overlapping ``hash_prefix`` and
``schema_prefix`` (refused when the store is opened), and a store whose root lies inside
another store's section.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import sqlalchemy as sa

from .errors import DataJointError
from .storage import (MANIFEST_SUFFIX, MTIME_SLACK, TEMP_MARK, StoreError, database_identity, get_store, modified_time,
                      register_database, registered_databases, store_names)

logger = logging.getLogger("joinflow")

_BASE32_HASH = re.compile(r"^[a-z2-7]{26}$")
_modified = modified_time  # kept for callers of the old private name


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _section_of(codec) -> str | None:
    section = getattr(codec, "section", None)
    if section in ("hash", "schema"):
        return section
    names = {c.__name__ for c in type(codec).__mro__}
    if "SchemaCodec" in names:
        return "schema"
    if getattr(codec, "name", None) == "hash" or "HashCodec" in names:
        return "hash"
    return None


def _is_covered(path: str, referenced: set[str]) -> bool:
    """A stored file belongs to a referenced object: it is one, lies inside one (a folder), or is
    a referenced folder's manifest."""
    if path.endswith(MANIFEST_SUFFIX):
        path = path[: -len(MANIFEST_SUFFIX)]
    if path in referenced:
        return True
    cut = path.rfind("/")
    while cut > 0:
        if path[:cut] in referenced:
            return True
        cut = path.rfind("/", 0, cut)
    return False


class GarbageCollector:
    """Finds and deletes the orphaned objects of ``schemas`` in one store (``store=None``: the default)."""

    def __init__(self, *schemas, store: str | None = None, config=None, stale_after: float = 3600.0,
                 grace_period: float | None = None) -> None:
        if not schemas:
            raise DataJointError("GarbageCollector needs at least one schema: GarbageCollector(schema, ...).")
        self.schemas = schemas
        self.config = config if config is not None else schemas[0].connection.config
        try:
            self.backend = get_store(self.config, store)
        except StoreError as exc:
            raise DataJointError(f"Garbage collection: {exc}") from None
        self.store = store
        self.store_name = self.backend.name
        self._scan_errors: list[str] = []
        # unfinished uploads (".tmp-" files a killed writer left) older than this many seconds
        # are deleted; younger ones may belong to an upload in progress and are left alone
        self.stale_after = float(stale_after)
        # unreferenced objects written less than this many seconds ago are kept: an insert may be
        # about to commit a row that refers to them.  0 turns the protection off (only safe when
        # nothing writes to these schemas while gc runs).
        grace = self.backend.grace_period if grace_period is None else grace_period
        try:
            self.grace_period = float(grace)
        except (TypeError, ValueError):
            self.grace_period = -1.0
        if not self.grace_period >= 0:
            raise DataJointError(f"Garbage collection: grace_period {grace_period!r} must be a number of seconds "
                                 ">= 0 (default: the store's grace_period, 3600).")
        self._temp_files: dict[str, list[float | None]] = {}
        self._mtimes: dict[str, float | None] = {}
        self._locations: dict[tuple[int, str | None], Any] = {}
        self._kept: dict[str, str] = {}
        self._cutoff: float | None = None  # delete only objects written before this time (None: any)
        self._check_store_layout()

    def _check_store_layout(self) -> None:
        """Refuse when another configured store's root lies inside one of this store's sections (or
        this store's root inside one of its sections): one store's objects would be listed as the
        other's orphans."""
        ours = self.backend.location
        for name in store_names(self.config):
            try:
                other = get_store(self.config, name)
            except StoreError:
                continue
            theirs = other.location
            if theirs[:2] != ours[:2] or theirs == ours:
                continue
            for outer, inner, outer_store in ((ours, theirs, self.backend), (theirs, ours, other)):
                root = outer[2].rstrip("/")
                if not inner[2].startswith(root + "/"):
                    continue
                rel = inner[2][len(root) + 1:]
                for prefix in (outer_store.hash_prefix, outer_store.schema_prefix):
                    if _inside(rel, prefix):
                        raise DataJointError(
                            f"Garbage collection refused: store '{other.name}' ({other.protocol}://{other.root}) and "
                            f"store '{self.backend.name}' ({self.backend.protocol}://{self.backend.root}) overlap: "
                            f"one's root lies inside the other's section '{prefix}/', so gc would take one's objects "
                            "for the other's orphans. Give each store a location outside the other's sections."
                        )

    # -- references ---------------------------------------------------------------------------
    def _relative(self, cfg, ref_store: str | None, path: str, where: str) -> str | None:
        """The path, relative to this collector's store root, of the object ``path`` of store
        ``ref_store`` (as configured in ``cfg``); None when it is elsewhere.  Stores are compared by
        location, so two names of one location are one store."""
        key = (id(cfg), ref_store)
        store = self._locations.get(key)
        if store is None:
            try:
                store = get_store(cfg, ref_store)
            except StoreError as exc:
                store = exc
            self._locations[key] = store
        if isinstance(store, Exception):
            message = (f"{where}: a row refers to store {ref_store!r}, which this configuration cannot open "
                       f"({store}); gc cannot tell whether the object is in the store it collects")
            if message not in self._scan_errors:
                self._scan_errors.append(message)
            return None
        ours, theirs = self.backend.location, store.location
        if ours[:2] != theirs[:2]:
            return None
        full = f"{theirs[2].rstrip('/')}/{path}"
        root = ours[2].rstrip("/")
        return full[len(root) + 1:] if full.startswith(root + "/") else None

    def _references(self, section: str, verbose: bool) -> set[str]:
        referenced: set[str] = set()
        for schema in self.schemas:
            try:
                tables = schema.list_tables()
            except Exception as exc:
                self._scan_errors.append(f"list tables of {schema.database}: {exc}")
                continue
            conn = schema.connection
            for name in tables:
                try:
                    table = schema.get_table(name)
                    heading = table.heading
                except Exception as exc:
                    self._scan_errors.append(f"{schema.database}.{name}: {exc}")
                    continue
                for attr in heading.all_attributes.values():
                    chain = attr.codec
                    if chain is None:
                        continue
                    inner = [c for c in chain.codecs if _section_of(c) is not None]
                    if not inner or _section_of(inner[-1]) != section:
                        continue
                    codec = inner[-1]
                    if verbose:
                        logger.info("Scanning %s.%s `%s`", schema.database, name, attr.name)
                    column = table._table_clause([attr.name]).c[attr.name]
                    try:
                        result = conn.execute(sa.select(column).where(column.isnot(None)))
                        values = [row[0] for row in result.fetchall()]
                    except Exception as exc:
                        self._scan_errors.append(f"{table.full_table_name}.{attr.name}: {exc}")
                        continue
                    for value in values:
                        if isinstance(value, (bytes, bytearray, memoryview)):
                            value = bytes(value).decode("utf-8")
                        if isinstance(value, str):
                            try:
                                value = json.loads(value)
                            except ValueError:
                                self._scan_errors.append(
                                    f"{table.full_table_name}.{attr.name}: a value is not JSON metadata")
                                continue
                        for path, ref_store in codec.referenced_paths(value):
                            rel = self._relative(conn.config, ref_store, path,
                                                 f"{table.full_table_name}.{attr.name}")
                            if rel is not None:
                                referenced.add(rel)
        return referenced

    def hash_references(self, verbose: bool = False) -> set[str]:
        """Store paths of the hash-addressed objects that rows of the schemas refer to."""
        return self._references("hash", verbose)

    def schema_references(self, verbose: bool = False) -> set[str]:
        """Store paths of the schema-addressed objects (files or folders) that rows refer to."""
        return self._references("schema", verbose)

    # -- stored objects -------------------------------------------------------------------------
    def _walk(self, relative: str, what: str) -> dict[str, int]:
        store = self.backend
        root = store.full_path("").rstrip("/")
        start = store.full_path(relative)
        stored: dict[str, int] = {}
        try:
            if not store.is_local:  # list what is there now, not what a cache remembers (of any sub-folder)
                store.fs.invalidate_cache()
            if not store.fs.exists(start):
                return stored
            # one recursive listing (on S3 a few paginated requests, not one per folder)
            for full, info in store.fs.find(start, detail=True).items():
                if info.get("type") == "directory":
                    continue
                rel = full[len(root):].lstrip("/") if root else full.lstrip("/")
                stored[rel] = int(info.get("size") or 0)
                self._mtimes[rel] = _modified(info)
                if TEMP_MARK in rel:  # an unfinished file, or a file inside an unfinished folder
                    parts = rel.split("/")
                    cut = next(i for i, part in enumerate(parts) if TEMP_MARK in part)
                    top = "/".join(parts[:cut + 1])
                    self._temp_files.setdefault(top, []).append(_modified(info))
        except FileNotFoundError:
            pass
        except Exception as exc:
            self._scan_errors.append(f"{what}: {exc}")
        return stored

    def list_hash_paths(self, schema_name: str) -> dict[str, int]:
        """``{path: size}`` of the hash-addressed objects stored for ``schema_name``."""
        prefix = self.backend.hash_prefix
        found = self._walk(f"{prefix}/{schema_name}" if prefix else schema_name, f"list_hash_paths({schema_name})")
        return {p: n for p, n in found.items() if _BASE32_HASH.match(p.rsplit("/", 1)[-1])}

    def list_schema_paths(self, schema_name: str) -> dict[str, int]:
        """``{path: size}`` of the schema-addressed files stored for ``schema_name`` (folder objects
        listed file by file, with their manifests; unfinished ``.tmp-`` writes left out)."""
        prefix = self.backend.schema_prefix
        found = self._walk(f"{prefix}/{schema_name}" if prefix else schema_name,
                           f"list_schema_paths({schema_name})")
        return {p: n for p, n in found.items() if TEMP_MARK not in p}

    # -- deleting ---------------------------------------------------------------------------------
    def delete_schema_path(self, path: str) -> bool:
        """Delete one schema-addressed file and the folders it leaves empty; False if it was not there."""
        store = self.backend
        prefix = store.schema_prefix
        if prefix and not path.startswith(prefix + "/"):
            raise DataJointError(f"{path!r} is not in the schema-addressed section '{prefix}/' of store "
                                 f"'{store.name}'; garbage collection deletes nothing else.")
        full = store.full_path(path)
        try:
            outcome = store.remove_if_stale(path, self._cutoff)
        except FileNotFoundError:
            return False
        if outcome == "recent":
            self._kept[path] = "written or refreshed within grace_period while gc ran"
            return False
        if outcome != "deleted":
            return False
        stop = store.full_path(prefix).rstrip("/") if prefix else store.full_path("").rstrip("/")
        parent = full.rsplit("/", 1)[0]
        while parent.startswith(stop + "/"):
            try:
                if store.fs.ls(parent, detail=False):
                    break
                store.fs.rmdir(parent)
            except Exception:
                break
            parent = parent.rsplit("/", 1)[0]
        return True

    def _delete_hash_path(self, path: str) -> bool:
        prefix = self.backend.hash_prefix
        if prefix and not path.startswith(prefix + "/"):
            raise DataJointError(f"{path!r} is not in the hash-addressed section '{prefix}/'.")
        outcome = self.backend.remove_if_stale(path, self._cutoff)
        if outcome == "recent":  # an insert reused (refreshed) it after gc listed it
            self._kept[path] = "refreshed by an insert that reuses it while gc ran"
        return outcome == "deleted"

    # -- other databases -------------------------------------------------------------------------
    def _identities(self) -> dict[str, set[str]]:
        """``{schema name: {database identities}}`` of the schemas this collector reads."""
        given: dict[str, set[str]] = {}
        for schema in self.schemas:
            identity = database_identity(schema.connection) if schema.connection is not None else None
            given.setdefault(schema.database, set())
            if identity:
                given[schema.database].add(identity)
        return given

    def other_databases(self) -> list[str]:
        """The databases registered in the store as using one of the schemas whose rows this collector
        does not read (their rows may refer to the same objects)."""
        others = []
        for name, identities in self._identities().items():
            try:
                registered = registered_databases(self.backend, name)
            except Exception as exc:
                self._scan_errors.append(f"list the databases that use schema {name}: {exc}")
                continue
            for identity, path in sorted(registered.items()):
                if identity not in identities:
                    others.append(f"{identity} (schema {name}; registered in {path})")
        return others

    @staticmethod
    def _delete_each(paths, delete, sizes: dict[str, int], verbose: bool) -> tuple[int, int, int]:
        """Run ``delete(path)`` for each path: (deleted, bytes freed, failures); a failure is
        logged and the others go on."""
        deleted = freed = failed = 0
        for path in paths:
            try:
                if delete(path):
                    deleted += 1
                    freed += sizes.get(path, 0)
                    if verbose:
                        logger.info("Deleted %s (%d bytes)", path, sizes.get(path, 0))
            except Exception as exc:
                failed += 1
                logger.warning("Could not delete %s: %s", path, exc)
        return deleted, freed, failed

    # -- orchestration -------------------------------------------------------------------------------
    def collect(self, dry_run: bool = True, verbose: bool = False) -> dict[str, Any]:
        """Report the orphaned objects and, with ``dry_run=False``, delete them.

        All references are read before anything is listed or deleted; any error while scanning
        makes a non-dry run refuse to delete.
        """
        self._scan_errors = []
        self._temp_files = {}
        self._mtimes = {}
        self._kept: dict[str, str] = {}
        self._locations = {}
        # Ages count from now, before any reference is read: a row committed after its table was read
        # refers to an object written (or refreshed) less than grace_period/2 before its commit, so
        # after this moment minus the grace period, however long the scan takes.
        started = time.time()
        self._cutoff = None if self.grace_period <= 0 else started - self.grace_period
        others = self.other_databases()
        hash_referenced = self.hash_references(verbose)
        schema_referenced = self.schema_references(verbose)
        hash_stored: dict[str, int] = {}
        schema_stored: dict[str, int] = {}
        for schema in self.schemas:
            hash_stored.update(self.list_hash_paths(schema.database))
            schema_stored.update(self.list_schema_paths(schema.database))
        now = time.time()

        def old_enough(path: str) -> bool:
            if self._cutoff is None:
                return True
            mtime = self._mtimes.get(path)
            if mtime is None:
                self._kept[path] = "its modification time is unknown"
                return False
            if mtime + MTIME_SLACK >= self._cutoff:
                self._kept[path] = (f"unreferenced, but written {max(0.0, started - mtime):.0f} s before gc started, "
                                    f"within grace_period ({self.grace_period:g} s): an insert may not have "
                                    "committed yet")
                return False
            return True

        orphaned_hash = sorted(p for p in set(hash_stored) - hash_referenced if old_enough(p))
        orphaned_schema = sorted(p for p in schema_stored
                                 if not _is_covered(p, schema_referenced) and old_enough(p))
        # an unfinished folder is as recent as its newest file; an unknown time counts as recent
        stale_temp = sorted(p for p, times in self._temp_files.items()
                            if None not in times and now - max(times) > self.stale_after)
        hash_deleted = schema_deleted = temp_deleted = bytes_freed = errors = 0
        if not dry_run:
            if self._scan_errors:
                raise DataJointError(
                    f"Garbage collection refused to delete anything: {len(self._scan_errors)} error(s) while "
                    f"scanning, so live objects could look orphaned. Fix them and run again: {self._scan_errors}"
                )
            if others:
                raise DataJointError(
                    f"Garbage collection refused to delete anything in store '{self.store_name}': other databases "
                    f"use the same schemas and objects there, and their rows were not read: {'; '.join(others)}. "
                    "Pass a Schema of each database (GarbageCollector(schema_here, schema_there)); if a database "
                    "listed no longer uses the store, delete its registration file and run again."
                )
            for schema in self.schemas:  # this database uses the store: others' collectors must read it
                if schema.connection is not None:
                    try:
                        register_database(self.backend, schema.database, database_identity(schema.connection))
                    except DataJointError as exc:  # advisory for other databases' collectors, not for this one
                        logger.warning("%s", exc)
            hash_deleted, freed, failed = self._delete_each(orphaned_hash, self._delete_hash_path, hash_stored, verbose)
            bytes_freed, errors = bytes_freed + freed, errors + failed
            temp_deleted, _, failed = self._delete_each(
                stale_temp, lambda path: self.backend.remove(path, recursive=True), {}, verbose)
            errors += failed
            schema_deleted, freed, failed = self._delete_each(orphaned_schema, self.delete_schema_path, schema_stored,
                                                              verbose)
            bytes_freed, errors = bytes_freed + freed, errors + failed
        return {
            "hash_paths_referenced": len(hash_referenced),
            "hash_paths_stored": len(hash_stored),
            "hash_paths_orphaned": len(orphaned_hash),
            "hash_paths_orphaned_bytes": sum(hash_stored[p] for p in orphaned_hash),
            "orphaned_hash_paths": orphaned_hash,
            "schema_paths_referenced": len(schema_referenced),
            "schema_paths_stored": len(schema_stored),
            "schema_paths_orphaned": len(orphaned_schema),
            "schema_paths_orphaned_bytes": sum(schema_stored[p] for p in orphaned_schema),
            "orphaned_schema_paths": orphaned_schema,
            "hash_paths_deleted": hash_deleted,
            "schema_paths_deleted": schema_deleted,
            "deleted": hash_deleted + schema_deleted,
            "bytes_freed": bytes_freed,
            "errors": errors,
            "scan_errors": list(self._scan_errors),
            "dry_run": dry_run,
            # beyond DataJoint: uploads a killed writer never finished (older than stale_after)
            "stale_temp_paths": stale_temp,
            "stale_temp_deleted": temp_deleted,
            # what gc kept although no row it read refers to it, and why
            "grace_period": self.grace_period,
            "kept_paths": dict(sorted(self._kept.items())),
            "other_databases": others,
        }


__all__ = ["GarbageCollector"]
