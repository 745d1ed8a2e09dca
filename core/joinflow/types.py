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
    (re.compile(r"^(decimal|numeric|dec|fixed)(\s*\(.*\))?(\s+unsigned)?$"), "decimal"),
    (re.compile(r"^(float|double( precision)?|real)(\s*\(.*\))?(\s+unsigned)?$"), "float"),
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


def split_enum_values(body: str) -> tuple[str, ...]:
    """``'a', 'b'`` -> ("a", "b"); quotes doubled inside a value are unescaped."""
    values = []
    for match in re.finditer(r"""\s*(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)")\s*(,|$)""", body):
        single, double = match.group(1), match.group(2)
        values.append(single.replace("''", "'") if single is not None else double.replace('""', '"'))
    if not values:
        raise DeclarationError(f"enum needs quoted values, got enum({body})")
    return tuple(values)


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
