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
import contextlib
import contextvars
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from .errors import BucketInaccessible, DataJointError, MissingExternalFile

logger = logging.getLogger("joinflow")

HASH_PREFIX = "_hash"
SCHEMA_PREFIX = "_schema"
REGISTRY_PREFIX = "_joinflow"  # {root}/_joinflow/databases/{schema}/{id}.json: the databases that use a store
GRACE_PERIOD = 3600.0  # seconds: gc leaves unreferenced objects younger than this (store key `grace_period`)
TEMP_MARK = ".tmp-"  # unfinished uploads: "<final name>.tmp-<random>" until renamed into place
MTIME_SLACK = 1.0  # seconds: S3 reports modification times truncated to the second
ATOMIC_BY_NATURE = {"s3", "s3a", "gs", "gcs", "az", "abfs", "adl"}
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MANIFEST_SUFFIX = ".manifest.json"
# characters DataJoint URL-quotes in primary-key values, plus NUL/control characters and '%'-free safety
_UNSAFE_PK_CHARS = set('/\\:*?"<>|')
_MAX_PK_TEXT = 100  # DataJoint: longer values are truncated to 50 characters + "_" + md5[:8]
_MAX_COMPONENT_BYTES = 200  # below the 255-byte limit of common file systems
_EXT = re.compile(r"^\.?[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*$")


class StoreError(DataJointError):
    """A store is not configured, or its configuration is invalid."""


class StorePathError(DataJointError):
    """An object path would leave its store (absolute, ``..``, a URL, a backslash, a symlink
    that points outside the store's folder): refused at insert, never resolved on read or copy."""


def content_hash(data: bytes) -> str:
    """26-character lowercase base32 MD5 of ``data`` (DataJoint's content address)."""
    return base64.b32encode(hashlib.md5(data).digest()).decode("ascii").rstrip("=").lower()


def generate_token(length: int = 8) -> str:
    """A random token of ``length`` (clamped to 4..16) characters from ``[A-Za-z0-9-_]``."""
    length = max(4, min(16, int(length)))
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))


def encode_pk_value(value: Any) -> str:
    """A primary-key value as one path component, as DataJoint renders it, never a path of its own.

    Numbers as ``str``; datetimes ``%Y-%m-%dT%H-%M-%S``; dates ISO; other values as text,
    URL-quoted when they hold a separator, a character file systems refuse, NUL or a control
    character; text longer than 100 characters becomes its first 50 characters, ``_`` and
    8 hex digits of its MD5 (then quoted).  A value can never contribute ``/``, ``..`` or an
    absolute path to the object's path: the result is always used after ``{attr}=``.
    """
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%dT%H-%M-%S")
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        try:
            return encode_pk_value(value.item())
        except (TypeError, ValueError):
            pass
    text = str(value)
    unsafe = any(c in _UNSAFE_PK_CHARS or ord(c) < 32 or ord(c) == 127 for c in text)
    if len(text) > _MAX_PK_TEXT:
        text = text[:50] + "_" + hashlib.md5(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        unsafe = True
    if unsafe:
        text = urllib.parse.quote(text, safe="")
    if len(text.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES:  # e.g. 100 multi-byte characters
        digest = hashlib.md5(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = urllib.parse.quote(urllib.parse.unquote(text)[:50], safe="")[:150]
        cut = head.rfind("%", len(head) - 2)  # never end inside a %XX escape
        text = (head[:cut] if cut >= 0 else head) + "_" + digest
    return text


def check_relative_path(path: str, what: str = "object path") -> str:
    """``path`` if it is a relative path that stays inside the store root; else ValueError."""
    text = str(path)
    if "\0" in text:
        raise ValueError(f"The {what} {text!r} contains a NUL character.")
    if not text or text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text) or "://" in text:
        raise ValueError(f"The {what} {text!r} must be a path relative to the store root.")
    parts = text.replace("\\", "/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"The {what} {text!r} must not contain empty, '.' or '..' components (it would leave its folder)."
        )
    return text


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x1f\x7f\\\\]")


def stored_path_problem(path: Any) -> str | None:
    """Why ``path``, kept in a row's metadata, could leave its store root; None when it cannot.

    A stored path is a store-relative POSIX path: not absolute, no drive letter or URL scheme
    (``s3://``, ``file:``), no backslash, no control character, no empty, ``.`` or ``..``
    component; and percent-decoding it (once or repeatedly, as some file systems and HTTP
    layers do) must not make it absolute, give it a scheme, or climb above the root.
    """
    if not isinstance(path, str):
        return f"it is a {type(path).__name__}, not text"
    if not path:
        return "it is empty"
    bad = _CONTROL_OR_BACKSLASH.search(path)
    if bad is not None:
        return ("it contains a backslash (a path separator on Windows)" if bad.group() == "\\"
                else "it contains a control character")
    if path.startswith("/"):
        return "it is absolute"
    if "://" in path or _SCHEME.match(path):
        return "it names a URL scheme or drive"
    if any(p in ("", ".", "..") for p in path.split("/")):
        return "it has an empty, '.' or '..' component"
    if "%" not in path:
        return None
    text = path
    for _ in range(4):
        decoded = urllib.parse.unquote(text)
        if decoded == text:
            break
        text = decoded
        if text[:1] in ("/", "\\") or _SCHEME.match(text):
            return "percent-decoded it is absolute or a URL"
        depth = 0
        for part in re.split(r"[/\\]", text):
            if part == "..":
                depth -= 1
                if depth < 0:
                    return "percent-decoded it climbs above the store root"
            elif part not in ("", "."):
                depth += 1
    return None


def check_stored_path(path: Any, store_name: str | None = None, what: str = "object path") -> str:
    """``path`` if it stays inside its store (see :func:`stored_path_problem`); else StorePathError."""
    problem = stored_path_problem(path)
    if problem is not None:
        where = f" of store '{store_name}'" if store_name else ""
        raise StorePathError(
            f"The {what} {path!r} would leave the store root{where}: {problem}. Object paths are relative to "
            "the store, e.g. '_schema/lab/session/session_id=1/raw_ab12cd34.dat'; joinflow never reads or writes "
            "outside the store."
        )
    return path


def normalize_ext(ext: str | None) -> str | None:
    """``"npy"``/``".npy"`` -> ``".npy"``; None/"" -> None; anything that is not a plain suffix -> ValueError."""
    if ext is None or ext == "":
        return None
    ext = str(ext)
    if len(ext) > 32 or not _EXT.match(ext):
        raise ValueError(f"File extension {ext!r} is not a plain suffix such as '.dat' or '.tar.gz'.")
    return ext if ext.startswith(".") else "." + ext


def build_object_path(store: "Store", schema: str, table: str, field: str, key: dict | None,
                      ext: str | None = None) -> str:
    """The schema-addressed path of a new object (DataJoint 2.x layout)::

        {schema_prefix}/[{partition_attr}={v}/...]{schema}/{table}/{pk1}={v1}/.../{field}_{token}{ext}
    """
    key = dict(key or {})
    pattern = store.spec.get("partition_pattern")
    partition = re.findall(r"\{(\w+)\}", pattern) if pattern else []
    parts = [store.schema_prefix] if store.schema_prefix else []
    parts += [f"{a}={encode_pk_value(key[a])}" for a in partition if a in key]
    parts += [schema, table]
    parts += [f"{a}={encode_pk_value(v)}" for a, v in key.items() if a not in partition and not a.startswith("_")]
    parts.append(f"{field}_{generate_token(store.spec.get('token_length', 8))}{normalize_ext(ext) or ''}")
    # refused here, as it would be on read (e.g. a key value of many '../', percent-encoded)
    return check_stored_path(check_relative_path("/".join(parts)), store.name)


def store_names(cfg) -> list[str]:
    stores = cfg["stores"] or {}
    return [k for k, v in stores.items() if isinstance(v, dict)]


def resolve_store_name(cfg, name: str | None, default_key: str = "default") -> str:
    """The configured store for ``name``; None or "" mean ``stores.default`` (``<filepath@>``:
    ``stores.filepath_default``, then ``stores.default``)."""
    stores = cfg["stores"] or {}
    if not name:
        default = stores.get(default_key) or stores.get("default")
        if not default:
            raise StoreError(
                f"The default store is requested (`<...@>`) but config['stores']['{default_key}'] is not set. Set it "
                f"to the name of a configured store (configured: {', '.join(store_names(cfg)) or 'none'})."
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
        _check_sections(name, self.hash_prefix, self.schema_prefix)
        try:
            self.grace_period = float(self.spec.get("grace_period", GRACE_PERIOD))
        except (TypeError, ValueError):
            self.grace_period = -1.0
        if not self.grace_period >= 0:  # also NaN
            raise StoreError(f"Store '{name}': grace_period {self.spec.get('grace_period')!r} must be a number of "
                             "seconds >= 0 (default 3600): gc leaves unreferenced objects younger than this.")
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

    def check_inside(self, path: str, what: str = "object") -> str:
        """``path`` if it resolves inside the store; StorePathError if it would not (its text, or, on a
        local store, a symbolic link on the way that points outside the store's folder)."""
        check_stored_path(path, self.name, f"{what} path")
        if self.is_local:
            root = os.path.realpath(self.root or "/")
            real = os.path.realpath(self.full_path(path))
            if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
                raise StorePathError(
                    f"The {what} {path!r} in store '{self.name}' is a symbolic link (or lies under one) that "
                    f"points outside the store's folder {self.root} (to {real}). joinflow never follows links out "
                    "of a store: copy the file into the store, or replace the link with the file."
                )
        return path

    @property
    def location(self) -> tuple[str, str, str]:
        """Where the objects are, independent of the store's name: (protocol, endpoint, absolute root).
        Two store names with the same location are one store (gc compares locations, not names)."""
        protocol = {"s3a": "s3", "local": "file"}.get(self.protocol, self.protocol)
        endpoint = ""
        root = self.root
        if protocol == "s3":
            endpoint = str(self.spec.get("endpoint", "")).lower()
            endpoint = endpoint.split("://", 1)[-1].rstrip("/")
        elif protocol == "file":
            root = os.path.realpath(os.path.abspath(root))
        return protocol, endpoint, "/" + root.strip("/")

    def exists(self, path: str) -> bool:
        """Is ``path`` in the store now?  Asks the store itself, never a cached listing (another
        process may have deleted the object since this process listed the folder)."""
        return self.fresh_info(path) is not None

    def fresh_info(self, path: str) -> dict | None:
        """``{"size", "mtime"}`` of ``path`` read from the store now (no cached listing), or None
        when it is not there.  ``mtime`` is the POSIX time of the last write (None if unknown)."""
        full = self.full_path(path)
        try:
            if self.is_local:
                st = os.stat(full)
                return {"size": st.st_size, "mtime": st.st_mtime, "type": "directory" if
                        os.path.isdir(full) else "file"}
            self.fs.invalidate_cache(full)
            info = self.fs.info(full)
        except FileNotFoundError:
            return None
        except (PermissionError, ConnectionError) as exc:
            raise BucketInaccessible(f"Store '{self.name}' cannot be reached: {exc}") from None
        return {"size": info.get("size"), "mtime": modified_time(info), "type": info.get("type")}

    def refresh(self, path: str, data: bytes) -> None:
        """Give the existing object ``path`` (whose content is ``data``) a fresh modification time,
        so that gc's grace period starts again: a touch on local files, a rewrite elsewhere."""
        if self.is_local:
            try:
                os.utime(self.full_path(path))
                return
            except FileNotFoundError:  # deleted since we looked: write it again
                pass
        self.put(path, data)

    def remove_if_stale(self, path: str, written_before: float | None) -> str:
        """Delete ``path`` only if it was last written before the POSIX time ``written_before``
        (None: unconditionally), checked on the store at the moment of deletion.  Returns
        "deleted", "recent" (kept: written or refreshed since, e.g. by an insert that reuses it)
        or "missing".

        On local files the check and the deletion are one atomic step: the file is first renamed
        aside, then its time is read, and it is put back if it turned out to be recent.  A writer
        that refreshes the file before the rename keeps it; one that comes after finds it absent
        and writes it again.  Elsewhere (S3) the time is read just before the deletion request."""
        full = self.full_path(path)
        if written_before is None:
            return "deleted" if self.remove(path) else "missing"
        if self.is_local:
            aside = f"{full}{TEMP_MARK}gc-{uuid.uuid4().hex}"
            try:
                os.rename(full, aside)
            except FileNotFoundError:
                return "missing"
            try:
                mtime = os.stat(aside).st_mtime
            except FileNotFoundError:
                return "missing"
            if mtime + MTIME_SLACK < written_before:
                os.unlink(aside)
                return "deleted"
            os.replace(aside, full)  # a writer may have written it again meanwhile: same content
            return "recent"
        info = self.fresh_info(path)
        if info is None:
            return "missing"
        if info.get("mtime") is None or info["mtime"] + MTIME_SLACK >= written_before:
            return "recent"
        return "deleted" if self.remove(path) else "missing"

    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` atomically (temporary name, then rename)."""
        full = self.full_path(path)
        if not self.is_local and not isinstance(data, (bytes, bytearray)):
            data = bytes(data)  # fsspec clients want bytes, not a memoryview
        if self.protocol in ATOMIC_BY_NATURE:
            self.fs.pipe_file(full, data)
            return
        parent = full.rsplit("/", 1)[0]
        if parent:
            if self.is_local:
                os.makedirs(parent, exist_ok=True)
            else:
                self.fs.makedirs(parent, exist_ok=True)
        temp = f"{full}.tmp-{uuid.uuid4().hex}"
        try:
            if self.is_local:  # plain file I/O: no fsspec overhead on the hot path
                with open(temp, "wb") as f:
                    f.write(data)
                os.replace(temp, full)
            else:
                self.fs.pipe_file(temp, data)
                self.fs.mv(temp, full)
        except BaseException:
            self._discard(temp)
            raise

    def get(self, path: str) -> bytes:
        ready = _PREFETCHED.get()
        if ready is not None:
            data = ready.pop((self.protocol, self.full_path(path)), None)
            if data is not None:
                return data
        try:
            if self.is_local:
                with open(self.full_path(path), "rb") as f:
                    return f.read()
            return self.fs.cat_file(self.full_path(path))
        except FileNotFoundError:
            raise MissingExternalFile(
                f"Object {path} is missing from store '{self.name}' ({self.protocol}://{self.root}). It was deleted "
                "or the store's location changed; restore it, or delete the rows that refer to it."
            ) from None

    def put_buffer(self, buffer, path: str) -> None:
        """DataJoint 2.x's storage-backend spelling of :meth:`put` (buffer first)."""
        self.put(path, bytes(buffer))

    def get_buffer(self, path: str) -> bytes:
        """DataJoint 2.x's storage-backend spelling of :meth:`get`."""
        return self.get(path)

    def get_many(self, paths) -> dict:
        """Read several objects in one concurrent request (fsspec ``cat`` of a list; s3fs, gcsfs and
        the like fetch them in parallel).  Returns ``{(protocol, full path): bytes}`` for what it
        read; objects it could not read are left out (``get`` reads them, and reports, one by one).
        Local stores return nothing: a local read is not worth a batch."""
        if self.is_local:
            return {}
        wanted = {self.full_path(p) for p in paths}
        if len(wanted) < 2:
            return {}
        try:
            got = self.fs.cat(sorted(wanted), on_error="omit")
        except Exception as exc:  # fall back to reading one at a time
            logger.debug("Store '%s': batch read failed (%s); reading one object at a time.", self.name, exc)
            return {}
        strip = getattr(type(self.fs), "_strip_protocol", lambda p: p)
        by_stripped = {strip(full): full for full in wanted}
        out = {}
        for name, data in got.items():
            full = name if name in wanted else by_stripped.get(strip(name))
            if full is not None and isinstance(data, (bytes, bytearray)):
                out[(self.protocol, full)] = bytes(data)
        return out

    def remove(self, path: str, recursive: bool = False) -> bool:
        full = self.full_path(path)
        try:
            if recursive and self.fs.isdir(full):
                self.fs.rm(full, recursive=True)
            else:
                self.fs.rm(full)
        except FileNotFoundError:
            return False
        return True

    def size(self, path: str) -> int:
        return int(self.fs.size(self.full_path(path)))

    def isdir(self, path: str) -> bool:
        return bool(self.fs.isdir(self.full_path(path)))

    def open(self, path: str, mode: str = "rb"):
        try:
            return self.fs.open(self.full_path(path), mode)
        except FileNotFoundError:
            raise MissingExternalFile(f"Object {path} is missing from store '{self.name}'.") from None

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def put_file(self, local: str | Path, path: str) -> int:
        """Copy the local file ``local`` to ``path`` atomically; return its size."""
        local = Path(local)
        full = self.full_path(path)
        if self.protocol in ATOMIC_BY_NATURE:
            self.fs.put_file(str(local), full)
            return local.stat().st_size
        parent = full.rsplit("/", 1)[0]
        temp = f"{full}.tmp-{uuid.uuid4().hex}"
        try:
            if self.is_local:
                os.makedirs(parent, exist_ok=True)
                shutil.copyfile(local, temp)
                os.replace(temp, full)
            else:
                self.fs.makedirs(parent, exist_ok=True)
                self.fs.put_file(str(local), temp)
                self.fs.mv(temp, full)
        except BaseException:
            self._discard(temp)
            raise
        return local.stat().st_size

    def put_folder(self, local: str | Path, path: str) -> dict:
        """Copy the local folder ``local`` to ``path`` (whole: a temporary name, then a rename on file
        systems) and write DataJoint's ``{path}.manifest.json`` beside it; return the manifest."""
        local = Path(local)
        files = []
        for root, _dirs, names in os.walk(local):
            for name in sorted(names):
                item = Path(root) / name
                files.append({"path": item.relative_to(local).as_posix(), "size": item.stat().st_size})
        full = self.full_path(path)
        if self.protocol in ATOMIC_BY_NATURE:
            for item in files:
                self.fs.put_file(str(local / item["path"]), f"{full}/{item['path']}")
        else:
            temp = f"{full}.tmp-{uuid.uuid4().hex}"
            try:
                if self.is_local:  # copyfile: the files get the time of this write (gc's grace period)
                    shutil.copytree(local, temp, copy_function=shutil.copyfile)
                    os.replace(temp, full)
                else:
                    for item in files:
                        self.fs.pipe_file(f"{temp}/{item['path']}", (local / item["path"]).read_bytes())
                    self.fs.mv(temp, full, recursive=True)
            except BaseException:
                self._discard(temp, recursive=True)
                raise
        return self.write_manifest(path, files)

    def write_manifest(self, path: str, files: list[dict]) -> dict:
        """Write DataJoint's ``{path}.manifest.json`` for the folder at ``path`` holding ``files``
        (``[{"path": relative path, "size": bytes}]``); return the manifest."""
        manifest = {"files": files, "total_size": sum(f["size"] for f in files), "item_count": len(files),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        self.put(path + MANIFEST_SUFFIX, json.dumps(manifest, indent=2).encode())
        return manifest

    def write_with(self, path: str, writer) -> None:
        """Write ``path`` atomically by calling ``writer(file)`` on a temporary file, then renaming it."""
        full = self.full_path(path)
        if not self.is_local:
            import io as _io

            buffer = _io.BytesIO()
            writer(buffer)
            self.put(path, buffer.getbuffer())
            return
        os.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        temp = f"{full}.tmp-{uuid.uuid4().hex}"
        try:
            with open(temp, "wb") as f:
                writer(f)
            os.replace(temp, full)
        except BaseException:
            self._discard(temp)
            raise

    def _discard(self, full: str, recursive: bool = False) -> None:
        try:
            if self.fs.exists(full):
                self.fs.rm(full, recursive=recursive)
        except Exception:  # pragma: no cover - best effort
            pass

    def hash_path(self, digest: str, schema: str) -> str:
        folds, rest = [], digest
        for n in self.subfolding:
            folds.append(rest[:n])
            rest = rest[n:]
        parts = [self.hash_prefix] if self.hash_prefix else []
        return "/".join(parts + [schema] + folds + [digest])


def _check_sections(name: str, hash_prefix: str, schema_prefix: str) -> None:
    """gc lists each section to find orphans: sections that overlap would make the objects of one
    look like orphans of the other.  Refuse such a configuration."""
    sections = {"hash_prefix": hash_prefix, "schema_prefix": schema_prefix}
    for key, prefix in sections.items():
        if not prefix:
            raise StoreError(
                f"Store '{name}': {key} is empty, so its section would be the whole store and overlap the other "
                f"section; gc could then delete live objects. Give it a folder name (default "
                f"'{HASH_PREFIX if key == 'hash_prefix' else SCHEMA_PREFIX}')."
            )
        if prefix == REGISTRY_PREFIX or prefix.startswith(REGISTRY_PREFIX + "/"):
            raise StoreError(f"Store '{name}': {key} '{prefix}' is reserved for joinflow's list of the databases "
                             "that use the store. Choose another folder name.")

    def nested(a: str, b: str) -> bool:
        return a == b or b.startswith(a + "/")

    if nested(hash_prefix, schema_prefix) or nested(schema_prefix, hash_prefix):
        raise StoreError(
            f"Store '{name}': hash_prefix '{hash_prefix}' and schema_prefix '{schema_prefix}' overlap (one is the "
            "other or lies inside it). gc would take the objects of one section for orphans of the other and delete "
            f"live objects. Use separate folders, e.g. the defaults '{HASH_PREFIX}' and '{SCHEMA_PREFIX}'."
        )


def modified_time(info: dict) -> float | None:
    """The modification time of an fsspec ``info`` entry as a POSIX timestamp (None if unknown)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created", "mtime_ns"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            return value.timestamp()
        if isinstance(value, str):
            try:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.timezone.utc)
            return parsed.timestamp()
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        return number / 1e9 if key == "mtime_ns" else number
    return None


# -- the databases that use a store ----------------------------------------------------------------
# Rows of several databases can refer to the same objects (a schema copied with `joinflow copy`
# into another database with the same stores, or two databases sharing a store and schema
# names).  Each database that writes rows referring to a store registers itself there, per
# schema; gc refuses to delete while a database it was not given uses the schema.

def database_identity(connection) -> str | None:
    """The database a connection works on, as text without user or password (None: an in-memory
    SQLite database, which no other process can see)."""
    url = connection.url
    backend = connection.backend.name
    if backend == "sqlite":
        database = url.database or ""
        if not database or database == ":memory:" or "mode=memory" in database:
            return None
        return f"sqlite://{os.path.realpath(os.path.abspath(database))}"
    host = (url.host or "localhost").lower()
    port = url.port or {"postgresql": 5432, "mysql": 3306}.get(backend, "")
    database = (url.database or "") if backend == "postgresql" else ""
    return f"{backend}://{host}:{port}/{database}"


def registration_path(schema: str, identity: str) -> str:
    return f"{REGISTRY_PREFIX}/databases/{schema}/{hashlib.sha256(identity.encode()).hexdigest()[:24]}.json"


_registered: set = set()
_registered_lock = threading.Lock()


def register_database(store: "Store", schema: str, identity: str | None) -> None:
    """Record (once per process) in ``store`` that database ``identity`` has rows of ``schema``
    that refer to objects in it."""
    if not identity:
        return
    key = (store.location, schema, identity)
    if key in _registered:
        return
    path = registration_path(schema, identity)
    try:
        if store.fresh_info(path) is None:
            record = {"database": identity, "schema": schema,
                      "registered": datetime.datetime.now(datetime.timezone.utc).isoformat()}
            store.put(path, json.dumps(record, indent=2).encode())
    except DataJointError:
        raise
    except Exception as exc:
        raise BucketInaccessible(
            f"Store '{store.name}' ({store.protocol}://{store.root}): cannot record that database {identity} uses "
            f"it for schema {schema} ({path}): {exc}. Check that the store is reachable and writable."
        ) from None
    with _registered_lock:
        _registered.add(key)


def unregister_database(store: "Store", schema: str, identity: str | None) -> bool:
    """Remove the record that database ``identity`` uses ``store`` for ``schema`` (its rows are
    gone, e.g. an interrupted copy was discarded); True if there was one."""
    if not identity:
        return False
    with _registered_lock:
        _registered.discard((store.location, schema, identity))
    return bool(store.remove(registration_path(schema, identity)))


def registered_databases(store: "Store", schema: str) -> dict[str, str]:
    """``{database identity: registration path}`` of the databases registered for ``schema``."""
    folder = f"{REGISTRY_PREFIX}/databases/{schema}"
    full = store.full_path(folder)
    found: dict[str, str] = {}
    try:
        if not store.is_local:
            store.fs.invalidate_cache(full)
        names = store.fs.ls(full, detail=False)
    except FileNotFoundError:
        return found
    for name in names:
        if not str(name).endswith(".json"):
            continue
        rel = f"{folder}/{str(name).rstrip('/').rsplit('/', 1)[-1]}"
        try:
            record = json.loads(store.get(rel))
            found[str(record["database"])] = rel
        except (MissingExternalFile, ValueError, KeyError, TypeError):
            found[f"(unreadable registration {rel})"] = rel
    return found


_stores: dict[tuple[str, str], Store] = {}
_stores_lock = threading.Lock()


def get_store(cfg, name: str | None, default_key: str = "default") -> Store:
    """The store ``name`` (None/"" = ``stores.default``) of configuration ``cfg`` (cached per spec)."""
    resolved = resolve_store_name(cfg, name, default_key)
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
    """The objects written during one insert, to delete them if it fails.

    Only objects private to the failed rows are deleted: schema-addressed objects (their paths
    carry a random token).  A hash-addressed object is shared by content: between our write and
    our rollback another session may have found it and committed a row that references it, so
    deleting it could break that row.  Such objects are left to garbage collection (``dj.gc``),
    which deletes them only once no row references them.
    """

    def __init__(self) -> None:
        self.written: list[tuple[Store, str, bool, bool]] = []

    def record(self, store: Store, path: str, recursive: bool = False, shared: bool = False) -> None:
        self.written.append((store, path, recursive, shared))

    def __bool__(self) -> bool:
        return bool(self.written)

    def undo(self) -> None:
        for store, path, recursive, shared in reversed(self.written):
            if shared:
                logger.debug("Left hash-addressed object %s in store '%s' to garbage collection", path, store.name)
                continue
            try:
                store.remove(path, recursive=recursive)
            except Exception as exc:  # pragma: no cover - report, keep cleaning
                logger.warning("Could not delete object %s from store '%s' after a failed insert: %s",
                               path, store.name, exc)
        self.written.clear()


def put_hash(data: bytes, schema: str, cfg, store_name: str | None, journal: Journal | None = None) -> dict:
    """Store ``data`` hash-addressed (once per schema); return the metadata kept in the row.

    Whether the object is already there is asked of the store itself (never a cached listing:
    another process's gc may have deleted it).  An object that is there but older than half the
    store's ``grace_period`` is refreshed (touched, or written again) before the row refers to
    it: gc never deletes an object younger than the grace period, so the row can commit
    safely within the other half.
    """
    store = get_store(cfg, store_name)
    digest = content_hash(data)
    path = store.hash_path(digest, schema)
    info = store.fresh_info(path)
    if info is None:
        store.put(path, data)
        if journal is not None:
            journal.record(store, path, shared=True)
    elif info.get("mtime") is None or time.time() - info["mtime"] >= store.grace_period / 2:
        store.refresh(path, data)
    return {"hash": digest, "path": path, "schema": schema, "store": store.name, "size": len(data)}


# objects read ahead by prefetch(): (protocol, full path) -> bytes, consumed by Store.get
_PREFETCHED: contextvars.ContextVar = contextvars.ContextVar("joinflow_prefetched", default=None)


@contextlib.contextmanager
def prefetch(cfg, references):
    """Within the block, ``Store.get`` of any of ``references`` (``[(path, store name)]``) returns
    bytes read beforehand by one concurrent request per store."""
    ready: dict = {}
    by_store: dict = {}
    for path, store_name in references:
        if stored_path_problem(path) is not None:
            continue  # decoding refuses it with the reason
        by_store.setdefault(store_name, []).append(path)
    for store_name, paths in by_store.items():
        try:
            store = get_store(cfg, store_name)
        except DataJointError:
            continue  # decoding reports the unknown store
        ready.update(store.get_many(paths))
    token = _PREFETCHED.set(ready or None)
    try:
        yield
    finally:
        _PREFETCHED.reset(token)


def get_hash(meta: dict, cfg) -> bytes:
    """Read a hash-addressed object and verify its MD5."""
    if isinstance(meta, (str, bytes)):
        meta = json.loads(meta)
    store = get_store(cfg, meta.get("store"))
    data = store.get(check_stored_path(meta.get("path"), store.name))
    if content_hash(data) != meta["hash"]:
        raise DataJointError(
            f"Object {meta['path']} in store '{store.name}' does not match its hash {meta['hash']}: it was "
            "modified or corrupted after it was written."
        )
    return data


__all__ = ["Store", "StoreError", "Journal", "get_store", "put_hash", "get_hash", "content_hash",
           "resolve_store_name", "encode_pk_value", "register_database", "registered_databases", "unregister_database",
           "database_identity", "build_object_path", "check_relative_path", "generate_token",
           "StorePathError", "check_stored_path", "stored_path_problem"]
