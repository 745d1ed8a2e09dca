"""The built-in codecs: ``<blob>``, ``<attach>`` and ``<hash@store>`` (DataJoint 2.x names and behaviour).

``<blob>`` and ``<attach>`` live in the table (a ``bytes`` column); with ``@store`` they
chain through ``<hash@store>``, which writes the bytes hash-addressed to the store and
keeps ``{hash, path, schema, store, size}`` in a ``json`` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import blob
from .codecs import Codec, CodecError
from .storage import get_hash, put_hash


class BlobCodec(Codec):
    """Any serializable Python object (numpy arrays, scalars, containers) in DataJoint's blob format."""

    name = "blob"

    def get_dtype(self, is_store: bool) -> str:
        return "<hash>" if is_store else "bytes"

    def encode(self, value, *, key=None, context=None, store_name=None) -> bytes:
        return blob.pack(value, compress=True)

    def decode(self, stored, *, key=None, context=None) -> Any:
        return blob.unpack(stored, squeeze=False)


class HashCodec(Codec):
    """Raw bytes, stored hash-addressed (deduplicated per schema); store only."""

    name = "hash"

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
        return [(stored["path"], stored.get("store"))] if isinstance(stored, dict) and "path" in stored else []


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
