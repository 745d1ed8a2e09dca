"""The ``joinflow`` command line.

    joinflow [--database-url URL] [--json] COMMAND ...

    joinflow status MODULE[:Table]                   done / pending / reserved / error per table
    joinflow populate MODULE[:Table] [--workers N]   compute pending keys
    joinflow jobs MODULE [--table T] [--errors] [--clear [--all] [--yes]]
    joinflow diagram MODULE -o pipeline.svg|.png|.mmd|.dot [--status]
    joinflow schema list | joinflow schema describe SCHEMA
    joinflow gc [--dry-run] [--store NAME] [--grace-period SECONDS] [--yes] SCHEMA...
    joinflow copy --from URL --to URL SCHEMA[=NEW]... [--from-config F] [--to-config F] [--dry-run] [--resume]
    joinflow copy --discard --to URL SCHEMA[=NEW]... [--to-config F]

MODULE is an importable module name (the working directory is on the path), a path to a
``.py`` file, or the name of a schema in the database (its tables are read from the
catalog, as a virtual module).  ``--database-url`` (else ``JOINFLOW_DATABASE_URL`` or the
configuration file) chooses the database.  ``--json`` prints one JSON document on stdout,
for scripts and agents; errors then come as ``{"error": ..., "exit_code": ...}`` too.

Exit codes: 0 success; 1 the command ran but failed or recorded errors (populate errors,
a refused or failed copy, a database error); 2 bad arguments (unknown module, table,
schema, option).
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import importlib
import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from .errors import DataJointError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments: exit code 2."""


class CommandFailed(Exception):
    """The command ran and failed: exit code 1 (the message is already specific)."""


# -- output ---------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, Path)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _print_json(document: Any) -> None:
    from .settings import mask_value

    print(json.dumps(mask_value(document, by_name=False), indent=2, default=_jsonable))


class _MaskingStream:
    """stdout/stderr while a command runs: every secret joinflow knows is masked in what is written
    (messages, tables, JSON, progress, tracebacks)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        from .settings import mask_text

        self._stream.write(mask_text(text) if isinstance(text, str) and text.strip() else text)
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _table(rows: list[list[Any]], header: list[str], right: set[int] = frozenset()) -> str:
    """A plain text table, columns as wide as their widest cell."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- database and modules ---------------------------------------------------------------------------
def _apply_database_url(url: str | None) -> None:
    if not url:
        return
    from sqlalchemy.engine import make_url

    try:
        make_url(url)
    except Exception as exc:
        from .settings import mask_text

        raise UsageError(f"--database-url {mask_text(url)!r} is not a database URL ({mask_text(exc)}). Write e.g. "
                         "sqlite:///joinflow.db or postgresql://user@host/db.") from None
    from .settings import config

    config["database.url"] = url
    os.environ["JOINFLOW_DATABASE_URL"] = url  # for worker processes


def _connection():
    from .connection import conn

    return conn()


def _describe_db() -> str:
    try:
        return _connection().url.render_as_string(hide_password=True)
    except Exception:  # pragma: no cover - only used in messages
        return "the configured database"


def _import_path(path: Path):
    if not path.is_file():
        raise UsageError(f"Module file {str(path)!r} does not exist.")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))
    return importlib.import_module(path.stem)


def _schema_exists(name: str) -> bool:
    conn = _connection()
    return conn.backend.schema_exists(conn, name)


def _virtual(name: str):
    from .schemas import virtual_schema

    if not _schema_exists(name):
        raise UsageError(f"Schema `{name}` does not exist in {_describe_db()}. `joinflow schema list` shows the "
                         "schemas there; is --database-url (or JOINFLOW_DATABASE_URL) right?")
    return virtual_schema(name, connection=_connection())


def load_module(name: str):
    """A pipeline module by import name or file path; else the schema of that name, as a virtual module."""
    if name.endswith(".py") or os.sep in name:
        return _import_path(Path(name))
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin in (None, "namespace") and "." not in name and name.islower():
        try:  # a folder without __init__.py that happens to share the schema's name: the schema wins
            return _virtual(name)
        except UsageError:
            pass
    if spec is None:
        if "." not in name and name.islower():
            try:
                return _virtual(name)
            except UsageError:
                pass
        raise UsageError(f"Cannot import module {name!r} and there is no schema of that name in {_describe_db()}. "
                         "Give an importable module (run from its folder or set PYTHONPATH), a .py file, or a "
                         "schema name.")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UsageError(f"Importing module {name!r} failed: {exc}") from None


def _pipeline(target: str):
    from .pipeline import Pipeline

    module_name, _, table = target.partition(":")
    module = load_module(module_name)
    try:
        pipeline = Pipeline(module)
    except DataJointError as exc:
        raise UsageError(f"Module {module_name!r}: {exc}") from None
    pipeline._cli_module = module
    steps = pipeline.steps
    if table:
        try:
            steps = [pipeline.step(table)]
        except DataJointError:
            raise UsageError(f"Module {module_name!r} has no Imported/Computed table {table!r}; its steps are: "
                             f"{', '.join(s.cls.__name__ for s in pipeline.steps) or 'none'}.") from None
    return pipeline, steps


# -- commands -----------------------------------------------------------------------------------------
def _incomplete_copies(module, steps) -> list[str]:
    """Warnings for the module's schemas that hold an interrupted ``joinflow copy``."""
    from .copy import incomplete_copy, incomplete_message
    from .schemas import Schema

    conn = _connection()
    names = [getattr(s.cls, "database", None) for s in steps]
    names += [v.database for v in vars(module).values() if isinstance(v, Schema) and v.database]
    schema = getattr(module, "schema", None)
    if getattr(schema, "database", None):
        names.append(schema.database)
    warnings = []
    for name in dict.fromkeys(n for n in names if n):
        info = incomplete_copy(conn, name)
        if info is not None:
            warnings.append(incomplete_message(name, info, _describe_db()))
    return warnings


def cmd_status(args) -> int:
    pipeline, steps = _pipeline(args.target)
    warnings = _incomplete_copies(pipeline._cli_module, steps)
    for text in warnings:
        print(f"WARNING: {text}", file=sys.stderr)
    rows = []
    for step in steps:
        st = step.status()
        rows.append({"table": step.cls.__name__, "step": step.name, "full_table_name": step.full_table_name,
                     **{k: st[k] for k in ("done", "pending", "reserved", "error", "ignore", "total")}})
    if args.json:
        _print_json({"module": args.target, "tables": rows, "incomplete_copies": warnings})
        return EXIT_OK
    if not rows:
        print(f"{args.target}: no Imported or Computed tables.")
        return EXIT_OK
    cols = ["done", "pending", "reserved", "error", "ignore"]
    print(_table([[r["table"]] + [r[c] for c in cols] for r in rows], ["table"] + cols, right=set(range(1, 6))))
    return EXIT_OK


def cmd_populate(args) -> int:
    pipeline, steps = _pipeline(args.target)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1.")
    unfinished = _incomplete_copies(pipeline._cli_module, steps)
    if unfinished:  # its parents may be half copied: computing from them would be wrong
        raise CommandFailed(f"populate: nothing computed. {unfinished[0]}")
    progress = args.progress if args.progress is not None else (sys.stderr.isatty() and not args.json)
    results, failed = [], 0
    for step in steps:
        result = step.table.populate(*args.restrict, reserve_jobs=True, suppress_errors=True,
                                     processes=args.workers, max_calls=args.max_calls, display_progress=progress)
        errors = result["error_list"]
        failed += len(errors)
        entry = {"table": step.cls.__name__, "step": step.name, "computed": result["success_count"],
                 "errors": [{"key": k, "error": str(e)} for k, e in errors], "pending": step.pending_count()}
        results.append(entry)
        if not args.json:
            print(f"{entry['table']}: {entry['computed']} computed, {len(errors)} errors, {entry['pending']} pending")
            for key, message in errors[:10]:
                print(f"  error {key}: {message}")
            if len(errors) > 10:
                print(f"  ... {len(errors) - 10} more (joinflow jobs {args.target} --errors)")
    if args.json:
        _print_json({"module": args.target, "tables": results, "error_count": failed})
    return EXIT_FAILED if failed else EXIT_OK


def _job_rows(step, errors_only: bool) -> list[dict]:
    jobs = step.table.jobs
    query = jobs.errors if errors_only else jobs
    pk = step.cls().primary_key
    n = jobs.cols  # the job columns' names (job_<name> where the key has an attribute <name>)
    names = ["status", "priority", "scheduled_time", "reserved_time", "completed_time", "host", "pid",
             "error_message"]
    rows = []
    for row in query.to_dicts(order_by=[n.status] + pk):
        rows.append({"table": step.cls.__name__, "key": {k: row[k] for k in pk},
                     **{name: row.get(n[name]) for name in names}})
    return rows


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation; pass --yes (standard input is not a terminal).")
    answer = input(f"{question} [yes/No]: ").strip().lower()
    return answer in ("y", "yes")


def cmd_jobs(args) -> int:
    target = args.target + (f":{args.table}" if args.table else "")
    if args.table and ":" in args.target:
        raise UsageError("Give the table either as MODULE:Table or with --table, not both.")
    _, steps = _pipeline(target)
    if args.all and not args.clear:
        raise UsageError("--all only goes with --clear.")
    if args.clear:
        what = "all job rows except reserved ones" if args.all else "the error job rows"
        counts = {}
        for step in steps:
            jobs = step.table.jobs
            query = (jobs & f"{jobs.cols.status} <> 'reserved'") if args.all else jobs.errors
            counts[step.cls.__name__] = len(query)
        total = sum(counts.values())
        if total and not _confirm(f"Delete {total} job rows ({what}) so that their keys are computed again?",
                                  args.yes):
            print("Nothing deleted.", file=sys.stderr)
            return EXIT_FAILED
        for step in steps:
            jobs = step.table.jobs
            query = (jobs & f"{jobs.cols.status} <> 'reserved'") if args.all else jobs.errors
            query.delete_quick()
        if args.json:
            _print_json({"module": args.target, "deleted": counts, "total": total})
        else:
            for name, n in counts.items():
                print(f"{name}: {n} job rows deleted")
        return EXIT_OK
    rows = [r for step in steps for r in _job_rows(step, args.errors)]
    if args.json:
        _print_json({"module": args.target, "jobs": rows})
        return EXIT_OK
    if not rows:
        print("No error jobs." if args.errors else "No job rows.")
        return EXIT_OK
    if args.errors:
        for r in rows:
            when = r["completed_time"] or ""
            print(f"{r['table']} {json.dumps(r['key'], default=_jsonable)}  {when}  {r['host'] or ''}")
            for line in str(r["error_message"]).splitlines() or [""]:
                print(f"    {line}")
        return EXIT_OK
    table_rows = [[r["table"], json.dumps(r["key"], default=_jsonable), r["status"], r["host"] or "",
                   (r["error_message"] or "")[:60]] for r in rows]
    print(_table(table_rows, ["table", "key", "status", "host", "error"]))
    return EXIT_OK


def cmd_diagram(args) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in (".svg", ".png", ".mmd", ".mermaid", ".dot"):
        raise UsageError(f"-o {args.output}: the file name must end in .svg, .png, .mmd (Mermaid text) or .dot.")
    try:
        from .diagram import Diagram
    except ImportError as exc:
        raise CommandFailed(f"Diagrams are not available in this installation: {exc}") from None
    module = load_module(args.target)
    diagram = Diagram(module, status=True) if args.status else Diagram(module)
    diagram.save(str(out))
    if args.json:
        _print_json({"module": args.target, "output": str(out.resolve()), "bytes": out.stat().st_size})
    else:
        print(f"wrote {out}")
    return EXIT_OK


def cmd_schema_list(args) -> int:
    from .schemas import list_schemas

    names = list_schemas(_connection())
    if args.json:
        _print_json({"database": _describe_db(), "schemas": names})
    else:
        for name in names:
            print(name)
    return EXIT_OK


def _definitions(module) -> list[dict]:
    schema = module.schema
    conn = schema.connection
    from .table import FreeTable, part_master, tier_of, to_camel_case

    found = []
    for table in schema.list_tables():
        free = FreeTable(conn, conn.backend.full_table_name(schema.database, table))
        tier = tier_of(table) or "Table"
        master = part_master(table) if tier == "Part" else None
        name = to_camel_case(table)
        if master:
            name = to_camel_case(master) + "." + to_camel_case(table[len(master) + 2 :])
        found.append({"table": table, "class": name, "tier": tier, "rows": len(free),
                      "definition": free.describe()})
    return found


def cmd_schema_describe(args) -> int:
    module = _virtual(args.schema)
    found = _definitions(module)
    if args.json:
        _print_json({"schema": args.schema, "tables": found})
        return EXIT_OK
    print(f"# schema `{args.schema}` in {_describe_db()}: {len(found)} tables\n")
    by_master: dict[str, list[dict]] = {}
    for t in found:
        if t["tier"] == "Part":
            by_master.setdefault(t["class"].split(".")[0], []).append(t)
    for t in found:
        if t["tier"] == "Part":
            continue
        print(f"@schema\nclass {t['class']}(dj.{t['tier'] if t['tier'] != 'Table' else 'Manual'}):  # {t['rows']} rows")
        print(_indent_definition(t["definition"], "    "))
        for part in by_master.get(t["class"], []):
            print(f"\n    class {part['class'].split('.')[1]}(dj.Part):  # {part['rows']} rows")
            print(_indent_definition(part["definition"], "        "))
        print()
    return EXIT_OK


def _indent_definition(definition: str, pad: str) -> str:
    body = "\n".join(pad + line for line in definition.rstrip("\n").splitlines())
    return f'{pad}definition = """\n{body}\n{pad}"""'


def cmd_gc(args) -> int:
    try:
        from .gc import GarbageCollector
    except ImportError as exc:
        raise CommandFailed(f"Garbage collection is not available in this installation: {exc}") from None
    schemas = [_virtual(name).schema for name in args.schemas]
    collector = GarbageCollector(*schemas, store=args.store, grace_period=args.grace_period)
    result = collector.collect(dry_run=True)
    orphans = result.get("hash_paths_orphaned", 0) + result.get("schema_paths_orphaned", 0)
    if not args.dry_run and orphans:
        size = result.get("hash_paths_orphaned_bytes", 0) + result.get("schema_paths_orphaned_bytes", 0)
        if not _confirm(f"Delete {orphans} orphaned objects ({size} bytes) of {', '.join(args.schemas)}?", args.yes):
            print("Nothing deleted.", file=sys.stderr)
            return EXIT_FAILED
        result = collector.collect(dry_run=False)
    failed = bool(result.get("errors") or result.get("scan_errors"))
    if args.json:
        _print_json({"schemas": args.schemas, **result})
    else:
        print(f"store objects of {', '.join(args.schemas)}:")
        for section in ("hash", "schema"):
            print(f"  {section}-addressed: {result.get(f'{section}_paths_stored', 0)} stored, "
                  f"{result.get(f'{section}_paths_referenced', 0)} referenced, "
                  f"{result.get(f'{section}_paths_orphaned', 0)} orphaned "
                  f"({result.get(f'{section}_paths_orphaned_bytes', 0)} bytes)")
        if args.dry_run:
            print(f"dry run: {orphans} orphaned objects would be deleted (run without --dry-run to delete them)")
        else:
            print(f"deleted {result.get('deleted', 0)} objects, {result.get('bytes_freed', 0)} bytes freed")
        kept = result.get("kept_paths") or {}
        if kept:
            print(f"kept {len(kept)} unreferenced objects (grace_period {result.get('grace_period'):g} s):")
            for path, why in list(kept.items())[:20]:
                print(f"  {path}: {why}")
            if len(kept) > 20:
                print(f"  ... and {len(kept) - 20} more (--json lists them all)")
        for other in result.get("other_databases") or []:
            print(f"  also used by: {other} (nothing is deleted while its rows are not read)", file=sys.stderr)
        for problem in result.get("scan_errors") or []:
            print(f"  scan error: {problem}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _config_from(path: str | None, option: str):
    from .settings import Config, config

    if not path:
        return config
    if not Path(path).is_file():
        raise UsageError(f"{option} {path}: no such file. Give a joinflow.toml or datajoint.json.")
    cfg = Config(load_environment=False, search_file=False)  # the file is this side's whole configuration
    try:
        cfg.load(path)
    except (DataJointError, ValueError) as exc:
        raise UsageError(f"{option} {path}: {exc}") from None
    return cfg


def cmd_copy(args) -> int:
    from .copy import CopyError, copy_schemas, discard_copy, parse_schema_names

    try:
        mapping = parse_schema_names(args.schemas)
    except CopyError as exc:
        raise UsageError(str(exc)) from None
    if args.discard:
        if args.resume or args.dry_run:
            raise UsageError("--discard removes an interrupted copy; it does not combine with --resume or --dry-run.")
        target_cfg = _config_from(args.to_config, "--to-config")
        try:
            done = discard_copy(mapping, args.target, target_config=target_cfg)
        except CopyError as exc:
            raise CommandFailed(f"copy --discard: {exc}") from None
        if args.json:
            _print_json(done)
        else:
            print(f"removed the incomplete copy in {', '.join(f'`{s}`' for s in done['schemas'])} of "
                  f"{done['target']}: {done['objects_removed']} objects, {done['tables_dropped']} tables")
        return EXIT_OK
    if not args.source:
        raise UsageError("copy needs --from URL (the source database), unless it is --discard.")
    if args.source == args.target and any(s == t for s, t in mapping.items()):
        raise UsageError("--from and --to are the same database; copy into new schema names (SOURCE=TARGET).")
    source_cfg = _config_from(args.from_config, "--from-config")
    target_cfg = _config_from(args.to_config, "--to-config")
    log = None if args.json else (lambda text: print(text, file=sys.stderr) if args.verbose else None)
    try:
        report = copy_schemas(mapping, args.source, args.target, source_config=source_cfg,
                              target_config=target_cfg, batch_size=args.batch_size, dry_run=args.dry_run,
                              resume=args.resume, progress=None if not args.json else False, log=log)
    except CopyError as exc:
        raise CommandFailed(f"copy: {exc}") from None
    document = report.as_dict()
    if args.json:
        _print_json(document)
        return EXIT_OK
    rows = [[t["table"], t["source_rows"], "" if t["target_rows"] is None else t["target_rows"]]
            for t in document["tables"]]
    print(_table(rows, ["table", "source rows", "target rows"], right={1, 2}))
    if args.dry_run:
        print(f"dry run: {len(rows)} tables would be copied from {report.source} to {report.target}")
    else:
        jobs = f", {report.jobs_copied} job-table rows" if report.jobs_copied else ""
        print(f"{'finished the interrupted copy: ' if report.resumed else ''}copied {document['rows']} rows in "
              f"{len(rows)} tables and {report.objects_copied} objects{jobs} from {report.source} to {report.target}; "
              "row counts verified")
    return EXIT_OK


# -- the parser ----------------------------------------------------------------------------------------
_argv: list[str] = []  # the arguments being parsed (for the --json form of usage errors)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's exit code 2, with the --json error document when asked
        if "--json" in _argv:
            print(json.dumps({"error": f"{self.prog}: {message}", "exit_code": EXIT_USAGE}))
        super().error(message)


def cmd_manifest(args) -> int:
    from .pipeline import Pipeline

    modules = [load_module(name) for name in args.modules]
    try:
        pipeline = Pipeline(*modules, select=args.select, exclude=args.exclude)
    except DataJointError as exc:
        raise UsageError(f"Modules {', '.join(args.modules)}: {exc}") from None
    manifest = pipeline.to_manifest() if args.output == "-" else pipeline.write_manifest(args.output)
    if args.output == "-":
        print(json.dumps(manifest, indent=1, sort_keys=True))
    elif args.json:
        _print_json({"output": args.output, "tables": len(manifest["tables"]), "steps": len(manifest["steps"]),
                     "hash": manifest["hash"]})
    else:
        print(f"wrote {args.output}: {len(manifest['tables'])} tables, {len(manifest['steps'])} steps")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", metavar="URL", default=argparse.SUPPRESS,
                        help="SQLAlchemy URL of the database (default: JOINFLOW_DATABASE_URL, then the config file)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout (for scripts and agents)")
    parser = _Parser(prog="joinflow", parents=[common], description="Run and inspect joinflow pipelines.",
                     epilog="Exit codes: 0 ok, 1 failed or errors recorded, 2 bad arguments.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name, func, help_text, **kw):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text, **kw)
        p.set_defaults(func=func)
        return p

    st = command("status", cmd_status, "done / pending / reserved / error counts per computed table")
    st.add_argument("target", metavar="MODULE[:Table]", help="pipeline module, .py file or schema name")

    pop = command("populate", cmd_populate, "compute pending keys (exit 1 if any key failed)")
    pop.add_argument("target", metavar="MODULE[:Table]", help="pipeline module, .py file or schema name")
    pop.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    pop.add_argument("--restrict", action="append", default=[], metavar="SQL",
                     help="restriction on the key source (repeatable)")
    pop.add_argument("--max-calls", type=int, default=None, metavar="N", help="compute at most N keys per table")
    prog = pop.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show a progress bar (default: on a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")

    jobs = command("jobs", cmd_jobs, "list job rows (errors with messages); clear errors so they are retried")
    jobs.add_argument("target", metavar="MODULE[:Table]", help="pipeline module, .py file or schema name")
    jobs.add_argument("--table", metavar="T", help="only this Imported/Computed table")
    jobs.add_argument("--errors", action="store_true", help="only error rows, with their messages")
    jobs.add_argument("--clear", action="store_true", help="delete error rows so that their keys are computed again")
    jobs.add_argument("--all", action="store_true", help="with --clear: delete every job row except reserved ones")
    jobs.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    dia = command("diagram", cmd_diagram, "draw the pipeline as SVG, PNG or Mermaid text")
    dia.add_argument("target", metavar="MODULE", help="pipeline module, .py file or schema name")
    dia.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.svg, FILE.png, FILE.mmd or FILE.dot")
    dia.add_argument("--status", action="store_true", help="label computed tables with done / pending / error counts")

    man = command("manifest", cmd_manifest, "write the pipeline's structure as JSON for orchestrators "
                  "(JoinflowDag(manifest=...) builds a DAG from it without touching the database)")
    man.add_argument("modules", nargs="+", metavar="MODULE", help="pipeline modules or .py files")
    man.add_argument("-o", "--output", default="-", metavar="FILE", help="file to write (default: - = stdout)")
    man.add_argument("--select", action="append", default=None, metavar="SELECTOR",
                     help="only these computed tables (Class, module:Class, schema:NAME, tier:TIER, +X, X+; repeatable)")
    man.add_argument("--exclude", action="append", default=None, metavar="SELECTOR",
                     help="leave these tables out (selectors; repeatable)")

    sch = command("schema", None, "list schemas, or describe the tables of one")
    schema_sub = sch.add_subparsers(dest="schema_command", required=True, metavar="list|describe",
                                    parser_class=_Parser)
    sl = schema_sub.add_parser("list", parents=[common], help="the schemas in the database")
    sl.set_defaults(func=cmd_schema_list)
    sd = schema_sub.add_parser("describe", parents=[common], help="the definition of every table of a schema")
    sd.add_argument("schema", metavar="SCHEMA")
    sd.set_defaults(func=cmd_schema_describe)

    gc = command("gc", cmd_gc, "delete store objects that no row references any more")
    gc.add_argument("schemas", nargs="+", metavar="SCHEMA")
    gc.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    gc.add_argument("--store", metavar="NAME", help="the store to clean (default: stores.default)")
    gc.add_argument("--grace-period", type=float, metavar="SECONDS", default=None,
                    help="keep unreferenced objects written less than SECONDS ago (default: the store's "
                         "grace_period, 3600); 0 only when nothing writes to these schemas")
    gc.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    cp = command("copy", cmd_copy, "copy schemas with their rows and objects to another database",
                 epilog="Example: joinflow copy --from sqlite:///joinflow.db --to postgresql://u@host/lab lab")
    cp.add_argument("--from", dest="source", metavar="URL", help="source database URL (not with --discard)")
    cp.add_argument("--to", dest="target", required=True, metavar="URL", help="target database URL")
    cp.add_argument("schemas", nargs="+", metavar="SCHEMA[=NEW]", help="schemas to copy (optionally renamed)")
    cp.add_argument("--from-config", metavar="FILE", help="joinflow.toml/datajoint.json with the source's stores")
    cp.add_argument("--to-config", metavar="FILE", help="joinflow.toml/datajoint.json with the target's stores")
    cp.add_argument("--batch-size", type=int, default=10000, metavar="N", help="rows per batch (default 10000)")
    cp.add_argument("--dry-run", action="store_true", help="plan and check only; change nothing")
    cp.add_argument("--resume", action="store_true",
                    help="finish a copy that was interrupted (same --from, --to and schemas)")
    cp.add_argument("--discard", action="store_true",
                    help="remove an interrupted copy from --to: its tables, rows and the objects it wrote")
    cp.add_argument("--verbose", "-v", action="store_true", help="report each step on stderr")
    return parser


def main(argv=None) -> int:
    global _argv
    _argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_argv)
    # (not parser.set_defaults: the parsers share the option objects, so that would reset them)
    args.json = getattr(args, "json", False)
    args.database_url = getattr(args, "database_url", None)
    from .settings import remember_url

    for url in (args.database_url, getattr(args, "source", None), getattr(args, "target", None)):
        if isinstance(url, str):
            remember_url(url)  # its password is masked in everything printed from here on
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _MaskingStream(stdout), _MaskingStream(stderr)
    try:
        _apply_database_url(args.database_url)
        return args.func(args)
    except UsageError as exc:
        return _fail(args, str(exc), EXIT_USAGE)
    except CommandFailed as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    except DataJointError as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        print("joinflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or a library's error: its traceback, with every secret masked
        import traceback

        traceback.print_exc(file=sys.stderr)
        return _fail(args, f"unexpected error: {type(exc).__name__}: {exc}", EXIT_FAILED)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _fail(args, message: str, code: int) -> int:
    from .settings import mask_text

    message = mask_text(message)
    print(f"joinflow: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit_code": code}))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
