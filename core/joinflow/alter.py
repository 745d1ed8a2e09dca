"""``Table.alter()``: bring a declared table in line with its edited ``definition``.

Secondary attributes (add, drop, rename, type, default, nullability, comment), the table
comment, secondary foreign keys (added with their attributes, dropped with the attributes the
definition no longer declares) and secondary indexes change.  A change to the primary key, to
a foreign key in the primary key or to the ``[nullable]`` option of a declared foreign key
raises ``NotImplementedError`` with DataJoint's wording and changes nothing.

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
from .types import parse_default

logger = logging.getLogger("joinflow")

RENAME = re.compile(r"^\{\s*(?P<name>[a-z][a-z0-9_]*)\s*\}\s*")


def _norm_type(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).lower() if not text.lower().startswith("enum") else text.strip()


def _norm_default(attr) -> str | None:
    """A default as comparable text: quotes, case of keywords and number spellings smoothed."""
    try:
        parsed = parse_default(attr.default)
    except DataJointError:
        return attr.default
    if parsed is None or parsed.kind == "null":
        return None
    if parsed.kind == "now":  # the precision follows the column's (PostgreSQL does not keep it)
        return "CURRENT_TIMESTAMP" + (" ON UPDATE CURRENT_TIMESTAMP" if parsed.on_update else "")
    text = parsed.text
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

    # -- foreign keys: secondary ones are added and dropped; those in the primary key stay ---------
    old_fks = _catalog_foreign_keys(table)
    new_fk_specs = {
        (backend.full_table_name(fk.parent_schema, fk.parent_table), tuple(fk.attr_map.items())): fk
        for fk in spec.foreign_keys
    }
    new_fks = sorted(new_fk_specs)
    pk_set = set(old_pk)
    fks_dropped = [fk for fk in old_fks if fk not in new_fk_specs]
    fks_added = [new_fk_specs[k] for k in new_fks if k not in old_fks]
    for parent, pairs in fks_dropped:
        if all(c in pk_set for c, _ in pairs):
            raise NotImplementedError(
                f"table.alter cannot alter foreign keys in the primary key (yet). Table {full}: the definition "
                f"drops `-> {parent}` on primary-key attribute(s) ({', '.join(c for c, _ in pairs)}). Restore "
                "the `->` line (see describe()), or declare a new table and copy the rows."
            )
    for fk in fks_added:
        if fk.in_key:
            raise NotImplementedError(
                f"table.alter cannot alter foreign keys in the primary key (yet). Table {full}: the definition "
                f"adds `-> {fk.parent_class or fk.parent_table}` above the `---` line. Move it below `---` to "
                "add it as a secondary foreign key, or declare a new table and copy the rows."
            )
    old_fk_attrs = {c for _p, pairs in old_fks for c, _ in pairs}
    new_fk_attrs = {c for fk in spec.foreign_keys for c in fk.attr_map}
    kept_fk_attrs = {c for k in old_fks if k in new_fk_specs for c, _ in k[1]}
    old_nullable = sorted(n for n in kept_fk_attrs if n in heading.all_attributes and heading[n].nullable)
    new_nullable = sorted({n for fk in spec.foreign_keys if fk.nullable for n in fk.attr_map} & kept_fk_attrs)
    if old_nullable != new_nullable:
        raise NotImplementedError(
            f"table.alter cannot alter the [nullable] option of a declared foreign key (yet). Table {full}: "
            f"nullable foreign-key attributes are ({', '.join(old_nullable) or 'none'}), the definition gives "
            f"({', '.join(new_nullable) or 'none'}). Restore the `->` line as it was (see describe())."
        )
    for fk in fks_added:  # the parent must be declared (as declare() checks)
        if backend.load_columns(conn, fk.parent_schema, fk.parent_table) is None:
            raise DataJointError(
                f"Table {full}: the new foreign key refers to "
                f"{backend.full_table_name(fk.parent_schema, fk.parent_table)}, which is not declared. "
                "Declare the parent table first."
            )
    if fks_added:  # a new foreign key must not close a loop: the tables would have no order
        deps = conn.dependencies
        for fk in fks_added:
            parent = backend.full_table_name(fk.parent_schema, fk.parent_table)
            loop = deps.path(full, parent) if parent != full else None  # (self-references are no cycle)
            if loop is not None:
                chain = " -> ".join(loop + [full])
                raise DataJointError(
                    f"Table {full}: the new foreign key `-> {fk.parent_class or fk.parent_table}` would make "
                    f"the foreign keys form a cycle ({chain}: {parent} depends on {full} already). joinflow "
                    "needs acyclic dependencies; remove the `->` line. The table is unchanged."
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
    catalog_idx = [(bool(u), tuple(c)) for u, c in backend.load_indexes(conn, table.database, name)]
    old_idx = _index_key([(u, [renames.get(c, c) for c in cols]) for u, cols in catalog_idx], fk_sets)
    new_idx = _index_key(spec.indexes, fk_sets)
    back = {new: old for old, new in renames.items()}
    indexes_dropped = [(u, tuple(back.get(c, c) for c in cols)) for u, cols in _minus(old_idx, new_idx)]
    indexes_added = _minus(new_idx, old_idx)
    # the plain index that supported a dropped foreign key goes when its columns stay undeclared
    new_sets = {tuple(fk.attr_map) for fk in spec.foreign_keys} | {tuple(c) for _u, c in spec.indexes}
    for _parent, pairs in fks_dropped:
        cols = tuple(c for c, _ in pairs)
        if (False, cols) in catalog_idx and cols not in new_sets and all(c in new_attrs for c in cols) \
                and not any(cols == tuple(c for c, _ in p) for k, p in old_fks if (k, p) not in fks_dropped):
            indexes_dropped.append((False, cols))

    # -- secondary attributes ----------------------------------------------------------------
    # foreign-key attributes of the definition stay as they are (or are added with their foreign key);
    # those of a dropped foreign key become ordinary attributes: dropped unless the definition declares them
    frozen = old_fk_attrs & new_fk_attrs
    old_secondary = {n: a for n, a in heading.attributes.items()
                     if not a.in_key and n not in new_fk_attrs and not n.startswith("_")}
    wanted = []  # (old name or None, new attribute with the {old} marker taken out of its comment)
    renamed_from: dict[str, str] = {}
    for attr in spec.attributes:
        if attr.in_key or attr.name in new_fk_attrs or attr.name.startswith("_"):
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
        if source in old_fk_attrs:  # was a foreign-key attribute: now an ordinary one, as declared
            attr = dataclasses.replace(attr, lineage=None)
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
    for fk in fks_added:  # the attributes a new foreign key brings
        for col in fk.attr_map:
            if col in heading.all_attributes or col in frozen or any(c.new is not None and c.old is None
                                                                     and c.new.name == col for c in changes):
                continue
            attr = new_attrs[col]
            if not attr.nullable:
                rows = len(table) if rows is None else rows
                if rows:
                    raise DataJointError(
                        f"Table {full}: the new foreign key `-> {fk.parent_class or fk.parent_table}` brings "
                        f"attribute `{col}`, which cannot be empty, and the table has {rows} row(s) with no "
                        f"parent to point to. Declare it `-> [nullable] {fk.parent_class or fk.parent_table}` "
                        "(and fill it in later), or add it before the rows are inserted."
                    )
            changes.append(ColumnChange(old=None, new=attr))
    for unique, cols in indexes_added:
        if unique:
            _check_unique(table, cols, changes, renames)
    comment = spec.comment if spec.comment != heading.table_comment else None

    # the ~lineage rows: foreign-key attributes carry their parent's lineage
    lineage = None
    if fks_added or fks_dropped:
        from .table import load_lineage

        current = load_lineage(conn, table.database, name)
        gone = {c.old.name for c in changes if c.old is not None and (c.new is None or c.new.name != c.old.name)}
        lineage = {a: v for a, v in current.items()
                   if a not in gone and (a in pk_set or a in new_fk_attrs or a not in old_fk_attrs)}
        for fk in fks_added:
            for col, parent_attr in fk.attr_map.items():
                if col not in lineage:
                    parent = load_lineage(conn, fk.parent_schema, fk.parent_table)
                    lineage[col] = parent.get(parent_attr) or f"{fk.parent_schema}.{fk.parent_table}.{parent_attr}"
        if lineage == current:
            lineage = None

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
    return AlterPlan(changes=changes, comment=comment, spec=full_spec, row_count=rows,
                     foreign_keys_added=fks_added, foreign_keys_dropped=fks_dropped,
                     indexes_added=indexes_added, indexes_dropped=indexes_dropped, lineage=lineage)


def _minus(a: list, b: list) -> list:
    """The items of ``a`` not in ``b`` (as multisets)."""
    rest = list(b)
    out = []
    for item in a:
        if item in rest:
            rest.remove(item)
        else:
            out.append(item)
    return out


def _check_unique(table, cols, changes, renames) -> None:
    """Refuse a unique index the rows already violate (naming the index, a duplicate and the fix)."""
    full = table.full_table_name
    back = {new: old for old, new in renames.items()}
    added = {c.new.name: c.new for c in changes if c.old is None}
    grouped = []
    for col in cols:
        if col in added:  # a new column holds its default in every row
            if added[col].default is None or added[col].default.upper() == "NULL":
                return  # NULLs never collide
            continue
        grouped.append(back.get(col, col))
    show = f"unique index ({', '.join(cols)})"
    if not grouped:
        rows = len(table)
        if rows > 1:
            raise DataJointError(
                f"Table {full}: cannot add {show}: all {rows} rows would hold the same value. Drop `unique` "
                "or give the new attribute a null default; the table is unchanged."
            )
        return
    backend = table.connection.backend
    tc = backend.table_clause(table.database, table.table_name, grouped)
    columns = [tc.c[c] for c in grouped]
    query = (sa.select(*columns, sa.func.count().label("n")).where(*[c.isnot(None) for c in columns])
             .group_by(*columns).having(sa.func.count() > 1).limit(1))
    dup = table.connection.execute(query).first()
    if dup is not None:
        value = ", ".join(f"{c}={v!r}" for c, v in zip(grouped, dup[:-1]))
        raise DataJointError(
            f"Table {full}: cannot add {show}: {dup[-1]} rows share {value} (and maybe more values repeat). "
            f"Make those rows differ (update1 or delete), or declare a plain `index ({', '.join(cols)})`; "
            "the table is unchanged."
        )


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
    if plan.lineage is not None:  # the attributes of added foreign keys carry their parent's lineage
        from .table import write_lineage

        with conn.transaction:
            write_lineage(conn, table.database, table.table_name,
                          [(table.table_name, a, lin) for a, lin in plan.lineage.items()])
        conn.forget_catalog()
    if prompt:
        print(f"Table {table.full_table_name} altered.")
