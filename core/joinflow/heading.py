"""Headings: the attributes of a table or query result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import logging

from .errors import DataJointError, UnknownAttributeError
from .types import TypeInfo, parse_type

logger = logging.getLogger("joinflow")

# ``:type:comment``; a quoted enum member inside the type may hold a colon
COMMENT_TYPE = re.compile(r"""^:(?P<type>(?:[^:'"]|'(?:[^']|'')*'|"(?:[^"]|"")*")+?):(?P<comment>.*)$""", re.S)


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str  # declared spelling: a core type, or the native type
    category: str
    in_key: bool = False
    nullable: bool = False
    default: str | None = None  # SQL default text (None: no default); "NULL" when nullable
    comment: str = ""
    core: bool = True
    autoincrement: bool = False
    lineage: str | None = None
    original_name: str | None = None  # before a rename by proj()
    sql_expression: str | None = None  # computed attributes of a projection
    typeinfo: TypeInfo | None = field(default=None, compare=False, repr=False)

    @property
    def is_hidden(self) -> bool:
        return self.name.startswith("_")

    @property
    def original_type(self) -> str:
        """DataJoint 2.x's name for the declared type (``uuid``, ``int32``, ``<blob>``): ``type``."""
        return self.type

    @property
    def has_default(self) -> bool:
        return self.default is not None or self.nullable or self.autoincrement

    @property
    def is_numeric(self) -> bool:
        return self.category in ("int", "float", "decimal", "bool")

    @property
    def codec(self):
        """The resolved codec chain of a ``<codec>`` attribute, else None."""
        return self.typeinfo.codec if self.typeinfo is not None else None

    @property
    def enum_values(self) -> tuple[str, ...]:
        return self.typeinfo.enum_values if self.typeinfo else ()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_encoder_memo", None)  # a backend's closure: per process, and not picklable
        return state

    def renamed(self, new_name: str) -> "Attribute":
        new = object.__new__(Attribute)  # a field-for-field copy: replace() re-runs __init__, slowly
        state = new.__dict__
        state.update(self.__dict__)
        state["name"] = new_name
        state["original_name"] = self.original_name or self.name
        state.pop("_encoder_memo", None)  # its messages name the attribute
        return new


def attribute_from_catalog(
    name: str,
    native_type: str,
    *,
    in_key: bool,
    nullable: bool,
    default: str | None,
    comment: str,
    autoincrement: bool = False,
    lineage: str | None = None,
) -> Attribute:
    """Rebuild an attribute from the database catalog: ``:type:`` comments give the core type."""
    comment = comment or ""
    match = COMMENT_TYPE.match(comment)
    info = None
    if match:
        try:
            info = parse_type(match.group("type"))
            comment = match.group("comment")
        except DataJointError as exc:
            if match.group("type").startswith("<"):
                logger.warning("Column %s (%s): %s It is read as its raw stored value.",
                               name, match.group("type"), exc)
            info = None
    if info is None:
        try:
            info = parse_type(native_type)
        except DataJointError:
            info = TypeInfo(native_type, "string", core=False)
    return Attribute(
        name=name,
        type=info.declared,
        category=info.category,
        in_key=in_key,
        nullable=nullable,
        default=default,
        comment=comment.strip(),
        core=info.core,
        autoincrement=autoincrement,
        lineage=lineage,
        typeinfo=info,
    )


class Heading:
    """Ordered attributes of a relation; hidden (``_``-prefixed) attributes are kept apart."""

    def __init__(self, attributes: Iterable[Attribute], table_comment: str = ""):
        self._all = all_ = {a.name: a for a in attributes}
        self.table_comment = table_comment
        self._visible = visible = {n: a for n, a in all_.items() if n[:1] != "_"}
        self.names = list(visible)
        self.primary_key = [n for n, a in visible.items() if a.in_key]
        self.secondary_attributes = [n for n, a in visible.items() if not a.in_key]
        self._shape_key = None

    @property
    def shape_key(self) -> tuple:
        """What a table's SQL depends on: its column names in order (hidden ones included) and
        which of them form the primary key (that orders the result's columns)."""
        key = self._shape_key
        if key is None:
            key = self._shape_key = (tuple(self._all), tuple(self.primary_key))
        return key

    @property
    def attributes(self) -> dict[str, Attribute]:
        return self._visible

    @property
    def all_attributes(self) -> dict[str, Attribute]:
        return self._all

    @property
    def hidden_attributes(self) -> list[str]:
        return [n for n in self._all if n.startswith("_")]

    def __getitem__(self, name: str) -> Attribute:
        try:
            return self._all[name]
        except KeyError:
            raise UnknownAttributeError(f"Attribute `{name}` is not in the heading.") from None

    def __contains__(self, name: str) -> bool:
        return name in self._visible

    def __iter__(self) -> Iterator[Attribute]:
        return iter(self._visible.values())

    def __len__(self) -> int:
        return len(self._visible)

    def __bool__(self) -> bool:
        return bool(self._all)

    def __repr__(self) -> str:
        lines = [f"# {self.table_comment}"] if self.table_comment else []
        for attr in self._visible.values():
            if not attr.in_key and attr.name == self.secondary_attributes[0]:
                lines.append("---")
            default = "" if attr.default is None or attr.in_key else f" = {attr.default}"
            if attr.nullable and not attr.in_key:
                default = " = null"
            comment = f"  # {attr.comment}" if attr.comment else ""
            lines.append(f"{attr.name}{default} : {attr.type}{comment}")
        return "\n".join(lines)

    def select(self, names: Iterable[str]) -> "Heading":
        return Heading([self._all[n] for n in names], self.table_comment)
