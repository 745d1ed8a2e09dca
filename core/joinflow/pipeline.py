"""The pipeline interface: the one surface the orchestrator adapters consume.

A :class:`Pipeline` is built from modules, schemas or table classes.  Its *steps* are the
auto-populated (Imported/Computed) tables in topological order.  Each step has an
importable identity (``"module:Class"``) so that any worker process on any machine can
rebuild it with :func:`load_step`, upstream steps, a pending-key count (one anti-join),
pending keys in batches, ``run()`` that populates exactly the given keys (or one hash
shard) through the job table, ``status()`` and a cheap ``change_token()``.

A pipeline's structure can be saved as a *manifest* (:meth:`Pipeline.to_manifest`, or
``python -m joinflow.pipeline manifest MODULE -o pipeline.json``): JSON with the format name
and version, the modules, schemas and database (backend, host, database name; never
credentials), every table (``module:Class`` name, tier, schema, table name, full table name,
parents, parts) in topological order, the steps with their upstream steps, and ``hash``:
``"sha256:"`` + the SHA-256 of the canonical JSON (sorted keys, separators ``,`` and ``:``,
ASCII) of every other key.  :meth:`Pipeline.from_manifest` rebuilds the nodes and steps from
it without importing a module or connecting (a step imports its class on first use), so an
orchestrator can build its task graph without a database.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
import types
from typing import Any, Iterable, Iterator, Sequence

from .autopopulate import AutoPopulate
from .errors import DataJointError
from .table import Table
from .user_tables import Part, UserTable

TIERS = ("Lookup", "Manual", "Imported", "Computed")


def step_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def load_class(name: str) -> type:
    """``"package.module:Class"`` (or ``Master.Part``) -> the table class, importing the module."""
    _check_step_name(name)
    module_name, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_step(name: str) -> "Step":
    return Step(load_class(name))


def _check_step_name(name: str) -> None:
    module_name, _, qualname = name.partition(":")
    if not module_name or not qualname:
        raise DataJointError(f"Step name {name!r} must look like 'package.module:Class'.")


def _tier(cls: type) -> str:
    for base in cls.__mro__:
        if base.__name__ in TIERS and base.__module__ == "joinflow.user_tables":
            return base.__name__
    return "Part" if issubclass(cls, Part) else "Table"


def shard_of(key: dict, nshards: int) -> int:
    """Stable shard number of a key (same on every machine and Python process)."""
    text = json.dumps({k: str(v) for k, v in sorted(key.items())}, sort_keys=True)
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big") % nshards


class TableNode:
    """Any table of the pipeline (sources included) as the adapters see it.

    ``cls`` is imported on first use when the node comes from a manifest
    (:meth:`Pipeline.from_manifest`); ``name``, ``tier``, ``schema``, ``table_name``,
    ``full_table_name``, ``parents`` and ``parts`` never need the module or the database.
    """

    def __init__(self, name: str, cls: type | None, tier: str, full_table_name: str,
                 parents: Iterable[str] = (), parts: Iterable[str] = (), *,
                 schema: str | None = None, table_name: str | None = None):
        self.name = name  # importable "module:Class"
        self._cls = cls
        self.tier = tier
        self.full_table_name = full_table_name
        self.parents = list(parents)  # full table names
        self.parts = list(parts)
        self.schema = schema if schema is not None or cls is None else cls.database
        self.table_name = table_name if table_name is not None or cls is None else cls().table_name

    def __repr__(self) -> str:
        return f"TableNode({self.name!r}, tier={self.tier!r})"

    @property
    def cls(self) -> type:
        if self._cls is None:
            self._cls = load_class(self.name)
        return self._cls

    @property
    def class_name(self) -> str:
        return self.name.rpartition(":")[2].rpartition(".")[2]

    @property
    def table(self) -> Table:
        return self.cls()

    @property
    def comment(self) -> str:
        return self.cls().heading.table_comment

    @property
    def is_step(self) -> bool:
        return self.tier in ("Imported", "Computed")


class Step:
    """One auto-populated table as a unit of orchestrated work.

    ``cls`` is the table class, or its importable name ``"module:Class"``: then the module
    is imported on first use (so a step from a manifest costs nothing until it runs).
    """

    def __init__(self, cls: type | str, upstream: Sequence[str] = (), *, full_table_name: str | None = None,
                 schema: str | None = None, table_name: str | None = None):
        if isinstance(cls, str):
            self.name = cls
            self._cls = None
            _check_step_name(cls)
        else:
            if not (isinstance(cls, type) and issubclass(cls, AutoPopulate)):
                raise DataJointError(f"{cls!r} is not an Imported or Computed table; only those are steps.")
            self._cls = cls
            self.name = step_name(cls)
        self.upstream = list(upstream)
        self._full_table_name = full_table_name
        self.schema = schema
        self.table_name = table_name

    def __repr__(self) -> str:
        return f"Step({self.name!r})"

    @property
    def cls(self) -> type:
        if self._cls is None:
            cls = load_class(self.name)
            if not (isinstance(cls, type) and issubclass(cls, AutoPopulate)):
                raise DataJointError(f"{self.name} is not an Imported or Computed table; only those are steps.")
            self._cls = cls
        return self._cls

    @property
    def class_name(self) -> str:
        return self.name.rpartition(":")[2].rpartition(".")[2]

    @property
    def table(self):
        return self.cls()

    @property
    def full_table_name(self) -> str:
        if self._full_table_name is None:
            self._full_table_name = self.cls().full_table_name
        return self._full_table_name

    # -- planning ---------------------------------------------------------------------------
    def pending_count(self, *restrictions) -> int:
        return len(self.cls().pending(*restrictions))

    def pending_keys(self, batch_size: int = 100, *restrictions) -> Iterator[list[dict]]:
        """The pending keys in batches of at most ``batch_size`` (one query)."""
        keys = self.cls().pending(*restrictions).keys(order_by="KEY")
        for start in range(0, len(keys), batch_size):
            yield keys[start : start + batch_size]

    def shard_keys(self, shard: int, nshards: int, *restrictions) -> list[dict]:
        if not 0 <= shard < nshards:
            raise DataJointError(f"shard must be in 0..{nshards - 1}, got {shard}.")
        return [k for k in self.cls().pending(*restrictions).keys(order_by="KEY") if shard_of(k, nshards) == shard]

    def plan(self, nshards: int, *restrictions) -> list[dict]:
        """Shard descriptors with work in them: ``{"step", "shard", "nshards", "keys"}`` (keys = count)."""
        counts = [0] * nshards
        for key in self.cls().pending(*restrictions).keys():
            counts[shard_of(key, nshards)] += 1
        return [{"step": self.name, "shard": s, "nshards": nshards, "keys": n} for s, n in enumerate(counts) if n]

    # -- running ----------------------------------------------------------------------------------
    def run(self, keys: Iterable[dict] | None = None, *, shard: int | None = None, nshards: int | None = None,
            restrictions: Sequence = (), retry_errors: bool = False, suppress_errors: bool = True,
            max_calls: int | None = None, count_pending: bool = True) -> dict:
        """Populate exactly ``keys`` (or one shard of the pending keys) through the job table.

        Safe under overlapping runs and retries: the job table reserves each key for one
        worker.  ``retry_errors`` re-pends errors of these keys first (an orchestrator retry).
        """
        table = self.cls()
        start = time.time()
        if shard is not None:
            keys = self.shard_keys(shard, nshards or 1, *restrictions)
            restrictions = ()
        if keys is not None:
            keys = [dict(k) for k in keys]
            if not keys:
                return self._summary(0, [], start)
        jobs = table.jobs
        if retry_errors:
            errored = jobs.errors if keys is None else jobs.errors.restrict(keys, semantic_check=False)
            errored.delete_quick()
        conditions = list(restrictions) + ([keys] if keys is not None else [])
        result = table.populate(*conditions, reserve_jobs=True, suppress_errors=suppress_errors,
                                max_calls=max_calls)
        return self._summary(result["success_count"], result["error_list"], start, keys, count_pending)

    def _summary(self, success: int, errors: list, start: float, keys=None, count_pending: bool = True) -> dict:
        table = self.cls()
        if count_pending:
            pending = len(table.pending(keys) if keys is not None else table.pending())
        else:
            pending = None
        return {
            "step": self.name,
            "table": self.full_table_name,
            "rows_added": success,
            "errors": [{"key": k, "error": str(e)} for k, e in errors],
            "error_count": len(errors),
            "pending_left": pending,
            "duration": round(time.time() - start, 3),
        }

    # -- observing ----------------------------------------------------------------------------------
    def errors(self, keys: Iterable[dict] | None = None, limit: int | None = None) -> list[dict]:
        """Errors recorded in the job table: key, message, stack (text) and time."""
        all_jobs = self.cls().jobs
        n = all_jobs.cols  # the job columns' names (job_<name> where the key has an attribute <name>)
        jobs = all_jobs.errors
        if keys is not None:
            jobs = jobs.restrict([dict(k) for k in keys], semantic_check=False)
        pk = all_jobs.key_names  # the key source's key (a part of the primary key for some tables)
        rows = jobs.to_dicts(order_by=f"{n.completed_time} DESC", limit=limit)
        result = []
        for row in rows:
            stack = row.get(n.error_stack)
            result.append({"key": {k: row[k] for k in pk}, "error_message": row[n.error_message],
                           "error_stack": stack.decode(errors="replace") if isinstance(stack, bytes) else stack,
                           "time": row.get(n.completed_time)})
        return result

    def row_count(self) -> int:
        return len(self.cls())

    def status(self) -> dict:
        """done / pending / reserved / error / ignore counts."""
        table = self.cls()
        remaining, total = table.progress()
        jobs = table.jobs.progress()
        return {"done": total - remaining, "pending": remaining, "reserved": jobs["reserved"],
                "error": jobs["error"], "ignore": jobs["ignore"], "total": total}

    def change_token(self) -> str:
        """Changes when the step's inputs or outputs change (row counts of it and its parents)."""
        table = self.cls()
        conn = table.connection
        parents = conn.dependencies.load().parents(table.full_table_name)
        from .table import FreeTable

        counts = [len(FreeTable(conn, p)) for p in sorted(parents)] + [len(table)]
        return hashlib.md5(json.dumps(counts).encode()).hexdigest()[:16]


class Pipeline:
    """The tables of one or more modules/schemas, and their computed steps in topological order.

    ``Pipeline(*modules_or_schemas_or_classes)`` reads the foreign-key graph from the database;
    ``Pipeline.from_manifest(path)`` rebuilds the same nodes and steps from a manifest alone.
    """

    def __init__(self, *sources: Any):
        classes: list[type] = []
        for source in sources:
            classes.extend(_classes_of(source))
        if not classes:
            raise DataJointError("Pipeline needs modules, schemas or table classes that declare tables.")
        seen: dict[str, type] = {}
        for cls in classes:
            seen.setdefault(cls().full_table_name, cls)
        conn = next(iter(seen.values()))().connection
        deps = conn.dependencies.load()
        order = deps.topological(seen)
        self.connection = conn
        self.nodes: list[TableNode] = []
        for full in order:
            cls = seen[full]
            node = TableNode(step_name(cls), cls, _tier(cls), full,
                             parents=[p for p in deps.parents(full) if p in seen and deps.master_of(full) != p],
                             parts=[p for p in deps.parts_of(full)])
            self.nodes.append(node)
        self._by_table = {n.full_table_name: n for n in self.nodes}
        self.steps: list[Step] = []
        for node in self.nodes:
            if node.is_step:
                self.steps.append(Step(node.cls, self._upstream_steps(node.full_table_name, deps),
                                       full_table_name=node.full_table_name, schema=node.schema,
                                       table_name=node.table_name))
        self.manifest: dict | None = None

    def _upstream_steps(self, full: str, deps) -> list[str]:
        """Nearest auto-populated ancestors (through source tables, not through other steps)."""
        found: list[str] = []
        frontier = list(deps.parents(full))
        seen = set()
        while frontier:
            parent = frontier.pop()
            if parent in seen:
                continue
            seen.add(parent)
            node = self._by_table.get(parent)
            master = deps.master_of(parent)
            if node is not None and node.is_step:
                found.append(node.name)
            elif master is not None and master in self._by_table and self._by_table[master].is_step:
                found.append(self._by_table[master].name)  # a part belongs to its master's step
            else:
                frontier.extend(deps.parents(parent))
        return sorted(set(found) - {step_name(self._by_table[full].cls)})

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name or s.class_name == name or s.full_table_name == name:
                return s
        raise DataJointError(f"No step {name!r} in this pipeline; steps: {[s.name for s in self.steps]}")

    def __iter__(self):
        return iter(self.steps)

    def status(self) -> dict[str, dict]:
        return {s.name: s.status() for s in self.steps}

    def run(self, **kwargs) -> list[dict]:
        """Run every step in order (for scripts and tests; orchestrators call steps themselves)."""
        return [s.run(**kwargs) for s in self.steps]


    # -- manifest: the pipeline's structure without its modules or its database ----------------
    def to_manifest(self) -> dict:
        """The structure as a JSON-able dict (see :data:`MANIFEST_FORMAT`), with a content hash.

        An orchestrator builds its task graph from it (:meth:`from_manifest`) without
        importing the pipeline modules or connecting; tasks import and connect when they run.
        """
        if self.manifest is not None:
            return dict(self.manifest)
        url = self.connection.url if self.connection is not None else None
        body = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "modules": sorted({n.name.partition(":")[0] for n in self.nodes}),
            "schemas": sorted({n.schema for n in self.nodes if n.schema}),
            "database": None if url is None else {
                "backend": url.get_backend_name(), "host": url.host,
                "name": (url.database or "").replace(os.sep, "/").rsplit("/", 1)[-1] or None},
            "tables": [{"name": n.name, "tier": n.tier, "schema": n.schema, "table_name": n.table_name,
                        "full_table_name": n.full_table_name, "parents": list(n.parents), "parts": list(n.parts)}
                       for n in self.nodes],
            "steps": [{"name": s.name, "upstream": list(s.upstream)} for s in self.steps],
        }
        return {**body, "hash": _manifest_hash(body)}

    def write_manifest(self, path: str | os.PathLike) -> dict:
        """Write :meth:`to_manifest` to ``path`` (JSON, stable key order); returns it."""
        manifest = self.to_manifest()
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # readers (a DAG parser) never see half a file
        return manifest

    @classmethod
    def from_manifest(cls, manifest: "str | os.PathLike | dict") -> "Pipeline":
        """A pipeline rebuilt from a manifest (a dict or a JSON file): no import, no database.

        Nodes and steps have their names, tiers, schemas, tables, parents, parts and upstream
        steps; a step's class (and with it the database) is loaded only when it is used.
        """
        data = read_manifest(manifest)
        self = cls.__new__(cls)
        self.connection = None
        self.manifest = data
        self.nodes = [TableNode(t["name"], None, t["tier"], t["full_table_name"], t.get("parents", ()),
                                t.get("parts", ()), schema=t.get("schema"), table_name=t.get("table_name"))
                      for t in data["tables"]]
        self._by_table = {n.full_table_name: n for n in self.nodes}
        by_name = {n.name: n for n in self.nodes}
        self.steps = []
        for entry in data["steps"]:
            node = by_name.get(entry["name"])
            if node is None or not node.is_step:
                raise DataJointError(f"Manifest step {entry['name']!r} is not an Imported/Computed table of its "
                                     "'tables'; regenerate the manifest (python -m joinflow.pipeline manifest ...).")
            self.steps.append(Step(entry["name"], entry.get("upstream", ()), full_table_name=node.full_table_name,
                                   schema=node.schema, table_name=node.table_name))
        return self

    @property
    def manifest_hash(self) -> str:
        return self.to_manifest()["hash"]


MANIFEST_FORMAT = "joinflow-pipeline-manifest"
MANIFEST_VERSION = 1


def _manifest_hash(body: dict) -> str:
    canonical = json.dumps({k: v for k, v in body.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def read_manifest(manifest: "str | os.PathLike | dict") -> dict:
    """Load and check a manifest (format, version, content hash); errors say how to fix it."""
    where = "the manifest dict"
    if not isinstance(manifest, dict):
        where = os.fspath(manifest)
        try:
            with open(where, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise DataJointError(f"Pipeline manifest {where!r} does not exist; create it with "
                                 f"`python -m joinflow.pipeline manifest MODULE -o {where}`.") from None
        except json.JSONDecodeError as exc:
            raise DataJointError(f"Pipeline manifest {where!r} is not valid JSON ({exc}); regenerate it with "
                                 "`python -m joinflow.pipeline manifest MODULE -o FILE`.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataJointError(f"{where} is not a joinflow pipeline manifest (no \"format\": \"{MANIFEST_FORMAT}\").")
    if manifest.get("version") != MANIFEST_VERSION:
        raise DataJointError(f"{where} has manifest version {manifest.get('version')!r}; this joinflow reads "
                             f"version {MANIFEST_VERSION}: regenerate it with this joinflow.")
    missing = [k for k in ("tables", "steps", "hash") if k not in manifest]
    if missing:
        raise DataJointError(f"{where} lacks {missing}; regenerate it.")
    if _manifest_hash(manifest) != manifest["hash"]:
        raise DataJointError(f"{where}: content hash mismatch (edited by hand or truncated); regenerate it with "
                             "`python -m joinflow.pipeline manifest MODULE -o FILE`.")
    return manifest


def manifest_main(argv: Sequence[str] | None = None) -> int:
    """``python -m joinflow.pipeline manifest MODULE [MODULE ...] -o FILE [--url URL]``.

    Imports the modules (which declares their tables on the configured database), loads the
    foreign-key graph once and writes the manifest.  ``-o -`` prints it.  Meant to be reused
    by the ``joinflow`` command line as ``joinflow manifest``.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m joinflow.pipeline",
                                     description="Write a joinflow pipeline manifest (JSON).")
    sub = parser.add_subparsers(dest="command", required=True)
    mf = sub.add_parser("manifest", help="the pipeline's structure as JSON, for orchestrators")
    mf.add_argument("modules", nargs="+", help="importable module names of the pipeline")
    mf.add_argument("-o", "--output", default="-", help="file to write (default: - = stdout)")
    mf.add_argument("--url", default=None, help="database URL (default: JOINFLOW_DATABASE_URL / dj.config)")
    mf.add_argument("--path", action="append", default=[], help="prepend to sys.path (repeatable)")
    args = parser.parse_args(argv)
    if args.url:
        from .settings import config

        config["database.url"] = args.url
    for entry in reversed(args.path):
        sys.path.insert(0, entry)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        modules = [importlib.import_module(name) for name in args.modules]
        pipeline = Pipeline(*modules)
        if args.output == "-":
            print(json.dumps(pipeline.to_manifest(), indent=1, sort_keys=True))
        else:
            manifest = pipeline.write_manifest(args.output)
            print(f"wrote {args.output}: {len(manifest['tables'])} tables, {len(manifest['steps'])} steps, "
                  f"{manifest['hash'][:19]}", file=sys.stderr)
    except (DataJointError, ImportError) as exc:
        print(f"joinflow: {exc}", file=sys.stderr)
        return 2
    return 0


def _classes_of(source: Any) -> list[type]:
    from .schemas import Schema

    if isinstance(source, str):
        source = importlib.import_module(source)
    if isinstance(source, Schema):
        return _with_parts(source.classes)
    if isinstance(source, type) and issubclass(source, UserTable):
        return _with_parts([source])
    if isinstance(source, types.ModuleType):
        found = [v for v in vars(source).values()
                 if isinstance(v, type) and issubclass(v, UserTable) and not issubclass(v, Part)
                 and v.database is not None]
        return _with_parts(found)
    if isinstance(source, (list, tuple)):
        return [c for s in source for c in _classes_of(s)]
    raise DataJointError(f"Cannot build a pipeline from {source!r}: give modules, schemas or table classes.")


def _with_parts(classes: Iterable[type]) -> list[type]:
    result = []
    for cls in classes:
        result.append(cls)
        for member in vars(cls).values():
            if isinstance(member, type) and issubclass(member, Part):
                result.append(member)
    return result


if __name__ == "__main__":  # python -m joinflow.pipeline manifest MODULE -o FILE
    sys.exit(manifest_main())
