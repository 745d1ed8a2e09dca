"""Lazy handles to schema-addressed objects: :class:`ObjectRef` (``<object@>``, ``<filepath@>``)
and :class:`NpyRef` (``<npy@>``).

Fetching a row never reads the objects: the handle knows the object's path, store and
the metadata kept in the row, and reads bytes only when asked (``read()``, ``open()``,
``load()``, ``download()``).  Both are built from the row's JSON metadata, the same JSON
DataJoint 2.x writes, so either library reads the other's objects.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import DataJointError, MissingExternalFile
from .storage import MANIFEST_SUFFIX, Store, StorePathError, check_relative_path, check_stored_path


class IntegrityError(DataJointError):
    """A stored object does not match the metadata its row keeps (missing, wrong size, wrong hash)."""


def _parse_meta(meta: Any) -> dict:
    if isinstance(meta, (str, bytes, bytearray)):
        meta = json.loads(meta)
    if not isinstance(meta, dict) or "path" not in meta:
        raise DataJointError(f"Object metadata must be a JSON object with a `path`, got {meta!r}.")
    # a path that leaves the store (written by raw SQL, an older version, another tool) is never resolved
    try:
        check_stored_path(meta["path"], meta.get("store"))
    except StorePathError as exc:
        raise StorePathError(f"{exc} The row's object is not read: correct its metadata with update1(), or delete "
                             "the row (fetch its other attributes by naming them).") from None
    return meta


class ObjectRef:
    """A file or folder in an object store, read lazily."""

    __slots__ = ("path", "store", "size", "is_dir", "ext", "timestamp", "item_count", "hash", "mime_type", "url",
                 "_store", "_meta")

    def __init__(self, meta: dict, store: Store | None = None):
        meta = _parse_meta(meta)
        self._meta = dict(meta)
        self.path: str = meta["path"]
        self.store: str | None = meta.get("store")
        self.size: int | None = meta.get("size")
        self.is_dir: bool = bool(meta.get("is_dir", False))
        self.ext: str | None = meta.get("ext")
        stamp = meta.get("timestamp")
        if isinstance(stamp, str):
            try:
                stamp = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                pass
        self.timestamp = stamp
        self.item_count: int | None = meta.get("item_count")
        self.hash: str | None = meta.get("hash")
        self.mime_type: str | None = meta.get("mime_type")
        self.url: str | None = meta.get("url")
        self._store = store

    @classmethod
    def from_json(cls, meta: dict | str, store: Store | None = None, backend: Store | None = None) -> "ObjectRef":
        return cls(meta, store if store is not None else backend)

    def to_json(self) -> dict:
        """The metadata as kept in the row."""
        return dict(self._meta)

    # -- the store -------------------------------------------------------------------------------
    def _backend(self) -> Store:
        if self._store is None:
            raise DataJointError(
                f"ObjectRef {self.path} has no store: it was made without a connection. Fetch it from its table."
            )
        return self._store

    def _sub(self, subpath: str | None) -> str:
        if not subpath:
            return self.path
        if not self.is_dir:
            raise DataJointError(f"{self.path} is a file: a subpath ({subpath!r}) needs a folder object.")
        return f"{self.path}/{check_relative_path(str(subpath).strip('/'), 'subpath')}"

    def _inside(self, subpath: str | None = None) -> str:
        """The store path of the object (or of ``subpath`` in it), checked to resolve inside the store."""
        return self._backend().check_inside(self._sub(subpath))

    @property
    def fs(self):
        """The fsspec file system of the store."""
        return self._backend().fs

    @property
    def full_path(self) -> str:
        """The object's path in the store's file system (a local path for file stores)."""
        return self._backend().full_path(self._inside())

    @property
    def fsmap(self):
        """An fsspec mapping over the object (e.g. ``zarr.open(ref.fsmap)``)."""
        import fsspec

        return fsspec.FSMap(self.full_path, self.fs)

    # -- reading ---------------------------------------------------------------------------------
    def read(self) -> bytes:
        if self.is_dir:
            raise DataJointError(f"{self.path} is a folder: use listdir(), walk() or open(subpath) instead of read().")
        return self._backend().get(self._inside())

    def open(self, subpath: str | None = None, mode: str = "rb") -> IO:
        if "r" not in mode:
            raise DataJointError("Stored objects are read-only once their row is inserted: open them with mode 'rb'/'r'.")
        return self._backend().open(self._inside(subpath), mode)

    def listdir(self, subpath: str = "") -> list[str]:
        if not self.is_dir:
            raise DataJointError(f"{self.path} is a file: listdir() needs a folder object; use read() or open().")
        store = self._backend()
        entries = store.fs.ls(store.full_path(self._inside(subpath)), detail=False)
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def walk(self) -> Iterator[tuple[str, list[str], list[str]]]:
        """``(relative folder, folders, files)`` for every folder of a folder object, as ``os.walk``."""
        if not self.is_dir:
            raise DataJointError(f"{self.path} is a file: walk() needs a folder object.")
        full = self.full_path.rstrip("/")
        for root, dirs, files in self.fs.walk(full):
            yield root.rstrip("/")[len(full):].lstrip("/"), sorted(dirs), sorted(files)

    def download(self, destination: str | Path, subpath: str | None = None) -> Path:
        """Copy the object (or one file of a folder) to ``destination``; return the local path."""
        store = self._backend()
        destination = Path(destination)
        remote = self._inside(subpath)
        if self.is_dir and not subpath:
            destination.mkdir(parents=True, exist_ok=True)
            full = store.full_path(remote).rstrip("/")
            for root, _dirs, files in store.fs.walk(full):
                rel = root.rstrip("/")[len(full):].lstrip("/")
                for name in files:
                    store.check_inside(f"{remote}/{rel}/{name}" if rel else f"{remote}/{name}")
                    target = destination / rel / name if rel else destination / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    store.fs.get_file(f"{root.rstrip('/')}/{name}", str(target))
            return destination
        if destination.is_dir():
            destination = destination / remote.rsplit("/", 1)[-1]
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            store.fs.get_file(store.full_path(remote), str(destination))
        except FileNotFoundError:
            raise MissingExternalFile(f"Object {remote} is missing from store '{store.name}'.") from None
        return destination

    def exists(self, subpath: str | None = None) -> bool:
        return self._backend().exists(self._sub(subpath))

    def verify(self) -> bool:
        """True if the object is present and matches its metadata; else :class:`IntegrityError`."""
        store = self._backend()
        self._inside()
        if not store.exists(self.path):
            raise IntegrityError(f"Object {self.path} does not exist in store '{store.name}'.")
        if self.is_dir:
            manifest_path = self.path + MANIFEST_SUFFIX
            if not store.exists(manifest_path):
                return True
            problems = []
            for item in json.loads(store.get(manifest_path)).get("files", []):
                sub = f"{self.path}/{item['path']}"
                if not store.exists(sub):
                    problems.append(f"missing file {item['path']}")
                elif store.size(sub) != item["size"]:
                    problems.append(f"{item['path']} has {store.size(sub)} bytes, expected {item['size']}")
            if problems:
                raise IntegrityError(f"Folder {self.path} does not match its manifest: " + "; ".join(problems))
            return True
        if self.size is not None and store.size(self.path) != self.size:
            raise IntegrityError(
                f"Object {self.path} has {store.size(self.path)} bytes, its row says {self.size}."
            )
        return True

    def __repr__(self) -> str:
        return f"ObjectRef({'folder' if self.is_dir else 'file'}: {self.path}, size={self.size})"

    def __str__(self) -> str:
        return self.path

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectRef) and (self.path, self.store) == (other.path, other.store)

    def __hash__(self) -> int:
        return hash((self.path, self.store))


class NpyRef:
    """A numpy array in an object store: ``shape``/``dtype`` without I/O, ``load()`` reads it
    (memory-mapped with ``mmap_mode`` straight from a local store)."""

    __slots__ = ("_meta", "_store", "_cached")

    def __init__(self, meta: dict, store: Store | None = None):
        self._meta = _parse_meta(meta)
        self._store = store
        self._cached = None

    @property
    def path(self) -> str:
        return self._meta["path"]

    @property
    def store(self) -> str | None:
        return self._meta.get("store")

    @property
    def shape(self) -> tuple:
        return tuple(self._meta["shape"])

    @property
    def dtype(self):
        import numpy as np

        return np.dtype(self._meta["dtype"])

    @property
    def ndim(self) -> int:
        return len(self._meta["shape"])

    @property
    def size(self) -> int:
        return math.prod(self._meta["shape"])

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def is_loaded(self) -> bool:
        return self._cached is not None

    def to_json(self) -> dict:
        return dict(self._meta)

    def _backend(self) -> Store:
        if self._store is None:
            raise DataJointError(f"NpyRef {self.path} has no store: it was made without a connection.")
        return self._store

    def load(self, mmap_mode: str | None = None):
        """The array; with ``mmap_mode`` ('r', 'r+', 'c') a memory map (a local copy first for remote stores)."""
        import numpy as np

        store = self._backend()
        store.check_inside(self.path)
        if mmap_mode is None:
            if self._cached is None:
                if store.is_local:
                    try:
                        self._cached = np.load(store.full_path(self.path), allow_pickle=False)
                    except FileNotFoundError:
                        raise MissingExternalFile(
                            f"Object {self.path} is missing from store '{store.name}'.") from None
                else:
                    self._cached = np.load(io.BytesIO(store.get(self.path)), allow_pickle=False)
            return self._cached
        if store.is_local:
            local = store.full_path(self.path)
        else:
            cache = Path(tempfile.gettempdir()) / "joinflow_mmap"
            cache.mkdir(exist_ok=True)
            local = cache / (hashlib.md5(f"{store.name}/{self.path}".encode()).hexdigest()[:16] + ".npy")
            if not local.exists():
                tmp = local.with_suffix(".part")
                tmp.write_bytes(store.get(self.path))
                tmp.replace(local)
        try:
            return np.load(local, mmap_mode=mmap_mode, allow_pickle=False)
        except FileNotFoundError:
            raise MissingExternalFile(f"Object {self.path} is missing from store '{store.name}'.") from None

    def __array__(self, dtype=None, copy=None):
        array = self.load()
        return array.astype(dtype) if dtype is not None else array

    def __getitem__(self, item):
        return self.load()[item]

    def __len__(self) -> int:
        if not self._meta["shape"]:
            raise TypeError("len() of a 0-dimensional array")
        return self._meta["shape"][0]

    def __repr__(self) -> str:
        return f"NpyRef(shape={self.shape}, dtype={self.dtype}, {'loaded' if self.is_loaded else 'not loaded'})"


__all__ = ["ObjectRef", "NpyRef", "IntegrityError"]
