"""Configuration: ``dj.config``.

Layers, highest first: assignments made at run time > environment variables >
configuration file (``joinflow.toml`` or ``datajoint.json``, searched from the working
directory upward) > defaults.  Every environment variable beats the file — DataJoint
2.3.5 lets the file beat most ``DJ_*`` variables; see docs/differences-from-datajoint.md.
"""

from __future__ import annotations

import collections.abc
import contextlib
import copy
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

from .errors import ConfigError, DataJointError

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
    # seconds to wait for a server to accept a connection and answer its handshake
    "database.connect_timeout": 10,
    # seconds one statement may wait for the server's answer; None: no limit (long populate queries
    # are legitimate).  MySQL: the client gives up; PostgreSQL: the server cancels the statement.
    "database.read_timeout": None,
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
    # True as DataJoint 2.3.5 behaves (its check is never reached); False: the strict check at declaration
    "jobs.allow_new_pk_fields_in_computed_tables": True,
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
    # <blob> bytes: "datajoint" compresses as DataJoint does (the same bytes, so <blob@>/<hash@>
    # stores deduplicate across clients); "fast" skips zlib for blobs of 256 KiB or more that a
    # sample shows to be incompressible (noise: ~75x faster to write, ~4% larger)
    "blob.compression": "datajoint",
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
    "JOINFLOW_CONNECT_TIMEOUT": "database.connect_timeout",
    "JOINFLOW_READ_TIMEOUT": "database.read_timeout",
    "DJ_PROVENANCE_CAPTURE": "provenance.capture",
    "DJ_PROVENANCE_SOURCE": "provenance.source",
    "DJ_STORES": "stores",
    "JOINFLOW_DATABASE_URL": "database.url",
    "JOINFLOW_BACKEND": "database.backend",
    "JOINFLOW_BLOB_COMPRESSION": "blob.compression",
    "JOINFLOW_HOST": "database.host",
    "JOINFLOW_USER": "database.user",
    "JOINFLOW_PASSWORD": "database.password",
    "JOINFLOW_PORT": "database.port",
    "JOINFLOW_DATABASE_NAME": "database.name",
    "JOINFLOW_SAFEMODE": "safemode",
}

CONFIG_FILES = ("joinflow.toml", "datajoint.json")

# Settings that only a database server uses.  When any of them is given and `database.backend` is
# not, the backend is MySQL, DataJoint's default: code written for DataJoint that sets only
# `database.host` / `database.user` must reach its server, never open a local SQLite file.  SQLite
# is the default only when none of them (and no URL) is given: the zero-set-up laptop case.
SERVER_KEYS = ("database.host", "database.user", "database.password", "database.port", "database.use_tls")
# Settings that say which database to use; with none of them set anywhere, joinflow is unconfigured
# (SQLite `joinflow.db` in the working directory), which an orchestrated step refuses.
DATABASE_KEYS = ("database.url", "database.backend", "database.name") + SERVER_KEYS

# -- secrets -------------------------------------------------------------------------------------
# Every secret joinflow is given (passwords, URL passwords, store keys) is masked wherever joinflow
# shows text: reprs of the configuration, error messages, log records and the command line's output.
MASK = "***"
_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential", "private_key", "access_key",
                 "account_key", "api_key", "apikey", "session_key")
_SECRET_NAMES = ("pass", "pwd", "key")  # exact names (fsspec's s3 options call the access key `key`)
_NOT_SECRET_SUFFIXES = ("_length", "_len", "_count", "_size", "_prefix")
# scheme://user:PASSWORD@  (SQLAlchemy allows anything but `@` in the password)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.\-]*://[^:/@\s'\"]*:)([^@\s]*)@")
_WORD = "|".join(_SECRET_WORDS + ("pwd",))
# name=VALUE, name: VALUE, 'name': 'VALUE', "name": "VALUE" for secret-like names
_KEY_VALUE = re.compile(
    # a name starts where a word starts (the lookbehind): tried from every character of a long word,
    # the match took quadratic time (a 90 kB error stack without spaces took minutes in Job.error)
    rf"""(?P<key>(?P<kq>['"]?)(?<![\w.\-])[\w.\-]*(?:{_WORD})[\w\-]*(?P=kq)\s*[:=]\s*)"""
    r"""(?:(?P<q>['"])(?:(?!(?P=q)).)*(?P=q)|[^\s,;}&)\]'"]+)""", re.IGNORECASE)
_known_secrets: set[str] = set()  # literal secret values seen in this process (4 characters or more)


def is_secret_name(name: str) -> bool:
    """True for configuration keys and store options that hold secrets (``database.password``,
    ``secret_key``, ``access_key``, ``token``, ...)."""
    last = str(name).lower().rsplit(".", 1)[-1]
    if last.endswith(_NOT_SECRET_SUFFIXES):
        return False
    return last in _SECRET_NAMES or any(word in last for word in _SECRET_WORDS)


def remember_secret(value: Any) -> None:
    """Mask ``value`` (a password, a key) wherever joinflow shows text from now on."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str) and len(value) >= 4:
        _known_secrets.add(value)


def remember_url(text: str) -> None:
    """Mask the password of every URL in ``text`` wherever joinflow shows text from now on."""
    if "://" not in text:
        return
    for match in _URL_PASSWORD.finditer(text):
        remember_secret(match.group(2))
        remember_secret(unquote(match.group(2)))  # as the driver gets it


def _remember_secrets_in(key: str, value: Any) -> None:
    """Remember the secrets inside a configuration value (recursing into dicts and lists)."""
    if isinstance(value, dict):
        for name, item in value.items():
            _remember_secrets_in(str(name), item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _remember_secrets_in(key, item)
    elif isinstance(value, str):
        remember_url(value)
        if is_secret_name(key):
            remember_secret(value)


_NOT_A_SECRET = ("", "yes", "no", "none", "null", "true", "false", "***")


def _mask_pair(match: re.Match) -> str:
    """``password=...`` -> ``password=***``; ``token_length: 8`` and ``(using password: YES)`` stay."""
    name = match.group("key").strip(" \t:='\"")
    value = match.group(0)[len(match.group("key")):]
    if not is_secret_name(name) or value.strip("'\"").lower() in _NOT_A_SECRET:
        return match.group(0)
    quote = match.group("q") or ""
    return match.group("key") + quote + MASK + quote


def mask_text(text: Any) -> str:
    """``text`` with every secret masked: URL passwords, ``password=...``-style pairs, and every
    secret value joinflow has been given.  The one masking function of joinflow."""
    text = str(text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _KEY_VALUE.sub(_mask_pair, text)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_value(value: Any, key: str = "", *, by_name: bool = True) -> Any:
    """A copy of a configuration value (a dict, a list, a string) with its secrets masked, to show.

    ``by_name``: also mask every value under a secret-like name (``password``, ``secret_key``, ...);
    off for documents of data (the command line's JSON), where only :func:`mask_text` applies."""
    if isinstance(value, dict):
        return {name: mask_value(item, str(name), by_name=by_name) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_value(item, key, by_name=by_name) for item in value)
    if (by_name and is_secret_name(key) and value not in (None, "")
            and not isinstance(value, (bool, int, float))):
        return MASK
    if isinstance(value, (str, bytes)):
        return mask_text(value.decode(errors="replace") if isinstance(value, bytes) else value)
    return value


class MaskedDict(dict):
    """A dict whose repr masks its secrets (``config["stores"]`` and each store's spec)."""

    def __repr__(self) -> str:
        return repr(mask_value(dict(self)))

    __str__ = __repr__


def _masked_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return MaskedDict({name: _masked_dicts(item) for name, item in value.items()})
    return value


class _MaskingFilter(logging.Filter):
    """Masks secrets in the records of the ``joinflow`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is left to logging's own error report
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


logging.getLogger("joinflow").addFilter(_MaskingFilter())


def check_lease_timeout(value: Any) -> float:
    """``jobs.lease_timeout``: a finite number of seconds above 0.  A lease of 0 or less (or NaN)
    would let every worker take over every key at once, so the key would be made twice."""
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            number = None
    if number is None or not (0 < number < float("inf")):
        raise DataJointError(
            f"Configuration key `jobs.lease_timeout` must be a number of seconds above 0, got {value!r}: a "
            "reservation is taken over once its lease has run out, so a lease of 0 or less lets another worker "
            "make the same key at the same time. Set e.g. dj.config['jobs.lease_timeout'] = 300.")
    return number


BLOB_COMPRESSION = ("datajoint", "fast")


def _coerce(key: str, value: Any) -> Any:
    """Turn an environment/file string into the type of the key's default."""
    if key in ("database.connect_timeout", "database.read_timeout"):
        return _check_timeout(key, value)
    if key == "jobs.lease_timeout":
        return check_lease_timeout(value)
    if key == "blob.compression":
        if value not in BLOB_COMPRESSION:
            raise DataJointError(f"Configuration key `blob.compression` is 'datajoint' or 'fast', not {value!r}.")
        return value
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


def _check_timeout(key: str, value: Any) -> float | int | None:
    """``database.connect_timeout`` (required) / ``database.read_timeout`` (None = no limit): seconds > 0."""
    text = value.strip() if isinstance(value, str) else value
    if key == "database.read_timeout" and (text is None or (isinstance(text, str) and text.lower() in ("", "none"))):
        return None
    try:
        if isinstance(text, bool):
            raise ValueError
        seconds = float(text)
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or not seconds > 0 or seconds == float("inf"):
        hint = " or None (no limit)" if key == "database.read_timeout" else ""
        raise ConfigError(f"Configuration key `{key}` must be a number of seconds greater than 0{hint}, "
                          f"got {value!r}.")
    return int(seconds) if seconds == int(seconds) else seconds


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


_FIX_FILE = "Fix the file, or set DJ_IGNORE_CONFIG_FILE=1 to start without it."


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a ``joinflow.toml`` / ``datajoint.json`` file, flattened to dotted keys.

    A file that cannot be read or parsed raises :class:`ConfigError` naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the configuration file {path}: {exc}. {_FIX_FILE}") from None
    if path.suffix == ".toml":
        if _toml is None:  # pragma: no cover
            raise ConfigError(f"Reading {path} needs Python 3.11+ or the `tomli` package.")
        try:
            tree = _toml.loads(text)
        except _toml.TOMLDecodeError as exc:  # its message ends with "(at line L, column C)"
            raise ConfigError(f"The configuration file {path} is not valid TOML: {mask_text(exc)}. "
                              f"{_FIX_FILE}") from None
    else:
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"The configuration file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno}. {_FIX_FILE}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"The configuration file {path} must hold a table/object at top level. {_FIX_FILE}")
    return _flatten(tree)


def _store_value(key: str, value: Any) -> Any:
    """A value as a configuration layer keeps it: its secrets remembered (to be masked in every
    text joinflow shows) and dicts (``stores``) as :class:`MaskedDict`, whose repr masks them."""
    _remember_secrets_in(key, value)
    if key == "stores" or key.startswith("stores."):
        return _masked_dicts(value)
    return value


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
        return repr({k: mask_value(self._config[k], k) for k in keys})


class Config:
    """Dictionary-like settings with dotted keys and attribute access."""

    def __init__(self, *, load_environment: bool = True, search_file: bool = True):
        self._runtime: dict[str, Any] = {}
        self._file: dict[str, Any] = {}
        self._env: dict[str, Any] = {}
        self.source_file: Path | None = None
        # A malformed environment variable or file is raised by every read of a setting: not at
        # `import joinflow`, so that it comes as a clear error, and never as a half-read
        # configuration.  load() of a good file clears the file's error, not the environment's.
        self._env_error: ConfigError | None = None
        self._file_error: ConfigError | None = None
        if load_environment:
            try:
                self._read_environment()
            except ConfigError as exc:
                self._env_error = exc
        if search_file and not self._value("ignore_config_file"):
            path = find_config_file()
            if path is not None:
                try:
                    self.load(path)
                except ConfigError as exc:
                    self._file_error = exc

    @property
    def _error(self) -> ConfigError | None:
        return self._env_error or self._file_error

    # -- layers --------------------------------------------------------------------
    def _read_environment(self) -> None:
        self._env = {}
        for var, key in ENV_VARS.items():
            if var in os.environ:
                try:
                    self._env[key] = _store_value(key, _coerce(key, os.environ[var]))
                except DataJointError as exc:
                    raise ConfigError(f"Environment variable {var}: {exc}") from None

    def load(self, path: str | os.PathLike) -> None:
        """Read a ``joinflow.toml`` / ``datajoint.json`` file into the file layer.

        A malformed file raises :class:`ConfigError` naming the file (and the line)."""
        path = Path(path)
        values = {}
        for key, value in read_config_file(path).items():
            try:
                values[key] = _store_value(key, _coerce(key, value))
            except DataJointError as exc:
                raise ConfigError(f"The configuration file {path}: {exc} {_FIX_FILE}") from None
        self._file = values
        self.source_file = path
        self._file_error = None

    def _lookup(self, key: str) -> Any:
        if self._error is not None:
            raise self._error
        return self._value(key)

    def is_set(self, key: str) -> bool:
        """Whether ``key`` was given (in code, the environment or the file), not just defaulted."""
        if self._error is not None:
            raise self._error
        return any(key in layer for layer in (self._runtime, self._env, self._file))

    def _value(self, key: str) -> Any:
        for layer in (self._runtime, self._env, self._file):
            if key in layer:
                return layer[key]
        if key == "database.backend" and any(k in layer for k in SERVER_KEYS
                                             for layer in (self._runtime, self._env, self._file)):
            return "mysql"  # a server setting and no backend: DataJoint's default backend
        if key in DEFAULTS:
            return DEFAULTS[key]
        raise KeyError(key)

    # -- mapping interface -----------------------------------------------------------
    def keys(self) -> list[str]:
        if self._error is not None:
            raise self._error
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
        if key == "jobs.lease_timeout":
            value = check_lease_timeout(value)
        if isinstance(value, str) or key in ("database.connect_timeout", "database.read_timeout", "blob.compression"):
            value = _coerce(key, value)
        self._runtime[key] = _store_value(key, value)

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
        if self._error is not None:
            return f"Config(<unusable: {self._error}>)"
        shown = {k: mask_value(self[k], k) for k in self.keys()}
        return f"Config({shown})"

    __str__ = __repr__

    def copy(self) -> "Config":
        new = Config(load_environment=False, search_file=False)
        new._runtime = copy.deepcopy(self._runtime)
        new._env = copy.deepcopy(self._env)
        new._file = copy.deepcopy(self._file)
        new.source_file = self.source_file
        new._env_error, new._file_error = self._env_error, self._file_error
        return new

    @contextlib.contextmanager
    def override(self, **kwargs: Any) -> Iterator["Config"]:
        """Temporarily set keys: ``with config.override(safemode=False, database__host="x"):``, or a
        section as a dict, as DataJoint takes it: ``override(jobs={"add_job_metadata": True})``."""
        saved = dict(self._runtime)
        try:
            for name, value in kwargs.items():
                for key, item in self._flatten(name.replace("__", "."), value):
                    self[key] = item
            yield self
        finally:
            self._runtime = saved

    @staticmethod
    def _flatten(name: str, value: Any) -> list[tuple[str, Any]]:
        """``("jobs", {"a": 1})`` -> ``[("jobs.a", 1)]``: a dict given for a section (a name that is
        not itself a key, such as ``jobs`` or ``database``) sets the section's keys."""
        if name in DEFAULTS or name.startswith("stores.") or not isinstance(value, collections.abc.Mapping):
            return [(name, value)]
        if not any(k.startswith(name + ".") for k in DEFAULTS):
            raise DataJointError(f"Unknown configuration section or key `{name}`. Known keys: "
                                 f"{', '.join(sorted(DEFAULTS))}.")
        items = []
        for sub, item in value.items():
            items.extend(Config._flatten(f"{name}.{sub}", item))
        return items

    def get_store_spec(self, store: str | None = None) -> dict[str, Any]:
        stores = self["stores"] or {}
        name = store or stores.get("default")
        if not name or name not in stores:
            raise DataJointError(f"Storage '{store or ''}' is requested but not configured in stores.")
        return dict(stores[name])


config = Config()
