"""Core types of the definition language and their value categories.

A *core type* is portable (``int32``, ``varchar(16)``, ``datetime(3)``, ...); each backend
maps it to a native column type (backends/).  A *native type* (``mediumint``, ``text``)
is passed through with a warning and is not portable.  The category drives value
conversion on insert and fetch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import DeclarationError

INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

_CORE = [
    (re.compile(r"^int(8|16|32|64)$"), "int"),
    (re.compile(r"^float(32|64)$"), "float"),
    (re.compile(r"^bool$"), "bool"),
    (re.compile(r"^decimal\s*\(\s*\d+\s*,\s*\d+\s*\)$"), "decimal"),
    (re.compile(r"^char\s*\(\s*\d+\s*\)$"), "string"),
    (re.compile(r"^varchar\s*\(\s*\d+\s*\)$"), "string"),
    (re.compile(r"^enum\s*\(.+\)$", re.S), "enum"),
    (re.compile(r"^date$"), "date"),
    (re.compile(r"^datetime(\s*\(\s*\d\s*\))?$"), "datetime"),
    (re.compile(r"^uuid$"), "uuid"),
    (re.compile(r"^jsonb?$"), "json"),
    (re.compile(r"^bytes$"), "bytes"),
]

_NATIVE = [
    (re.compile(r"^(tiny|small|medium|big)?int(eger)?(\s*\(\d+\))?(\s+unsigned)?(\s+auto_increment)?$"), "int"),
    (re.compile(r"^serial$"), "int"),
    (re.compile(r"^(decimal|numeric|dec|fixed)(\s*\(\s*\d+\s*(,\s*\d+\s*)?\))?(\s+unsigned)?$"), "decimal"),
    (re.compile(r"^(float|double( precision)?|real)(\s*\(\s*\d+\s*(,\s*\d+\s*)?\))?(\s+unsigned)?$"), "float"),
    (re.compile(r"^(var)?char(acter)?(\s+varying)?\s*(\(\d+\))?$"), "string"),
    (re.compile(r"^(tiny|medium|long)?text$"), "string"),
    (re.compile(r"^time(\s*\(\d\))?$"), "time"),
    (re.compile(r"^timestamp(\s*\(\d\))?( without time zone)?$"), "datetime"),
    (re.compile(r"^bytea$"), "bytes"),
    (re.compile(r"^text$"), "string"),
    (re.compile(r"^year$"), "int"),
    (re.compile(r"^(tiny|small|medium|long)?blob$"), "bytes"),
    (re.compile(r"^boolean$"), "bool"),
]

UNSUPPORTED = re.compile(r"^(uint(8|16|32|64)|int24|float16)$")


@dataclass(frozen=True)
class TypeInfo:
    """A parsed attribute type."""

    declared: str  # the spelling kept in the column comment (core) or the native type
    category: str  # int float bool decimal string enum date datetime uuid json bytes time
    core: bool  # True for a portable core type
    length: int | None = None  # char/varchar length
    precision: int | None = None  # datetime fractional digits / decimal precision
    scale: int | None = None  # decimal scale
    enum_values: tuple[str, ...] = ()
    codec: Any = field(default=None, compare=False)  # codecs.CodecChain for <name[@store]> types


_ENUM_ITEM = r"""\s*(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)")\s*"""
_ENUM_LIST = re.compile(rf"{_ENUM_ITEM}(?:,{_ENUM_ITEM})*", re.S)


def split_enum_values(body: str) -> tuple[str, ...]:
    """``'a', 'b'`` -> ("a", "b"); quotes doubled inside a value are unescaped.

    The body must be quoted values separated by commas and nothing else: the members are data
    (each backend quotes them itself), never SQL text copied into a statement."""
    if not _ENUM_LIST.fullmatch(body):
        raise DeclarationError(
            f"enum needs quoted values separated by commas (quotes inside a value doubled: 'it''s'), "
            f"got enum({body})"
        )
    values = []
    for match in re.finditer(rf"{_ENUM_ITEM}(?:,|$)", body, re.S):
        single, double = match.group(1), match.group(2)
        values.append(single.replace("''", "'") if single is not None else double.replace('""', '"'))
    return tuple(values)


# -- defaults -----------------------------------------------------------------------------------
# An attribute's default is kept (Attribute.default) in one dialect-free form that the backends
# read with parse_default and write with their own quoting: 'text' (quotes doubled), a bare
# number, NULL, or CURRENT_TIMESTAMP[(p)] [ON UPDATE CURRENT_TIMESTAMP[(p)]].
CURRENT_TIMESTAMP_DEFAULT = re.compile(
    r"current_timestamp(?:\s*\(\s*([0-6])\s*\))?"
    r"(\s+on\s+update\s+current_timestamp(?:\s*\(\s*([0-6])\s*\))?)?",
    re.I,
)
QUOTED_DEFAULT = re.compile(r"'((?:[^']|'')*)'", re.S)
NUMBER_DEFAULT = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Default:
    """A parsed default: kind "null", "now" (CURRENT_TIMESTAMP) or "value" (``text``)."""

    kind: str
    text: str = ""
    precision: int | None = None  # of CURRENT_TIMESTAMP(p)
    on_update: bool = False
    update_precision: int | None = None

    @property
    def canonical(self) -> str:
        if self.kind == "null":
            return "NULL"
        if self.kind == "now":
            text = "CURRENT_TIMESTAMP" + (f"({self.precision})" if self.precision is not None else "")
            if self.on_update:
                text += " ON UPDATE CURRENT_TIMESTAMP" + (
                    f"({self.update_precision})" if self.update_precision is not None else "")
            return text
        return "'" + self.text.replace("'", "''") + "'"


def current_timestamp_default(text: str) -> Default | None:
    match = CURRENT_TIMESTAMP_DEFAULT.fullmatch(text.strip())
    if not match:
        return None
    return Default("now", precision=None if match.group(1) is None else int(match.group(1)),
                   on_update=match.group(2) is not None,
                   update_precision=None if match.group(3) is None else int(match.group(3)))


def parse_default(text: str | None) -> Default | None:
    """The stored form of a default (Attribute.default) -> Default; None: no default.

    Raises DeclarationError for anything that is not a literal: the text is never SQL."""
    if text is None:
        return None
    value = text.strip()
    if value.upper() == "NULL":
        return Default("null")
    now = current_timestamp_default(value)
    if now is not None:
        return now
    quoted = QUOTED_DEFAULT.fullmatch(value)
    if quoted:
        return Default("value", quoted.group(1).replace("''", "'"))
    if NUMBER_DEFAULT.fullmatch(value):
        return Default("value", value)
    raise DeclarationError(f"{text!r} is not a literal default")


def parse_type(text: str) -> TypeInfo:
    """Parse a type spelling from a definition (``varchar(16)``, ``enum('a','b')``...)."""
    spelled = text.strip()
    low = spelled.lower()
    if low.startswith("<"):
        from .codecs import resolve

        chain = resolve(spelled)
        base = parse_type(chain.dtype)
        # category/length/precision are the stored dtype's; `declared` keeps the codec spelling
        return TypeInfo(chain.spec, base.category, True, base.length, base.precision, base.scale,
                        base.enum_values, codec=chain)
    if UNSUPPORTED.match(low):
        raise DeclarationError(
            f"Unsupported attribute type {spelled}: unsigned and 24-bit integers and float16 are "
            "not core types. Use int16/int32/int64 or float32."
        )
    for pattern, category in _CORE:
        if pattern.match(low):
            return _details(spelled if category == "enum" else low, category, core=True)
    for pattern, category in _NATIVE:
        if pattern.match(low):
            return _details(low, category, core=False)
    raise DeclarationError(f"Unsupported attribute type {spelled}")


def _details(declared: str, category: str, core: bool) -> TypeInfo:
    nums = [int(n) for n in re.findall(r"\d+", declared)] if category != "enum" else []
    if category == "enum":
        inner = declared[declared.index("(") + 1 : declared.rindex(")")]
        values = split_enum_values(inner)
        return TypeInfo(declared, category, core, enum_values=values)  # spelled as declared
    if category == "string" and nums:
        return TypeInfo(declared, category, core, length=nums[0])
    if category == "datetime":
        precision = nums[0] if nums else 0
        if precision > 6:
            raise DeclarationError(f"datetime precision must be 0..6, got {declared}")
        return TypeInfo(declared, category, core, precision=precision)
    if category == "decimal" and nums:
        return TypeInfo(declared, category, core, precision=nums[0], scale=nums[1] if len(nums) > 1 else 0)
    return TypeInfo(declared, category, core)


def int_range(declared: str) -> tuple[int, int] | None:
    return INT_RANGES.get(declared)
