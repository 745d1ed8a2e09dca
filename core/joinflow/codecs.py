"""Codecs: user-extensible attribute types ``<name>`` / ``<name@store>`` / ``<name@>``.

A codec turns a Python value into something a column (or another codec) can hold, and
back.  ``get_dtype(is_store)`` names what it stores as: a core type (``bytes``,
``json``, ``varchar(64)`` ...) or another codec (``<hash>``), which forms a chain.
Encoders run outer -> inner on insert; decoders inner -> outer on fetch.

Subclassing :class:`Codec` with a ``name`` registers the codec.  Codecs shipped by other
packages are found through the entry-point groups ``joinflow.codecs`` and DataJoint's
``datajoint.codecs`` (and its legacy ``datajoint.types``); a class written against
``datajoint.Codec`` works as long as it has ``name``, ``get_dtype``, ``encode`` and
``decode``.

The column keeps the declared spelling in its comment (``:<blob@store>:comment``), exactly
as DataJoint does, so either library reads the other's tables.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable

from .errors import DataJointError, DeclarationError

logger = logging.getLogger("joinflow")

ENTRY_POINT_GROUPS = ("joinflow.codecs", "datajoint.codecs", "datajoint.types")

_registry: dict[str, Any] = {}
_lock = threading.RLock()
_entry_points_loaded = False


class CodecError(DataJointError):
    """A codec is unknown, misconfigured, or refused a value."""


class Codec:
    """Base class of codecs.  Subclass with ``name = "x"`` to register ``<x>``.

    Pass ``register=False`` in the class statement for an abstract base.
    """

    name: str | None = None
    # decode() reads the object's bytes from its store (fetches read many such objects at once first)
    reads_store_content = False

    def __init_subclass__(cls, *, register: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        if register and cls.__dict__.get("name") is not None:
            _register(cls)  # (a subclass that does not set its own name is not registered again)

    # -- the API subclasses implement ------------------------------------------------------
    def get_dtype(self, is_store: bool) -> str:
        """What the codec stores as: a core type or ``<another_codec>``."""
        raise NotImplementedError(f"Codec <{self.name}> must implement get_dtype(is_store).")

    def encode(self, value: Any, *, key: dict | None = None, context: dict | None = None,
               store_name: str | None = None) -> Any:
        raise NotImplementedError(f"Codec <{self.name}> must implement encode().")

    def decode(self, stored: Any, *, key: dict | None = None, context: dict | None = None) -> Any:
        raise NotImplementedError(f"Codec <{self.name}> must implement decode().")

    def validate(self, value: Any) -> None:
        """Raise (TypeError/ValueError/DataJointError) if ``value`` cannot be encoded."""

    def referenced_paths(self, stored: Any) -> list[tuple[str, str | None]]:
        """(path, store) pairs of the objects a stored value refers to (for garbage collection)."""
        return []

    @staticmethod
    def _codec_config(key: dict | None = None, context: dict | None = None):
        cfg = (context or {}).get("config") or (key or {}).get("_config")
        if cfg is None:
            from .settings import config as cfg
        return cfg

    def __repr__(self) -> str:
        return f"<{type(self).__name__} <{self.name}>>"


def _register(cls) -> None:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or not name.replace("_", "a").isalnum():
        raise DataJointError(
            f"Codec class {cls.__module__}.{cls.__name__} needs a name of letters, digits and underscores "
            f"(got {name!r}); set `name = \"...\"` in the class body."
        )
    with _lock:
        existing = _registry.get(name)
        if existing is not None:
            if type(existing) is cls or (
                type(existing).__qualname__ == cls.__qualname__ and type(existing).__module__ == cls.__module__
            ):
                _registry[name] = cls()  # re-import of the same module: keep the newest class
                _chains.clear()
                return
            raise DataJointError(
                f"Codec <{name}> is already registered by {type(existing).__module__}."
                f"{type(existing).__qualname__}; choose another name for {cls.__module__}.{cls.__qualname__}."
            )
        _registry[name] = cls()
        _chains.clear()
    logger.debug("Registered codec <%s> from %s.%s", name, cls.__module__, cls.__qualname__)


def register_codec(codec_class) -> None:
    """Register a codec class explicitly (e.g. one written against ``datajoint.Codec``)."""
    for method in ("get_dtype", "encode", "decode"):
        if not callable(getattr(codec_class, method, None)):
            raise DataJointError(f"{codec_class!r} is not a codec: it has no {method}() method.")
    _register(codec_class)


def unregister_codec(name: str) -> None:
    with _lock:
        _registry.pop(name, None)
        _chains.clear()


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        from importlib.metadata import entry_points

        for group in ENTRY_POINT_GROUPS:
            try:
                found = entry_points(group=group)
            except Exception as exc:  # pragma: no cover - broken metadata
                logger.warning("Cannot read entry points of %s: %s", group, exc)
                continue
            for ep in found:
                try:
                    obj = ep.load()
                except Exception as exc:
                    logger.warning("Codec entry point %s (%s) failed to load: %s", ep.name, group, exc)
                    continue
                cls = obj if isinstance(obj, type) else type(obj)
                name = getattr(cls, "name", None) or ep.name
                if name in _registry:
                    continue  # registered by subclassing joinflow.Codec on import
                try:
                    if getattr(cls, "name", None) is None:
                        cls = type(cls.__name__, (cls,), {"name": name})
                    register_codec(cls)
                except DataJointError as exc:
                    logger.warning("Codec entry point %s (%s) not registered: %s", ep.name, group, exc)


def get_codec(name: str):
    """The registered codec instance for ``name`` (``"blob"`` or ``"<blob>"``)."""
    bare = name.strip().strip("<>").split("@", 1)[0].strip()
    codec = _registry.get(bare)
    if codec is None:
        _load_entry_points()
        codec = _registry.get(bare)
    if codec is None:
        raise CodecError(
            f"Codec <{bare}> is not registered. Define a dj.Codec subclass with name = \"{bare}\", import the "
            f"module that defines it, or install the package that provides it (entry-point group "
            f"`joinflow.codecs` or `datajoint.codecs`). Registered: {', '.join(list_codecs())}."
        )
    return codec


def list_codecs() -> list[str]:
    _load_entry_points()
    return sorted(_registry)


def is_codec_registered(name: str) -> bool:
    try:
        get_codec(name)
    except CodecError:
        return False
    return True


def parse_codec_spec(spec: str) -> tuple[str, str | None]:
    """``<blob>`` -> (blob, None); ``<blob@s>`` -> (blob, "s"); ``<blob@>`` -> (blob, "") (default store)."""
    text = spec.strip()
    if not (text.startswith("<") and text.endswith(">")):
        raise DeclarationError(f"A codec type is written <name>, <name@store> or <name@>; got {spec!r}.")
    body = text[1:-1].strip()
    name, at, store = body.partition("@")
    name, store = name.strip(), store.strip()
    if not name or not name.replace("_", "a").isalnum():
        raise DeclarationError(f"Invalid codec name in {spec!r}.")
    if at and store and not store.replace("_", "a").replace("-", "a").isalnum():
        raise DeclarationError(f"Invalid store name in {spec!r}: use letters, digits, '_' and '-'.")
    return name, (store if at else None)


def _accepted(func: Callable, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@dataclass(frozen=True, eq=False)
class CodecChain:
    """A resolved codec type: its codecs (outer -> inner), final core dtype and store."""

    spec: str  # as declared: "<blob@store>"
    codecs: tuple
    dtype: str  # the final core type, e.g. "bytes" or "json"
    store: str | None  # None: in-table; "": the default store; else a store name

    @property
    def codec(self):
        return self.codecs[0]

    @property
    def name(self) -> str:
        return self.codecs[0].name

    @property
    def in_store(self) -> bool:
        return self.store is not None

    @property
    def reads_store_content(self) -> bool:
        """Decoding reads each value's object from the store (not a lazy reference)."""
        return self.in_store and any(getattr(c, "reads_store_content", False) for c in self.codecs)

    def encoder(self, context: dict) -> Callable[[Any, Any], Any]:
        """``f(value, key) -> stored value``: validate, then encode outer -> inner."""
        steps = []
        for codec in self.codecs:
            kwargs: dict = {}
            if _accepted(codec.encode, "context"):
                kwargs["context"] = context
            if _accepted(codec.encode, "store_name"):
                kwargs["store_name"] = self.store
            steps.append((codec.encode, kwargs, _accepted(codec.encode, "key")))
        validate = self.codecs[0].validate

        def encode(value, key=None):
            validate(value)
            for func, kwargs, takes_key in steps:
                value = func(value, key=key, **kwargs) if takes_key else func(value, **kwargs)
            return value

        return encode

    def decoder(self, context: dict) -> Callable[[Any], Any]:
        """``f(stored) -> value``: decode inner -> outer."""
        steps = []
        for codec in reversed(self.codecs):
            kwargs: dict = {}
            if _accepted(codec.decode, "context"):
                kwargs["context"] = context
            if _accepted(codec.decode, "key"):
                kwargs["key"] = None
            steps.append((codec.decode, kwargs))
        if len(steps) == 1:
            func, kwargs = steps[0]
            return (lambda v: func(v, **kwargs)) if kwargs else func

        def decode(value):
            for func, kwargs in steps:
                value = func(value, **kwargs)
            return value

        return decode

    def referenced_paths(self, stored: Any) -> list[tuple[str, str | None]]:
        return self.codecs[-1].referenced_paths(stored)


_chains: dict[str, CodecChain] = {}


def resolve(spec: str) -> CodecChain:
    """Resolve ``<name[@store]>`` through its chain to a core dtype (cached per spelling)."""
    chain = _chains.get(spec)
    if chain is None:
        chain = _chains[spec] = _resolve_cached(spec)
    return chain


def _resolve_cached(spec: str) -> CodecChain:
    from .types import parse_type

    name, store = parse_codec_spec(spec)
    codecs = []
    seen = set()
    dtype = f"<{name}>"
    while True:
        if name in seen:
            raise DeclarationError(f"Codec type {spec} refers to itself through <{name}> (a cycle in get_dtype).")
        seen.add(name)
        codec = get_codec(name)
        codecs.append(codec)
        try:
            dtype = codec.get_dtype(store is not None)
        except DataJointError as exc:
            raise DeclarationError(f"Codec type {spec}: {exc}") from None
        if not isinstance(dtype, str):
            raise DeclarationError(f"Codec <{name}>.get_dtype() must return a type name, got {dtype!r}.")
        dtype = dtype.strip()
        if dtype.startswith("<"):
            name, inner_store = parse_codec_spec(dtype)
            if inner_store is not None:
                store = inner_store
            continue
        break
    info = parse_type(dtype)
    if not info.core:
        raise DeclarationError(
            f"Codec type {spec} stores as {dtype!r}, which is not a core type; get_dtype() must return a core "
            "type (bytes, json, varchar(n), int32, ...) or another codec."
        )
    return CodecChain(spec.strip(), tuple(codecs), info.declared, store)


def storage_attribute(attr):
    """The attribute as its column sees it: the final core dtype instead of the codec spelling."""
    from .types import parse_type

    chain = attr.typeinfo.codec
    base = parse_type(chain.dtype)
    return replace(attr, type=base.declared, category=base.category, core=True, typeinfo=base)


def column_attribute(attr, backend, schema: str, table: str):
    """The attribute lowered for DDL: native column type of its dtype, ``:<codec>:`` comment."""
    storage = storage_attribute(attr)
    native = backend.column_type(storage, schema, table)
    return replace(storage, type=native, core=False, comment=f":{attr.type}:{attr.comment}")


# the built-in codecs register on import
from . import builtin_codecs as _builtin  # noqa: E402,F401

__all__ = ["Codec", "CodecChain", "CodecError", "get_codec", "list_codecs", "register_codec", "unregister_codec",
           "resolve", "parse_codec_spec", "is_codec_registered"]
