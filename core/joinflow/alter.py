"""``Table.alter()``: bring a declared table in line with its edited ``definition``.

Only secondary attributes (add, drop, rename, type, default, nullability, comment) and the
table comment change.  The primary key, foreign keys and indexes are compared too: a change
there raises ``NotImplementedError`` with DataJoint's wording and changes nothing.

The declared table is read from the catalog (heading, foreign keys, indexes), never from
the Python class, so the comparison holds whatever the class said when it was declared.
The SQL comes from the backend (``Backend.alter_statements`` / ``Backend.alter_table``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re

import sqlalchemy as sa

from .backends.base import AlterPlan, ColumnChange
from .declare import TableSpec, parse_definition
from .errors import DataJointError

logger = logging.getLogger("joinflow")

RENAME = re.compile(r"^\{\s*(?P<name>[a-z][a-z0-9_]*)\s*\}\s*")


def _norm_type(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).lower() if not text.lower().startswith("enum") else text.strip()


def _norm_default(attr) -> str | None:
    """A default as comparable text: quotes, case of keywords and number spellings smoothed."""
    text = attr.default
    if text is None or text.upper() == "NULL":
        return None
    if text.upper().startswith("CURRENT_TIMESTAMP"):
        return "CURRENT_TIMESTAMP"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].replace(text[0] * 2, text[0])
    if attr.category == "bool":
        text = {"true": "1", "false": "0"}.get(text.lower(), text)
    if attr.category in ("int", "float", "decimal", "bool"):
        try:
            return repr(float(text))
        except ValueError:
            pass
    return text


def _context(table, context, caller=None):
    cls = type(table)
    if context is None:
        context = getattr(table, "declaration_context", None) or {}
    if caller:  # DataJoint's rule: the caller's namespace (here on top of the declaration's)
        context = {**context, **caller}
    ctx = {**context, cls.__name__: cls, "self": cls}
    master = getattr(cls, "_master", None)
    if master is not None:
        ctx.setdefault("master", master)
        ctx.setdefault(master.__name__, master)
    return ctx


def _catalog_foreign_keys(table) -> list[tuple[str, tuple]]:
    deps = table.connection.dependencies
    deps.load()
    found = []
    for parent, info in deps.parents(table.full_table_name).items():
        for attr_map in info["attr_maps"]:
            found.append((parent, tuple(attr_map.items())))
    return sorted(found)


def _index_key(indexes, fk_sets) -> list[tuple[bool, tuple]]:
    """Declared indexes, without the plain indexes that only support a foreign key."""
    return sorted((bool(u), tuple(c)) for u, c in indexes if u or tuple(c) not in fk_sets)


def plan_alter(table, context=None, caller=None) -> AlterPlan:
    """Compare ``table.definition`` with the declared table; raise for what cannot change."""
    conn = table.connection
    backend = conn.backend
    full = table.full_table_name
    name = table.table_name
    heading = table.heading
    spec = parse_definition(
        table.definition, _context(table, context, caller), f"{table.database}.{name}",
        auto_populated=table._auto_populated,
        allow_new_pk=bool(conn.config["jobs.allow_new_pk_fields_in_computed_tables"]),
    )
    new_attrs = {a.name: a for a in spec.attributes}

    # -- primary key ------------------------------------------------------------------------
    old_pk = [n for n in heading.primary_key]
    new_pk = [n for n in spec.primary_key if not n.startswith("_")]
    if old_pk != new_pk:
        raise NotImplementedError(
            f"table.alter cannot alter the primary key (yet). Table {full}: the declared primary key is "
            f"({', '.join(old_pk)}), the definition gives ({', '.join(new_pk)}). Keep the primary key, or "
            "declare a new table and copy the rows."
        )
    for pk in new_pk:
        old, new = heading[pk], new_attrs[pk]
        if _norm_type(old.type) != _norm_type(new.type) or (old.comment or "") != (new.comment or ""):
            raise NotImplementedError(
                f"table.alter cannot alter the primary key (yet). Table {full}: primary-key attribute "
                f"`{pk}` is declared `{old.type}  # {old.comment}`, the definition gives "
                f"`{new.type}  # {new.comment}`. Keep the primary key, or declare a new table and copy the rows."
            )

    # -- foreign keys -----------------------------------------------------------------------
    old_fks = _catalog_foreign_keys(table)
    new_fks = sorted(
        (backend.full_table_name(fk.parent_schema, fk.parent_table), tuple(fk.attr_map.items()))
        for fk in spec.foreign_keys
    )
    fk_attrs = {c for _p, pairs in old_fks for c, _ in pairs}
    old_nullable = sorted(n for n in fk_attrs if n in heading.all_attributes and heading[n].nullable)
    new_nullable = sorted(n for fk in spec.foreign_keys if fk.nullable for n in fk.attr_map)
    if old_fks != new_fks or old_nullable != new_nullable:
        raise NotImplementedError(
            f"table.alter cannot alter foreign keys (yet). Table {full}: the definition's foreign keys "
            f"({', '.join(p for p, _ in new_fks) or 'none'}) differ from the declared ones "
            f"({', '.join(p for p, _ in old_fks) or 'none'}) or from their [nullable] option. Restore the "
            "`->` lines as they were (see describe()), or declare a new table and copy the rows."
        )

    # -- indexes (an index follows its column when the column is renamed) ----------------------
    fk_sets = {tuple(c for c, _ in pairs) for _p, pairs in old_fks}
    renames = {}
    for attr in spec.attributes:
        match = RENAME.match(attr.comment or "")
        if match and not attr.in_key and match.group("name") not in new_attrs:
            old_name = match.group("name")
            if old_name not in heading.secondary_attributes and attr.name not in heading.secondary_attributes:
                raise DataJointError(
                    f"Table {full}: attribute `{attr.name}` is to be renamed from `{old_name}`, which is not "
                    f"a secondary attribute of the declared table ({', '.join(heading.secondary_attributes)}). "
                    f"Fix the name in `{{{old_name}}}` or remove it."
                )
            renames[old_name] = attr.name
    old_idx = _index_key([(u, [renames.get(c, c) for c in cols])
                          for u, cols in backend.load_indexes(conn, table.database, name)], fk_sets)
    new_idx = _index_key(spec.indexes, fk_sets)
    if old_idx != new_idx:
        def show(idx):
            return ", ".join(f"{'unique ' if u else ''}index ({', '.join(c)})" for u, c in idx) or "none"
        raise NotImplementedError(
            f"table.alter cannot alter indexes (yet). Table {full}: declared {show(old_idx)}; the definition "
            f"gives {show(new_idx)}. Restore the index lines as they were (see describe())."
        )

    # -- secondary attributes ----------------------------------------------------------------
    old_secondary = {n: a for n, a in heading.attributes.items() if not a.in_key and n not in fk_attrs}
    wanted = []  # (old name or None, new attribute with the {old} marker taken out of its comment)
    renamed_from: dict[str, str] = {}
    for attr in spec.attributes:
        if attr.in_key or attr.name in fk_attrs or attr.name.startswith("_"):
            continue
        source = attr.name if attr.name in old_secondary else None
        match = RENAME.match(attr.comment or "")
        if match:
            attr = dataclasses.replace(attr, comment=attr.comment[match.end():].strip())
            old_name = match.group("name")
            if old_name in old_secondary and old_name not in new_attrs:
                if old_name in renamed_from:
                    raise DataJointError(
                        f"Table {full}: alter attempted to rename attribute `{old_name}` twice (to "
                        f"`{renamed_from[old_name]}` and `{attr.name}`). Keep one `{{{old_name}}}` comment."
                    )
                if source is not None:
                    raise DataJointError(
                        f"Table {full}: cannot rename `{old_name}` to `{attr.name}`: `{attr.name}` exists "
                        "already. Drop it first or pick another name."
                    )
                renamed_from[old_name] = attr.name
                source = old_name
            elif source is None:  # neither the old nor the new name is there
                raise DataJointError(
                    f"Table {full}: attribute `{attr.name}` is to be renamed from `{old_name}`, which is not "
                    f"a secondary attribute of the declared table ({', '.join(old_secondary) or 'none'}). "
                    f"Fix the name in `{{{old_name}}}` or remove it."
                )
            # else: renamed already (the new name is declared): the marker is just cleared
        wanted.append((source, attr))
    kept = {src for src, _ in wanted if src is not None}
    changes: list[ColumnChange] = [ColumnChange(old=old_secondary[n], new=None)
                                   for n in old_secondary if n not in kept]
    rows = None
    for source, attr in wanted:
        if source is None:
            if not attr.has_default:
                rows = len(table) if rows is None else rows
                if rows:
                    raise DataJointError(
                        f"Table {full}: new attribute `{attr.name}` has no default and the table has {rows} "
                        f"row(s). Give it a default (`{attr.name} = <value> : {attr.type}`) or make it "
                        f"nullable (`{attr.name} = null : {attr.type}`)."
                    )
            changes.append(ColumnChange(old=None, new=attr))
            continue
        old = old_secondary[source]
        change = ColumnChange(
            old=old, new=attr,
            type_changed=_norm_type(old.type) != _norm_type(attr.type),
            default_changed=_norm_default(old) != _norm_default(attr),
            nullable_changed=old.nullable != attr.nullable,
            comment_changed=(old.comment or "") != (attr.comment or ""),
        )
        if change.renamed or change.type_changed or change.default_changed or change.nullable_changed \
                or change.comment_changed:
            changes.append(change)
    comment = spec.comment if spec.comment != heading.table_comment else None

    # every column of the altered table, in order, hidden ones included (for a backend that rebuilds)
    dropped = {c.old.name for c in changes if c.new is None}
    by_old = {c.old.name: c.new for c in changes if c.old is not None and c.new is not None}
    columns = []
    for attr in heading.all_attributes.values():
        if attr.name in dropped:
            continue
        columns.append(by_old.get(attr.name, attr))
    columns += [c.new for c in changes if c.old is None]
    full_spec = TableSpec(columns, [a.name for a in columns if a.in_key],
                          spec.foreign_keys, spec.indexes, spec.comment)
    full_spec = table._lower_codecs(full_spec) if any(a.codec is not None for a in columns) else full_spec
    lowered = {a.name: a for a in full_spec.attributes}
    changes = [dataclasses.replace(c, new=lowered[c.new.name]) if c.new is not None else c for c in changes]
    return AlterPlan(changes=changes, comment=comment, spec=full_spec, row_count=rows)


def alter(table, prompt: bool | None = True, context=None) -> None:
    conn = table.connection
    if conn.in_transaction:
        raise DataJointError(
            f"Cannot alter table {table.full_table_name} inside a transaction (e.g. from inside a "
            "populate/make call). Alter it outside the transaction."
        )
    if not table.is_declared:
        raise DataJointError(
            f"Table {table.full_table_name} is not declared; alter() changes a declared table. Declare it "
            "with @schema first."
        )
    prompt = conn.config["safemode"] if prompt is None else prompt
    caller = None
    if context is None:
        frame = inspect.currentframe().f_back.f_back  # alter() <- Table.alter() <- the user's code
        caller = {**frame.f_globals, **frame.f_locals}
        del frame
    plan = plan_alter(table, context, caller)
    if not plan:
        if prompt:
            print(f"Nothing to alter in {table.full_table_name}.")
        return
    backend = conn.backend
    statements = backend.alter_statements(conn, table.database, table.table_name, plan)
    if prompt:
        from .table import _confirm

        print("\n".join(s.rstrip(";") + ";" for s in statements))
        if not _confirm("Proceed?"):
            print("Alter cancelled.")
            return
    try:
        backend.alter_table(conn, table.database, table.table_name, plan)
    except DataJointError as exc:
        raise type(exc)(f"alter of {table.full_table_name} failed; the table is unchanged: {exc}") from exc
    except sa.exc.SQLAlchemyError as exc:  # pragma: no cover - errors are translated by the connection
        raise DataJointError(f"alter of {table.full_table_name} failed; the table is unchanged: {exc}") from exc
    finally:
        conn.forget_catalog()
    if prompt:
        print(f"Table {table.full_table_name} altered.")
