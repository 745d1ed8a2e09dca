"""The built-in codecs: ``<blob>``, ``<attach>``, ``<hash@store>``, ``<object@store>``, ``<npy@store>`` and
``<filepath@store>`` (DataJoint 2.x names, behaviour and stored metadata).

``<blob>`` and ``<attach>`` live in the table (a ``bytes`` column); with ``@store`` they
chain through ``<hash@store>``, which writes the bytes hash-addressed to the store and
keeps ``{hash, path, schema, store, size}`` in a ``json`` column.
"""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import blob
from .codecs import Codec, CodecError
from .storage import (MANIFEST_SUFFIX, StoreError, StorePathError, build_object_path, check_relative_path,
                      check_stored_path, get_hash, get_store, normalize_ext, put_hash)



def stored_path_reference(stored) -> list[tuple[str, str | None]]:
    """``[(path, store)]`` of a stored codec value (its JSON metadata), for garbage collection."""
    if isinstance(stored, (str, bytes)):
        try:
            stored = json.loads(stored)
        except ValueError:
            return []
    return [(stored["path"], stored.get("store"))] if isinstance(stored, dict) and "path" in stored else []

class BlobCodec(Codec):
    """Any serializable Python object (numpy arrays, scalars, containers) in DataJoint's blob format."""

    name = "blob"

    def get_dtype(self, is_store: bool) -> str:
        return "<hash>" if is_store else "bytes"

    def encode(self, value, *, key=None, context=None, store_name=None) -> bytes:
        fast = self._codec_config(key, context)["blob.compression"] == "fast"
        return blob.pack(value, compress=True, skip_incompressible=fast)

    def decode(self, stored, *, key=None, context=None) -> Any:
        return blob.unpack(stored, squeeze=False)


class HashCodec(Codec):
    """Raw bytes, stored hash-addressed (deduplicated per schema); store only."""

    name = "hash"
    section = "hash"  # what garbage collection scans these columns for
    reads_store_content = True

    def get_dtype(self, is_store: bool) -> str:
        if not is_store:
            raise CodecError("<hash> is stored in an object store only: write <hash@store> or <hash@>.")
        return "json"

    def validate(self, value) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"<hash> stores bytes, got {type(value).__name__} (use <blob@> for Python objects)")

    def encode(self, value, *, key=None, context=None, store_name=None) -> dict:
        context = context or {}
        schema = context.get("schema") or (key or {}).get("_schema") or "unknown"
        cfg = self._codec_config(key, context)
        return put_hash(bytes(value), schema, cfg, store_name, context.get("journal"))

    def decode(self, stored, *, key=None, context=None) -> bytes:
        return get_hash(stored, self._codec_config(key, context))

    def referenced_paths(self, stored) -> list[tuple[str, str | None]]:
        return stored_path_reference(stored)


class AttachCodec(Codec):
    """A file: stored as ``filename\\0contents``; fetched as a copy in ``config['download_path']``."""

    name = "attach"

    def get_dtype(self, is_store: bool) -> str:
        return "<hash>" if is_store else "bytes"

    def validate(self, value) -> None:
        if not isinstance(value, (str, Path)):
            raise TypeError(f"<attach> expects a file path, got {type(value).__name__}")
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(
                f"<attach> needs an existing file; {str(path)!r} "
                + ("is a directory" if path.is_dir() else "does not exist")
            )

    def encode(self, value, *, key=None, context=None, store_name=None) -> bytes:
        path = Path(value)
        return path.name.encode("utf-8") + b"\0" + path.read_bytes()

    def decode(self, stored, *, key=None, context=None) -> str:
        stored = bytes(stored)
        split = stored.find(b"\0")
        if split < 0:
            raise CodecError("<attach> value has no file name (no NUL separator): it was not written by <attach>.")
        # only the final name component: a stored name can never write outside download_path
        name = Path(stored[:split].decode("utf-8", errors="replace").replace("\\", "/")).name
        if name in ("", ".", ".."):
            name = "attachment"
        contents = memoryview(stored)[split + 1 :]
        folder = Path(self._codec_config(key, context)["download_path"] or ".")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        stem, suffix, counter = target.stem, target.suffix, 0
        while target.exists():
            if target.is_file() and target.stat().st_size == len(contents) and target.read_bytes() == contents:
                return str(target)  # already extracted
            counter += 1
            target = folder / f"{stem}_{counter}{suffix}"
        target.write_bytes(contents)
        return str(target)


# --------------------------------------------------------------------------------------------
# schema-addressed codecs: <object@>, <npy@>; and <filepath@>
# --------------------------------------------------------------------------------------------
class SchemaCodec(Codec, register=False):
    """Base of schema-addressed codecs: one object per row and attribute at
    ``_schema/{schema}/{table}/{pk}={v}/.../{field}_{token}{ext}`` (no deduplication).

    Subclasses write with :meth:`_new_path` and :meth:`_record` (so a failed insert deletes
    what they wrote) and keep ``{"path", "store", ...}`` in a ``json`` column.
    """

    section = "schema"  # what garbage collection scans these columns for

    def get_dtype(self, is_store: bool) -> str:
        if not is_store:
            raise CodecError(f"<{self.name}> is stored in an object store only: write <{self.name}@store> or "
                             f"<{self.name}@>.")
        return "json"

    @staticmethod
    def _extract_context(key: dict | None, context: dict | None) -> tuple[str, str, str, dict]:
        key = dict(key or {})
        context = context or {}
        schema = context.get("schema") or key.pop("_schema", None) or "unknown"
        table = context.get("table") or key.pop("_table", None) or "unknown"
        field = context.get("field") or key.pop("_field", None) or "data"
        return schema, table, field, {k: v for k, v in key.items() if not str(k).startswith("_")}

    def _store(self, store_name, key=None, context=None):
        return get_store(self._codec_config(key, context), store_name)

    def _new_path(self, store, key, context, ext=None) -> str:
        schema, table, field, pk = self._extract_context(key, context)
        return build_object_path(store, schema, table, field, pk, ext)

    @staticmethod
    def _record(context, store, path, recursive=False) -> None:
        journal = (context or {}).get("journal")
        if journal is not None:
            journal.record(store, path, recursive)

    # -- DataJoint 2.x's helpers for user codecs (its docstring's example runs unchanged) ------------
    def _build_path(self, schema: str, table: str, field: str, primary_key: dict, ext: str | None = None,
                    store_name: str | None = None, config=None) -> tuple[str, str]:
        """``(path, token)`` of a new object for this row and attribute in store ``store_name``."""
        store = self._get_backend(store_name, config=config)
        path = build_object_path(store, schema, table, field, primary_key, ext)
        name = path.rsplit("/", 1)[-1][len(field) + 1:]
        suffix = normalize_ext(ext) or ""
        return path, (name[: -len(suffix)] if suffix and name.endswith(suffix) else name)

    def _get_backend(self, store_name: str | None = None, config=None):
        """The store ``store_name`` (None: the default store) of ``config`` (the calling
        connection's; the global ``dj.config`` without one): a :class:`joinflow.storage.Store`."""
        return get_store(config if config is not None else self._codec_config(), store_name)

    def referenced_paths(self, stored) -> list[tuple[str, str | None]]:
        return stored_path_reference(stored)

    @staticmethod
    def _passthrough(value):
        """Metadata of an object already stored (an ObjectRef/NpyRef fetched elsewhere, or its JSON)."""
        from .objectref import NpyRef, ObjectRef

        if isinstance(value, (ObjectRef, NpyRef)):
            return value.to_json()
        if isinstance(value, dict) and "path" in value:
            return value
        return None

    def _existing(self, value, key, context, store_name):
        """The metadata of an object already stored, checked: its store is configured and its path
        stays inside that store.  None when ``value`` is new content to write."""
        meta = self._passthrough(value)
        if meta is None:
            return None
        named = meta.get("store")
        try:
            store = self._store(named or store_name, key, context)
        except StoreError as exc:
            raise StoreError(f"the object metadata names store {named!r}, which is not configured ({exc})") \
                from None
        path = meta.get("path")
        try:
            store.check_inside(path)
        except StorePathError as exc:
            raise StorePathError(f"the inserted object metadata is refused: {exc} To store a file, insert its "
                                 "content or its local path; to refer to an object already stored, insert the "
                                 "ObjectRef fetched from its table.") from None
        return meta if named else {**meta, "store": store.name}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class ObjectCodec(SchemaCodec):
    """Files, folders (e.g. Zarr, HDF5 collections) and bytes, written straight to the store;
    fetched as a lazy :class:`~joinflow.objectref.ObjectRef`."""

    name = "object"

    def validate(self, value) -> None:
        if isinstance(value, (bytes, bytearray, memoryview, str, Path)) or self._passthrough(value) is not None:
            return
        if isinstance(value, tuple) and len(value) == 2:
            ext, data = value
            if not (isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "read")):
                raise TypeError(f"<object> (ext, data) needs bytes or a file-like object as data, got "
                                f"{type(data).__name__}")
            normalize_ext(ext)
            return
        raise TypeError(f"<object> expects bytes, a file or folder path, or (ext, bytes|file-like); got "
                        f"{type(value).__name__}")

    def encode(self, value, *, key=None, context=None, store_name=None) -> dict:
        meta = self._existing(value, key, context, store_name)
        if meta is not None:
            return meta
        store = self._store(store_name, key, context)
        is_dir, ext, item_count = False, None, None
        if isinstance(value, (str, Path)):
            source = Path(value)
            if not source.exists():
                raise FileNotFoundError(f"<object> source {str(source)!r} does not exist")
            is_dir = source.is_dir()
            if is_dir:
                path = self._new_path(store, key, context)
                self._record(context, store, path, recursive=True)
                self._record(context, store, path + MANIFEST_SUFFIX)
                manifest = store.put_folder(source, path)
                size, item_count = manifest["total_size"], manifest["item_count"]
            else:
                ext = normalize_ext(source.suffix) if source.suffix and _plain_suffix(source.suffix) else None
                path = self._new_path(store, key, context, ext)
                self._record(context, store, path)
                size = store.put_file(source, path)
        else:
            if isinstance(value, tuple):
                ext, data = normalize_ext(value[0]), value[1]
                if hasattr(data, "read"):
                    data = data.read()
            else:
                data = value
            data = bytes(data) if not isinstance(data, bytes) else data
            path = self._new_path(store, key, context, ext)
            self._record(context, store, path)
            store.put(path, data)
            size = len(data)
        return {"path": path, "store": store.name, "size": size, "ext": ext, "is_dir": is_dir,
                "item_count": item_count, "timestamp": _now()}

    def decode(self, stored, *, key=None, context=None):
        from .objectref import ObjectRef

        meta = stored if isinstance(stored, dict) else json.loads(stored)
        return ObjectRef(meta, self._store(meta.get("store"), key, context))


def _refuse_links_out(store, path: str) -> None:
    """StorePathError if any symbolic link in the local folder ``path`` of ``store`` points outside the store."""
    import os

    top = store.full_path(path)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            full = os.path.join(root, name)
            if os.path.islink(full):
                store.check_inside(f"{path}/{os.path.relpath(full, top).replace(os.sep, '/')}", "<filepath>")


def _plain_suffix(suffix: str) -> bool:
    try:
        normalize_ext(suffix)
    except ValueError:
        return False
    return True


class NpyCodec(SchemaCodec):
    """A numpy array as a ``.npy`` file; fetched as a lazy :class:`~joinflow.objectref.NpyRef`."""

    name = "npy"

    def validate(self, value) -> None:
        if self._passthrough(value) is not None:
            return
        if not isinstance(value, np.ndarray):
            raise TypeError(f"<npy> stores numpy arrays, got {type(value).__name__} (use <blob@> for other objects)")
        if value.dtype.hasobject:
            raise TypeError("<npy> cannot store arrays of Python objects (dtype object); use <blob@>")

    def encode(self, value, *, key=None, context=None, store_name=None) -> dict:
        meta = self._existing(value, key, context, store_name)
        if meta is not None:
            return meta
        store = self._store(store_name, key, context)
        path = self._new_path(store, key, context, ".npy")
        self._record(context, store, path)
        if store.is_local:  # written straight to the file: no copy of the array in memory
            store.write_with(path, lambda f: np.lib.format.write_array(f, value, allow_pickle=False))
        else:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, value, allow_pickle=False)
            store.put(path, buffer.getbuffer())
        return {"path": path, "store": store.name, "dtype": str(value.dtype), "shape": list(value.shape)}

    def decode(self, stored, *, key=None, context=None):
        from .objectref import NpyRef

        meta = stored if isinstance(stored, dict) else json.loads(stored)
        return NpyRef(meta, self._store(meta.get("store"), key, context))


class FilepathCodec(Codec):
    """A file or folder already in a store, referenced by its path relative to the store root
    (never inside the managed ``_hash/`` and ``_schema/`` sections); fetched as an ObjectRef.
    ``<filepath@>`` means ``stores.filepath_default`` (then ``stores.default``)."""

    name = "filepath"

    def get_dtype(self, is_store: bool) -> str:
        if not is_store:
            raise CodecError("<filepath> refers to a file in a store: write <filepath@store> or <filepath@>.")
        return "json"

    def validate(self, value) -> None:
        if not isinstance(value, (str, Path)):
            raise TypeError(f"<filepath> expects a path relative to the store, got {type(value).__name__}")

    def encode(self, value, *, key=None, context=None, store_name=None) -> dict:
        store = get_store(self._codec_config(key, context), store_name, "filepath_default")
        path = check_relative_path(str(value).replace("\\", "/").lstrip("/"), "<filepath> path")
        for prefix in (store.hash_prefix, store.schema_prefix):
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                raise ValueError(f"<filepath> path {path!r} is inside the section '{prefix}/' that joinflow "
                                 "manages; keep referenced files outside it")
        prefix = str(store.spec.get("filepath_prefix") or "").strip("/")
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            raise ValueError(f"<filepath> path {path!r} must start with the store's filepath_prefix '{prefix}/'")
        check_stored_path(path, store.name, "<filepath> path")
        if not store.exists(path):
            raise FileNotFoundError(f"<filepath> {path!r} does not exist in store '{store.name}' "
                                    f"({store.full_path(path)}); copy the file there first")
        store.check_inside(path, "<filepath>")  # a link out of the store is refused, not followed
        is_dir = store.isdir(path)
        if is_dir and store.is_local:
            _refuse_links_out(store, path)
        return {"path": path, "store": store.name, "size": None if is_dir else store.size(path), "is_dir": is_dir,
                "timestamp": _now()}

    def decode(self, stored, *, key=None, context=None):
        from .objectref import ObjectRef

        meta = stored if isinstance(stored, dict) else json.loads(stored)
        return ObjectRef(meta, get_store(self._codec_config(key, context), meta.get("store"), "filepath_default"))
