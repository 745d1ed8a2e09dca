"""Object stores (fsspec) and the hash-addressed layout of DataJoint 2.x.

Stores are configured in ``config['stores']``::

    {"default": "main",
     "main": {"protocol": "file", "location": "/data"},
     "scratch": {"protocol": "memory", "location": "/scratch"},
     "lake": {"protocol": "s3", "endpoint": "host:9000", "bucket": "b", "location": "lab",
              "access_key": "...", "secret_key": "...", "secure": true}}

``<x@>`` means the store named by ``stores.default``.  Hash-addressed objects live at
``{location}/{hash_prefix}/{schema}/[{fold}/...]{hash}`` where ``hash`` is the lowercase,
unpadded base32 of the content's MD5 (26 characters) and ``hash_prefix`` defaults to
``_hash``: identical content is stored once per schema.

Writes are atomic: the bytes go to a temporary name beside the target and are then
renamed (object stores such as S3 write whole objects atomically by themselves).  The
objects an insert writes are recorded in a journal so that a failed insert, or a rolled
back transaction, deletes them again (see ``Table.insert``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import uuid
from typing import Any

from .errors import BucketInaccessible, DataJointError, MissingExternalFile

logger = logging.getLogger("joinflow")

HASH_PREFIX = "_hash"
SCHEMA_PREFIX = "_schema"
ATOMIC_BY_NATURE = {"s3", "s3a", "gs", "gcs", "az", "abfs", "adl"}


class StoreError(DataJointError):
    """A store is not configured, or its configuration is invalid."""


def content_hash(data: bytes) -> str:
    """26-character lowercase base32 MD5 of ``data`` (DataJoint's content address)."""
    return base64.b32encode(hashlib.md5(data).digest()).decode("ascii").rstrip("=").lower()


def store_names(cfg) -> list[str]:
    stores = cfg["stores"] or {}
    return [k for k, v in stores.items() if isinstance(v, dict)]


def resolve_store_name(cfg, name: str | None) -> str:
    """The configured store for ``name``; None or "" mean ``stores.default``."""
    stores = cfg["stores"] or {}
    if not name:
        default = stores.get("default")
        if not default:
            raise StoreError(
                "The default store is requested (`<...@>`) but config['stores']['default'] is not set. Set it to the "
                f"name of a configured store (configured: {', '.join(store_names(cfg)) or 'none'})."
            )
        name = default
    if not isinstance(stores.get(name), dict):
        raise StoreError(
            f"Store '{name}' is requested but not configured. Add it to config['stores'], e.g. "
            f"config['stores']['{name}'] = {{'protocol': 'file', 'location': '/path/to/data'}} "
            f"(configured: {', '.join(store_names(cfg)) or 'none'})."
        )
    return name


class Store:
    """One configured store: an fsspec filesystem and a root path."""

    def __init__(self, name: str, spec: dict[str, Any]):
        import fsspec

        self.name = name
        self.spec = dict(spec)
        protocol = str(self.spec.get("protocol", "")).lower()
        if not protocol:
            raise StoreError(f"Store '{name}' has no `protocol` (file, memory, s3, ...). Add it to its config.")
        self.protocol = protocol
        self.hash_prefix = str(self.spec.get("hash_prefix", HASH_PREFIX)).strip("/")
        self.schema_prefix = str(self.spec.get("schema_prefix", SCHEMA_PREFIX)).strip("/")
        folds = self.spec.get("subfolding")
        self.subfolding = tuple(int(f) for f in folds) if folds else ()
        options: dict[str, Any] = {}
        if protocol == "file":
            location = self.spec.get("location")
            if not location:
                raise StoreError(f"Store '{name}' (file) needs a `location`: the folder that holds its objects.")
            options["auto_mkdir"] = True
            root = str(location).rstrip("/") or "/"
        elif protocol == "memory":
            root = "/" + str(self.spec.get("location", "")).strip("/")
        elif protocol in ("s3", "s3a"):
            for required in ("endpoint", "bucket"):
                if not self.spec.get(required):
                    raise StoreError(f"Store '{name}' (s3) needs `{required}` in its config.")
            endpoint = str(self.spec["endpoint"])
            if "://" not in endpoint:
                endpoint = ("https://" if self.spec.get("secure", True) else "http://") + endpoint
            options.update(client_kwargs={"endpoint_url": endpoint})
            if self.spec.get("access_key"):
                options.update(key=self.spec["access_key"], secret=self.spec.get("secret_key"))
            root = f"{self.spec['bucket']}/{str(self.spec.get('location', '')).strip('/')}".rstrip("/")
        else:
            options.update(self.spec.get("options") or {})
            root = str(self.spec.get("location", "")).rstrip("/")
        try:
            self.fs = fsspec.filesystem(protocol, **options)
        except (ImportError, ValueError) as exc:
            raise StoreError(
                f"Store '{name}': cannot open protocol {protocol!r} ({exc}). Install the fsspec implementation "
                "for it (e.g. s3fs for s3)."
            ) from None
        self.root = root

    def __repr__(self) -> str:
        return f"Store({self.name!r}, {self.protocol}://{self.root})"

    def full_path(self, path: str) -> str:
        return f"{self.root.rstrip('/')}/{path}" if self.root else path

    def exists(self, path: str) -> bool:
        try:
            return self.fs.exists(self.full_path(path))
        except (PermissionError, ConnectionError) as exc:
            raise BucketInaccessible(f"Store '{self.name}' cannot be reached: {exc}") from None

    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` atomically (temporary name, then rename)."""
        full = self.full_path(path)
        if self.protocol in ATOMIC_BY_NATURE:
            self.fs.pipe_file(full, data)
            return
        parent = full.rsplit("/", 1)[0]
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        temp = f"{full}.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(temp, data)
            self.fs.mv(temp, full)
        except BaseException:
            try:
                if self.fs.exists(temp):
                    self.fs.rm(temp)
            except Exception:  # pragma: no cover - best effort
                pass
            raise

    def get(self, path: str) -> bytes:
        try:
            return self.fs.cat_file(self.full_path(path))
        except FileNotFoundError:
            raise MissingExternalFile(
                f"Object {path} is missing from store '{self.name}' ({self.protocol}://{self.root}). It was deleted "
                "or the store's location changed; restore it, or delete the rows that refer to it."
            ) from None

    def remove(self, path: str) -> bool:
        full = self.full_path(path)
        try:
            self.fs.rm(full)
        except FileNotFoundError:
            return False
        return True

    def size(self, path: str) -> int:
        return int(self.fs.size(self.full_path(path)))

    def hash_path(self, digest: str, schema: str) -> str:
        folds, rest = [], digest
        for n in self.subfolding:
            folds.append(rest[:n])
            rest = rest[n:]
        parts = [self.hash_prefix] if self.hash_prefix else []
        return "/".join(parts + [schema] + folds + [digest])


_stores: dict[tuple[str, str], Store] = {}
_stores_lock = threading.Lock()


def get_store(cfg, name: str | None) -> Store:
    """The store ``name`` (None/"" = ``stores.default``) of configuration ``cfg`` (cached per spec)."""
    resolved = resolve_store_name(cfg, name)
    spec = (cfg["stores"] or {})[resolved]
    key = (resolved, json.dumps(spec, sort_keys=True, default=str))
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = Store(resolved, spec)
    return store


class Journal:
    """The objects written during one insert, to delete them if it fails."""

    def __init__(self) -> None:
        self.written: list[tuple[Store, str]] = []

    def record(self, store: Store, path: str) -> None:
        self.written.append((store, path))

    def __bool__(self) -> bool:
        return bool(self.written)

    def undo(self) -> None:
        for store, path in reversed(self.written):
            try:
                store.remove(path)
            except Exception as exc:  # pragma: no cover - report, keep cleaning
                logger.warning("Could not delete object %s from store '%s' after a failed insert: %s",
                               path, store.name, exc)
        self.written.clear()


def put_hash(data: bytes, schema: str, cfg, store_name: str | None, journal: Journal | None = None) -> dict:
    """Store ``data`` hash-addressed (once per schema); return the metadata kept in the row."""
    store = get_store(cfg, store_name)
    digest = content_hash(data)
    path = store.hash_path(digest, schema)
    if not store.exists(path):
        store.put(path, data)
        if journal is not None:
            journal.record(store, path)
    return {"hash": digest, "path": path, "schema": schema, "store": store.name, "size": len(data)}


def get_hash(meta: dict, cfg) -> bytes:
    """Read a hash-addressed object and verify its MD5."""
    if isinstance(meta, (str, bytes)):
        meta = json.loads(meta)
    store = get_store(cfg, meta.get("store"))
    data = store.get(meta["path"])
    if content_hash(data) != meta["hash"]:
        raise DataJointError(
            f"Object {meta['path']} in store '{store.name}' does not match its hash {meta['hash']}: it was "
            "modified or corrupted after it was written."
        )
    return data


__all__ = ["Store", "StoreError", "Journal", "get_store", "put_hash", "get_hash", "content_hash",
           "resolve_store_name"]
