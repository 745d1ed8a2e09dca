"""Configuration: ``dj.config``.

Layers, highest first: assignments made at run time > environment variables >
configuration file (``joinflow.toml`` or ``datajoint.json``, searched from the working
directory upward) > defaults.  Every environment variable beats the file — DataJoint
2.3.5 lets the file beat most ``DJ_*`` variables; see docs/differences-from-datajoint.md.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any, Iterator

from .errors import DataJointError

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore
    except ImportError:
        _toml = None

DEFAULTS: dict[str, Any] = {
    "database.backend": "sqlite",
    "database.host": "localhost",
    "database.user": None,
    "database.password": None,
    "database.port": None,
    "database.name": None,
    "database.url": None,
    "database.reconnect": True,
    "database.use_tls": None,
    "database.create_tables": True,
    "database.pool_pre_ping": True,
    "connection.charset": "",
    "display.limit": 12,
    "display.width": 14,
    "display.show_tuple_count": True,
    "display.diagram_direction": "LR",
    "display.diagram_theme": "auto",
    "jobs.auto_refresh": True,
    "jobs.keep_completed": False,
    "jobs.stale_timeout": 3600,
    "jobs.default_priority": 5,
    "jobs.version_method": None,
    "jobs.allow_new_pk_fields_in_computed_tables": False,
    "jobs.add_job_metadata": False,
    "jobs.check_make_inserted": True,  # populate(): a make() that inserts no row for its key is an error
    "jobs.lease_timeout": 300,
    "provenance.capture": False,  # DataJoint 2.3.4+: Manual tables declared now get hidden `_prov`
    "provenance.source": {},  # JSON-serializable dict stored in each row's `_prov` (joinflow.provenance)
    "stores": {},
    "loglevel": "INFO",
    "safemode": True,
    "ignore_config_file": False,
    "query_cache": None,
    "download_path": ".",
    "insert.batch_size": 10000,
}

# environment variable -> key.  DataJoint's names first, then joinflow's own.
ENV_VARS: dict[str, str] = {
    "DJ_BACKEND": "database.backend",
    "DJ_HOST": "database.host",
    "DJ_USER": "database.user",
    "DJ_PASS": "database.password",
    "DJ_PORT": "database.port",
    "DJ_DATABASE_NAME": "database.name",
    "DJ_USE_TLS": "database.use_tls",
    "DJ_CREATE_TABLES": "database.create_tables",
    "DJ_LOG_LEVEL": "loglevel",
    "DJ_SAFEMODE": "safemode",
    "DJ_IGNORE_CONFIG_FILE": "ignore_config_file",
    "DJ_DIAGRAM_DIRECTION": "display.diagram_direction",
    "DJ_DIAGRAM_THEME": "display.diagram_theme",
    "DJ_JOBS_AUTO_REFRESH": "jobs.auto_refresh",
    "DJ_JOBS_KEEP_COMPLETED": "jobs.keep_completed",
    "DJ_JOBS_STALE_TIMEOUT": "jobs.stale_timeout",
    "DJ_JOBS_DEFAULT_PRIORITY": "jobs.default_priority",
    "JOINFLOW_JOBS_LEASE_TIMEOUT": "jobs.lease_timeout",
    "DJ_PROVENANCE_CAPTURE": "provenance.capture",
    "DJ_PROVENANCE_SOURCE": "provenance.source",
    "DJ_STORES": "stores",
    "JOINFLOW_DATABASE_URL": "database.url",
    "JOINFLOW_BACKEND": "database.backend",
    "JOINFLOW_HOST": "database.host",
    "JOINFLOW_USER": "database.user",
    "JOINFLOW_PASSWORD": "database.password",
    "JOINFLOW_PORT": "database.port",
    "JOINFLOW_DATABASE_NAME": "database.name",
    "JOINFLOW_SAFEMODE": "safemode",
}

CONFIG_FILES = ("joinflow.toml", "datajoint.json")


def _coerce(key: str, value: Any) -> Any:
    """Turn an environment/file string into the type of the key's default."""
    if not isinstance(value, str):
        return value
    default = DEFAULTS.get(key)
    if isinstance(default, bool) or key in ("database.use_tls",):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        if key == "database.use_tls" and low in ("", "none"):
            return None
        raise DataJointError(f"Configuration key `{key}` expects true/false, got {value!r}.")
    if isinstance(default, int) or key == "database.port":
        try:
            return int(value)
        except ValueError:
            raise DataJointError(f"Configuration key `{key}` expects an integer, got {value!r}.") from None
    if key == "provenance.source":
        try:
            return _check_source(json.loads(value) if value.strip() else {})
        except json.JSONDecodeError as exc:
            raise DataJointError(f"DJ_PROVENANCE_SOURCE must be a JSON object: {exc}") from None
    if key == "stores":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataJointError(f"DJ_STORES must be a JSON object: {exc}") from None
    return value


def _check_source(value: Any) -> dict:
    """``provenance.source``: a dict that JSON can store (it goes into every ``_prov`` record)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataJointError(
            f"Configuration key `provenance.source` must be a dict, got {type(value).__name__}: "
            'e.g. config["provenance.source"] = {"system": "lims", "site": "lab-1"}.')
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise DataJointError(
            f"Configuration key `provenance.source` must be JSON-serializable ({exc}); give strings, "
            "numbers, booleans, lists and dicts.") from None
    return value


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in ("stores", "provenance.source") and not key.startswith("stores."):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest ``joinflow.toml``/``datajoint.json`` from ``start`` upward.

    The search stops at a directory holding ``.git`` or ``.hg`` (the project root).
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for name in CONFIG_FILES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
        if (folder / ".git").exists() or (folder / ".hg").exists():
            return None
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".toml":
        if _toml is None:  # pragma: no cover
            raise DataJointError(f"Reading {path} needs Python 3.11+ or the `tomli` package.")
        tree = _toml.loads(text)
    else:
        tree = json.loads(text)
    if not isinstance(tree, dict):
        raise DataJointError(f"Configuration file {path} must hold a table/object at top level.")
    return _flatten(tree)


class _Section:
    """Attribute access to one section: ``config.database.host``."""

    def __init__(self, config: "Config", prefix: str):
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        return self._config[f"{self._prefix}.{name}"]

    def __setattr__(self, name: str, value: Any) -> None:
        self._config[f"{self._prefix}.{name}"] = value

    def __repr__(self) -> str:
        keys = [k for k in self._config.keys() if k.startswith(self._prefix + ".")]
        return repr({k: self._config[k] for k in keys})


class Config:
    """Dictionary-like settings with dotted keys and attribute access."""

    def __init__(self, *, load_environment: bool = True, search_file: bool = True):
        self._runtime: dict[str, Any] = {}
        self._file: dict[str, Any] = {}
        self._env: dict[str, Any] = {}
        self.source_file: Path | None = None
        if load_environment:
            self._read_environment()
        if search_file and not self._lookup("ignore_config_file"):
            path = find_config_file()
            if path is not None:
                self.load(path)

    # -- layers --------------------------------------------------------------------
    def _read_environment(self) -> None:
        self._env = {}
        for var, key in ENV_VARS.items():
            if var in os.environ:
                self._env[key] = _coerce(key, os.environ[var])

    def load(self, path: str | os.PathLike) -> None:
        """Read a ``joinflow.toml`` / ``datajoint.json`` file into the file layer."""
        path = Path(path)
        self._file = {k: _coerce(k, v) for k, v in read_config_file(path).items()}
        self.source_file = path

    def _lookup(self, key: str) -> Any:
        for layer in (self._runtime, self._env, self._file):
            if key in layer:
                return layer[key]
        if key in DEFAULTS:
            return DEFAULTS[key]
        raise KeyError(key)

    # -- mapping interface -----------------------------------------------------------
    def keys(self) -> list[str]:
        return sorted(set(DEFAULTS) | set(self._file) | set(self._env) | set(self._runtime))

    def __getitem__(self, key: str) -> Any:
        try:
            return self._lookup(key)
        except KeyError:
            raise KeyError(f"Unknown configuration key `{key}`.") from None

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in DEFAULTS and not key.startswith("stores."):
            raise DataJointError(
                f"Unknown configuration key `{key}`. Known keys: {', '.join(sorted(DEFAULTS))}."
            )
        if key == "provenance.source" and not isinstance(value, str):
            value = _check_source(value)
        self._runtime[key] = _coerce(key, value) if isinstance(value, str) else value

    def __delitem__(self, key: str) -> None:
        self._runtime.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self._lookup(key)
        except KeyError:
            return default

    def update(self, values: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for key, value in {**(values or {}), **kwargs}.items():
            self[key] = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if any(k.startswith(name + ".") for k in self.keys()):
            return _Section(self, name)
        try:
            return self._lookup(name)
        except KeyError:
            raise AttributeError(f"Unknown configuration key `{name}`.") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name == "source_file":
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __repr__(self) -> str:
        shown = {k: ("***" if k == "database.password" and self[k] else self[k]) for k in self.keys()}
        return f"Config({shown})"

    def copy(self) -> "Config":
        new = Config(load_environment=False, search_file=False)
        new._runtime = copy.deepcopy(self._runtime)
        new._env = copy.deepcopy(self._env)
        new._file = copy.deepcopy(self._file)
        new.source_file = self.source_file
        return new

    @contextlib.contextmanager
    def override(self, **kwargs: Any) -> Iterator["Config"]:
        """Temporarily set keys: ``with config.override(safemode=False, database__host="x"):``."""
        saved = dict(self._runtime)
        try:
            for name, value in kwargs.items():
                self[name.replace("__", ".")] = value
            yield self
        finally:
            self._runtime = saved

    def get_store_spec(self, store: str | None = None) -> dict[str, Any]:
        stores = self["stores"] or {}
        name = store or stores.get("default")
        if not name or name not in stores:
            raise DataJointError(f"Storage '{store or ''}' is requested but not configured in stores.")
        return dict(stores[name])


config = Config()
