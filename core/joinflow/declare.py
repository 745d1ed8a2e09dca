"""The definition language: a table definition string -> a TableSpec (dialect-free).

Grammar (one item per line)::

    # table comment                     (first line only)
    pk_attr : type  # comment           primary-key section
    -> Parent                           foreign key (its primary key joins this one's)
    ---                                 end of the primary key
    attr = default : type  # comment
    -> [nullable, unique] Other.proj(new='old')
    index (a, b) / unique index (c)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import DeclarationError, DataJointError
from .heading import Attribute
from .types import NUMBER_DEFAULT, QUOTED_DEFAULT, Default, current_timestamp_default, parse_type

logger = logging.getLogger("joinflow")

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
INDEX = re.compile(r"^(?P<unique>unique\s+)?index\s*\((?P<cols>.*)\)\s*(#.*)?$", re.I)
FK = re.compile(r"^->\s*(\[(?P<opts>[^\]]*)\])?\s*(?P<ref>[^#]+?)\s*(#.*)?$")
FK_OPTIONS = {"nullable", "unique"}


@dataclass
class ForeignKeySpec:
    parent_schema: str
    parent_table: str
    attr_map: dict[str, str]  # child attribute -> parent attribute, in the parent's key order
    nullable: bool = False
    unique: bool = False
    in_key: bool = False
    parent_class: str = ""


@dataclass
class TableSpec:
    attributes: list[Attribute]
    primary_key: list[str]
    foreign_keys: list[ForeignKeySpec] = field(default_factory=list)
    indexes: list[tuple[bool, list[str]]] = field(default_factory=list)
    comment: str = ""


def _split_outside_quotes(text: str, sep: str) -> tuple[str, str | None]:
    """Split at the first ``sep`` that is not inside single or double quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == sep:
            return text[:i], text[i + 1 :]
    return text, None


# an unquoted word: letters, digits, `_`, `.`, `-` (no spaces, quotes, brackets or operators)
BARE_WORD_DEFAULT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
DEFAULT_GRAMMAR = (
    "A default is a quoted string ('text'; a quote inside it doubled: 'it''s'), a number, null, "
    "true/false, an unquoted word (stored as text, as DataJoint does), or "
    "CURRENT_TIMESTAMP[(p)] [ON UPDATE CURRENT_TIMESTAMP[(p)]] for a datetime"
)


def _normalize_default(raw: str, name: str, table: str, category: str) -> tuple[str | None, bool]:
    """(stored default, nullable) from the text between ``=`` and ``:``.

    Only literals are accepted; the stored form is dialect-free (types.parse_default reads it)
    and every backend quotes it itself, so nothing a definition says is pasted into SQL."""
    value = raw.strip()
    if value.lower() == "null":
        return None, True
    now = current_timestamp_default(value)
    if now is not None:
        if category != "datetime":
            raise DeclarationError(
                f"Table {table}: attribute `{name}` defaults to {value}, which only a datetime attribute "
                "can. Declare it as datetime, or give a literal default."
            )
        return now.canonical, False
    single = QUOTED_DEFAULT.fullmatch(value)
    double = re.fullmatch(r'"((?:[^"]|"")*)"', value, re.S)
    if single:
        text = single.group(1).replace("''", "'")
    elif double:
        text = double.group(1).replace('""', '"')
    elif NUMBER_DEFAULT.fullmatch(value) or value.lower() in ("true", "false"):
        text = value
    elif BARE_WORD_DEFAULT.fullmatch(value):
        text = value  # DataJoint quotes an unquoted word (`= pending`) as text; so does joinflow
    else:
        raise DeclarationError(
            f"Table {table}: the default of attribute `{name}` is `{value}`, which is not a literal. "
            f"{DEFAULT_GRAMMAR}. Quote a text default."
        )
    return Default("value", text).canonical, False


def _refuse_nul(text: str, what: str, table: str) -> None:
    if "\x00" in text:
        raise DeclarationError(
            f"Table {table}: {what} contains a NUL character (\\x00), which no backend keeps in a "
            "definition. Remove it."
        )


def parse_attribute(line: str, in_key: bool, table: str) -> Attribute:
    left, right = _split_outside_quotes(line, ":")
    if right is None:
        raise DeclarationError(
            f"Table {table}: cannot parse line `{line}`. An attribute is written "
            "`name [= default] : type [# comment]`."
        )
    name_part, default_part = _split_outside_quotes(left, "=")
    name = name_part.strip()
    if name.startswith("_"):
        raise DeclarationError(
            f"Table {table}: attribute name `{name}` starts with `_`; such names are reserved for "
            "platform-managed hidden columns. Rename it."
        )
    if not NAME.match(name):
        raise DeclarationError(
            f"Table {table}: invalid attribute name `{name}` in line `{line}`. Names are lowercase "
            "letters, digits and underscores, starting with a letter."
        )
    type_part, comment = _split_outside_quotes(right, "#")
    comment = (comment or "").strip()
    if comment.startswith(":"):
        raise DeclarationError(f"Table {table}: the comment of `{name}` must not start with `:`.")
    try:
        info = parse_type(type_part)
    except DataJointError as exc:
        raise DeclarationError(f"Table {table}, attribute `{name}`: {exc} (line `{line}`)") from None
    if not info.core:
        logger.warning(
            "Native type '%s' is used for %s.%s; it is not portable across backends. "
            "Consider using a core type.",
            info.declared,
            table,
            name,
        )
    _refuse_nul(comment, f"the comment of attribute `{name}`", table)
    for member in info.enum_values:
        _refuse_nul(member, f"an enum member of attribute `{name}`", table)
    default, nullable = (None, False)
    if default_part is not None:
        _refuse_nul(default_part, f"the default of attribute `{name}`", table)
        default, nullable = _normalize_default(default_part, name, table, info.category)
    if in_key and nullable:
        raise DeclarationError(
            f"Table {table}: primary-key attribute `{name}` cannot default to null. Move it below "
            "the `---` line or remove `= null`."
        )
    if in_key and info.codec is not None:
        raise DeclarationError(
            f"Table {table}: primary-key attribute `{name}` has codec type {info.declared}; codec values "
            "cannot identify rows. Move it below the `---` line and key the table by a core type."
        )
    if info.category in ("bytes", "json") and default not in (None, "NULL"):
        raise DeclarationError(
            f"Table {table}: attribute `{name}` of type {info.declared} accepts only a null default."
        )
    autoincrement = "auto_increment" in info.declared or info.declared == "serial"
    return Attribute(
        name=name,
        type=info.declared,
        category=info.category,
        in_key=in_key,
        nullable=nullable,
        default=default,
        comment=comment,
        core=info.core,
        autoincrement=autoincrement,
        typeinfo=info,
    )


def _resolve_reference(ref: str, context: dict[str, Any], table: str, line: str):
    try:
        target = eval(ref, {"__builtins__": {}}, dict(context))  # noqa: S307 - DataJoint semantics
    except NameError as exc:
        raise DeclarationError(
            f"Table {table}: foreign key `{line}` refers to {exc.args[0].split()[1] if ' ' in exc.args[0] else ref}, "
            "which is not defined where the table is declared. Define or import the parent table "
            "first (or pass context= to the Schema)."
        ) from None
    except Exception as exc:
        raise DeclarationError(f"Table {table}: cannot evaluate foreign key `{line}`: {exc}") from None
    if isinstance(target, type):
        target = target()
    resolver = getattr(target, "_foreign_key_target", None)
    if resolver is None:
        raise DeclarationError(
            f"Table {table}: foreign key `{line}` must reference a table or its .proj(...); got "
            f"{type(target).__name__}."
        )
    return resolver()


def parse_definition(definition: str, context: dict[str, Any], table: str, *, auto_populated: bool = False,
                     allow_new_pk: bool = False) -> TableSpec:
    """Parse a definition string; ``table`` is used in error messages."""
    if not isinstance(definition, str):
        raise DeclarationError(f"Table {table}: `definition` must be a string.")
    lines = [ln.strip() for ln in re.split(r"\s*\n\s*", definition.strip()) if ln.strip()]
    comment = ""
    if lines and lines[0].startswith("#"):
        comment = lines.pop(0)[1:].strip()
        if comment.startswith(":"):
            raise DeclarationError(f"Table {table}: the table comment must not start with `:`.")
        _refuse_nul(comment, "the table comment", table)
    in_key = True
    attributes: dict[str, Attribute] = {}
    primary_key: list[str] = []
    foreign_keys: list[ForeignKeySpec] = []
    indexes: list[tuple[bool, list[str]]] = []
    native_pk: list[str] = []
    for line in lines:
        if line.startswith("---") or line.startswith("___"):
            if not in_key:
                raise DeclarationError(f"Table {table}: more than one `---` separator.")
            in_key = False
            continue
        if line.startswith("#"):
            continue
        if line.startswith("->"):
            match = FK.match(line)
            if not match:
                raise DeclarationError(f"Table {table}: cannot parse foreign key line `{line}`.")
            options = {o.strip().lower() for o in (match.group("opts") or "").split(",") if o.strip()}
            unknown = options - FK_OPTIONS
            if unknown:
                raise DeclarationError(
                    f'Table {table}: Invalid foreign key option "{sorted(unknown)[0]}" in `{line}`. '
                    "Options are nullable and unique."
                )
            nullable = "nullable" in options
            if nullable and in_key:
                raise DeclarationError(
                    f"Table {table}: a primary-key foreign key cannot be nullable (`{line}`). Move it "
                    "below the `---` line."
                )
            target = _resolve_reference(match.group("ref"), context, table, line)
            attr_map: dict[str, str] = {}
            for parent_attr in target.primary_key:
                child_name = target.renames.get(parent_attr, parent_attr)
                attr_map[child_name] = parent_attr
                source = target.heading[parent_attr]
                if child_name in attributes:
                    continue  # already declared (shared ancestor): reuse it
                attributes[child_name] = replace(
                    source,
                    name=child_name,
                    in_key=in_key,
                    nullable=nullable,
                    default="NULL" if nullable else None,
                    autoincrement=False,
                    original_name=None,
                    lineage=source.lineage
                    or f"{target.schema}.{target.table}.{parent_attr}",
                )
                if in_key:
                    primary_key.append(child_name)
            foreign_keys.append(
                ForeignKeySpec(
                    parent_schema=target.schema,
                    parent_table=target.table,
                    attr_map=attr_map,
                    nullable=nullable,
                    unique="unique" in options,
                    in_key=in_key,
                    parent_class=target.class_name,
                )
            )
            if "unique" in options:
                indexes.append((True, list(attr_map)))
            continue
        match = INDEX.match(line)
        if match:
            cols = [c.strip().strip("`\"") for c in match.group("cols").split(",") if c.strip()]
            if not cols:
                raise DeclarationError(f"Table {table}: empty index in `{line}`.")
            indexes.append((bool(match.group("unique")), cols))
            continue
        attr = parse_attribute(line, in_key, table)
        if attr.name in attributes:
            raise DeclarationError(f"Table {table}: attribute `{attr.name}` is declared twice.")
        attributes[attr.name] = attr
        if in_key:
            primary_key.append(attr.name)
            native_pk.append(attr.name)
    for unique, cols in indexes:
        for col in cols:
            if col not in attributes:
                raise DeclarationError(
                    f"Table {table}: index refers to unknown attribute `{col}`. Index only declared "
                    "attributes."
                )
    if auto_populated and native_pk and not allow_new_pk:
        raise DeclarationError(
            f"Auto-populated table {table} has non-FK primary key attribute(s) "
            f"{', '.join(native_pk)}. Its primary key must come from foreign keys; put new "
            "dimensions in a Part table, or set config['jobs.allow_new_pk_fields_in_computed_tables'] = True "
            "(the default, as DataJoint 2.3.5 behaves; it is False here)."
        )
    if not primary_key:
        singleton = Attribute(
            name="_singleton",
            type="bool",
            category="bool",
            in_key=True,
            default="'1'",
            comment="singleton primary key",
            typeinfo=parse_type("bool"),
        )
        attributes = {"_singleton": singleton, **attributes}
        primary_key = ["_singleton"]
    ordered = [attributes[k] for k in primary_key] + [a for n, a in attributes.items() if n not in primary_key]
    return TableSpec(ordered, primary_key, foreign_keys, indexes, comment)
