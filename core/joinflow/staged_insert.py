"""``Table.staged_insert1``: write large ``<object@>`` values straight into the store, then insert the row.

::

    with Recording.staged_insert1 as s:
        s.rec["rec_id"] = 1                         # the primary key first: it is part of the path
        z = zarr.open(s.store("traces", ".zarr"), mode="w", shape=(1000, 64))   # an fsspec mapper
        with s.open("notes", ".txt", mode="w") as f:                           # a file
            f.write("...")
        s.rec["rig"] = "A"
    # here the objects' metadata has been computed and the row inserted

Objects go to the schema-addressed location an ordinary insert would use
(``{schema_prefix}/{schema}/{table}/{pk}={v}/.../{field}_{token}{ext}``, built by
:func:`~joinflow.storage.build_object_path`), under a ``.tmp-`` name on stores whose writes are
not atomic by themselves; on exit they are renamed into place, their metadata is computed
(DataJoint's ``{path, store, size, ext, is_dir, item_count, timestamp}``; folders also get
their ``.manifest.json``) and the row is inserted with one ``insert1``.  If the block raises,
or the insert fails, the staged objects are deleted and nothing is inserted; inside an outer
transaction they are deleted again if that transaction rolls back.

Unlike DataJoint 2.3.5, whose staged paths use the class name, the path uses the table name,
as every other insert does.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .builtin_codecs import ObjectCodec, _now
from .errors import DataJointError, MissingAttributeError, UnknownAttributeError
from .storage import ATOMIC_BY_NATURE, MANIFEST_SUFFIX, Store, build_object_path, get_store, normalize_ext

if TYPE_CHECKING:  # pragma: no cover
    from .table import Table

logger = logging.getLogger("joinflow")


@dataclass
class _Staged:
    field: str
    store: Store
    path: str  # the final, schema-addressed path
    temp: str  # where the user writes (== path on stores that write atomically)
    ext: str | None
    is_dir: bool
    key: dict


class StagedInsert:
    """The object ``with T.staged_insert1 as s`` gives: ``s.rec``, ``s.store()``, ``s.open()``."""

    def __init__(self, table: "Table"):
        self._table = table
        self.rec: dict[str, Any] = {}
        self._staged: dict[str, _Staged] = {}
        self._files: list = []
        self._active = False

    # -- the context ------------------------------------------------------------------------------
    def __enter__(self) -> "StagedInsert":
        self._table._check_direct_insert(None)
        self._active = True
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._active = False
        try:
            self._close_files()
        except BaseException:
            self._discard()
            if exc_type is None:
                raise
            return False
        if exc_type is not None:
            self._discard()
            return False  # the block's exception propagates
        try:
            row = self._finish()
            self._table.insert1(row)
        except BaseException:
            self._discard()
            raise
        conn = self._table.connection
        if self._staged and conn.in_transaction:
            conn.on_rollback(self._discard)
        return False

    # -- staging ----------------------------------------------------------------------------------
    def store(self, field: str, ext: str = "") -> Any:
        """An fsspec mapper (``MutableMapping``: relative path -> bytes) on a new folder object for the
        ``<object@>`` attribute ``field``, e.g. for Zarr."""
        import fsspec

        staged = self._stage(field, ext, is_dir=True)
        return fsspec.FSMap(staged.store.full_path(staged.temp), staged.store.fs)

    def open(self, field: str, ext: str = "", mode: str = "wb"):
        """A file opened for writing, the new file object of the ``<object@>`` attribute ``field``."""
        if not any(c in mode for c in "wax"):
            raise DataJointError(
                f"staged_insert1 on {self._table.full_table_name}: open() writes a new object; use mode 'wb' "
                f"or 'w', not {mode!r}."
            )
        staged = self._stage(field, ext, is_dir=False)
        full = staged.store.full_path(staged.temp)
        if staged.store.is_local:
            os.makedirs(os.path.dirname(full), exist_ok=True)
        f = staged.store.fs.open(full, mode)
        self._files.append(f)
        return f

    def _stage(self, field: str, ext: str | None, is_dir: bool) -> _Staged:
        table = self._table
        name = table.full_table_name
        if not self._active:
            raise DataJointError(f"Use staged_insert1 of {name} in a with statement: `with T.staged_insert1 as s:`.")
        attr = self._object_attribute(field)
        if field in self._staged:
            raise DataJointError(f"staged_insert1 on {name}: attribute `{field}` is already staged; stage it once.")
        heading = table.heading
        missing = [k for k in heading.primary_key if self.rec.get(k) is None]
        if missing:
            raise MissingAttributeError(
                f"staged_insert1 on {name}: the object path of `{field}` is built from the primary key; set "
                + ", ".join(f"s.rec[{k!r}]" for k in missing) + f" before s.store()/s.open() of `{field}`."
            )
        try:
            ext = normalize_ext(ext)
        except ValueError as exc:
            raise DataJointError(f"staged_insert1 on {name}, attribute `{field}`: {exc}") from None
        key = {k: self.rec[k] for k in heading.primary_key}
        store = get_store(table.connection.config, attr.codec.store)
        path = build_object_path(store, table.database, table.table_name, field, key, ext)
        temp = path if store.protocol in ATOMIC_BY_NATURE else f"{path}.tmp-{uuid.uuid4().hex}"
        staged = self._staged[field] = _Staged(field, store, path, temp, ext, is_dir, key)
        return staged

    def _object_attribute(self, field: str):
        table = self._table
        heading = table.heading
        objects = [a.name for a in heading.attributes.values()
                   if a.codec is not None and isinstance(a.codec.codec, ObjectCodec)]
        if field not in heading.attributes:
            raise UnknownAttributeError(
                f"`{field}` is not in the table heading of {table.full_table_name}; staged_insert1 stages its "
                f"<object@> attributes ({', '.join(objects) or 'it has none'})."
            )
        attr = heading[field]
        if field not in objects:
            raise DataJointError(
                f"staged_insert1 on {table.full_table_name}: attribute `{field}` is {attr.type}; only <object@> "
                f"attributes can be staged ({', '.join(objects) or 'this table has none'}). Set "
                f"s.rec[{field!r}] = value instead."
            )
        return attr

    # -- finishing --------------------------------------------------------------------------------
    def _close_files(self) -> None:
        files, self._files = self._files, []
        for f in files:
            f.close()  # a file the block left open is flushed before its size is taken

    def _finish(self) -> dict:
        """Move the staged objects into place and return the row with their metadata."""
        table = self._table
        name = table.full_table_name
        row = dict(self.rec)
        key = {k: row.get(k) for k in table.heading.primary_key}
        for staged in self._staged.values():
            if staged.key != key:
                raise DataJointError(
                    f"staged_insert1 on {name}: the primary key changed from {staged.key} to {key} after `"
                    f"{staged.field}` was staged at a path built from it. Set the primary key first and keep it."
                )
            if staged.field in row:
                raise DataJointError(
                    f"staged_insert1 on {name}: attribute `{staged.field}` is staged and also set in s.rec; "
                    f"remove s.rec[{staged.field!r}]."
                )
            row[staged.field] = self._place(staged)
        return row

    def _place(self, staged: _Staged) -> dict:
        store, name = staged.store, self._table.full_table_name
        full_temp = store.full_path(staged.temp)
        files = _files_under(store, full_temp) if staged.is_dir else None
        if (staged.is_dir and not files) or (not staged.is_dir and not store.fs.exists(full_temp)):
            raise DataJointError(
                f"staged_insert1 on {name}: nothing was written to the staged object of `{staged.field}`. Write "
                "to it, or do not stage it."
            )
        if staged.temp != staged.path:
            full = store.full_path(staged.path)
            if store.is_local:
                os.replace(full_temp, full)
            else:
                store.fs.mv(full_temp, full, recursive=staged.is_dir)
        if staged.is_dir:
            manifest = store.write_manifest(staged.path, files)
            size, item_count = manifest["total_size"], manifest["item_count"]
        else:
            size, item_count = store.size(staged.path), None
        return {"path": staged.path, "store": store.name, "size": size, "ext": staged.ext, "is_dir": staged.is_dir,
                "item_count": item_count, "timestamp": _now()}

    def _discard(self) -> None:
        """Delete every staged object (in its temporary or final place) and folder manifest."""
        for staged in self._staged.values():
            store = staged.store
            paths = [staged.temp, staged.path] + ([staged.path + MANIFEST_SUFFIX] if staged.is_dir else [])
            for path in dict.fromkeys(paths):
                try:
                    store.remove(path, recursive=staged.is_dir and not path.endswith(MANIFEST_SUFFIX))
                except Exception as exc:  # pragma: no cover - report, keep cleaning
                    logger.warning("Could not delete staged object %s from store '%s': %s", path, store.name, exc)


def _files_under(store: Store, full: str) -> list[dict]:
    """``[{"path": relative path, "size": bytes}]`` of the files in the folder ``full``, sorted."""
    fs = store.fs
    if not fs.exists(full):
        return []
    root = fs._strip_protocol(full).rstrip("/")
    found = fs.find(full, detail=True)
    return sorted(({"path": p[len(root) + 1:], "size": int(info.get("size") or 0)}
                   for p, info in found.items() if info.get("type") != "directory"), key=lambda f: f["path"])


__all__ = ["StagedInsert"]
