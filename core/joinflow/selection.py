"""Selecting part of a pipeline, per-step settings, and a step's code version.

Used by :mod:`joinflow.pipeline` (``Pipeline(..., select=, exclude=, settings=)``); the
orchestrator adapters reach all of it through that module.

Selector grammar (as dbt's node selection, on the foreign-key graph):

* a table: its class name (``Spikes``), ``Master.Part``, its step name ``module:Class``,
  its full table name or ``schema.table_name``;
* ``schema:NAME``: every table of that schema (database); ``tier:TIER``: every table of
  that tier (``lookup``, ``manual``, ``imported``, ``computed``, ``part``); ``*``: every table;
* ``+SELECTOR``: the tables and all their ancestors; ``SELECTOR+``: and all their descendants;
* ``A B`` (space-separated) or a list: union; ``A,B``: intersection.

A part table always goes with its master (a part is filled by its master's ``make``).
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import marshal
import textwrap
from typing import Any, Iterable, Mapping

from .errors import DataJointError

SELECTOR_TIERS = ("lookup", "manual", "imported", "computed", "part")

# Well-known per-step settings: name -> (check, what it must be).  Adapters map these to their
# own options; keys with a dot ("airflow.priority_weight") are adapter-specific and kept as given.
def _int_at_least(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number_at_least(low: float, strict: bool = False):
    def check(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and (v > low if strict else v >= low)
    return check


def _text(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _tag_list(v) -> bool:
    return isinstance(v, (list, tuple)) and all(_text(t) for t in v)


SETTINGS = {
    "retries": (_int_at_least(0), "an integer >= 0 (retries of a failed populate task)"),
    "retry_delay": (_number_at_least(0), "a number of seconds >= 0 (wait before a retry)"),
    "timeout": (_number_at_least(0, strict=True), "a number of seconds > 0 (a populate task's time limit)"),
    "pool": (_text, "a non-empty string (a pool / concurrency slot name)"),
    "queue": (_text, "a non-empty string (a worker queue name)"),
    "tags": (_tag_list, "a list of non-empty strings"),
    "batch_size": (_int_at_least(1), "an integer >= 1 (keys per populate task)"),
    "priority": (_int_at_least(-(2**31)), "an integer (higher runs first where supported)"),
}

SETTINGS_ATTRIBUTE = "orchestration"  # the table class attribute holding its settings


def check_settings(settings: Any, where: str) -> dict:
    """A validated, JSON-able copy of one step's settings; errors name ``where`` and the key."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise DataJointError(f"Settings of {where} must be a dict such as {{'retries': 2, 'pool': 'db'}}, "
                             f"not {settings!r}.")
    result = {}
    for key, value in settings.items():
        if not isinstance(key, str):
            raise DataJointError(f"Setting name {key!r} of {where} must be a string.")
        if "." in key or "/" in key:  # adapter-specific ("airflow.priority_weight"): kept as given
            result[key] = value
            continue
        if key not in SETTINGS:
            close = difflib.get_close_matches(key, SETTINGS, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise DataJointError(f"Unknown setting {key!r} of {where}.{hint} Known settings: "
                                 f"{', '.join(SETTINGS)}; adapter-specific ones contain a dot "
                                 "(e.g. 'airflow.priority_weight').")
        check, what = SETTINGS[key]
        if not check(value):
            raise DataJointError(f"Setting {key!r} of {where} must be {what}, not {value!r}.")
        result[key] = list(value) if key == "tags" else value
    return result


# -- the graph the selectors work on ---------------------------------------------------------------
class Graph:
    """Tables (objects with name, tier, schema, table_name, full_table_name, parents, parts)
    grouped in units (a master with its parts) and linked by foreign keys."""

    def __init__(self, nodes: Iterable[Any]):
        self.nodes = {n.full_table_name: n for n in nodes}
        self.order = list(self.nodes)
        self.master_of = {p: n.full_table_name for n in self.nodes.values() for p in n.parts if p in self.nodes}
        self.members: dict[str, list[str]] = {u: [u] for u in self.order if u not in self.master_of}
        for part, master in self.master_of.items():
            self.members.setdefault(master, [master]).append(part)
        self.parents: dict[str, set[str]] = {u: set() for u in self.members}
        self.children: dict[str, set[str]] = {u: set() for u in self.members}
        for unit, members in self.members.items():
            for member in members:
                for parent in self.nodes[member].parents:
                    if parent in self.nodes and self.unit(parent) != unit:
                        self.parents[unit].add(self.unit(parent))
                        self.children[self.unit(parent)].add(unit)

    def unit(self, full: str) -> str:
        return self.master_of.get(full, full)

    def ancestors(self, units: set[str]) -> set[str]:
        return self._walk(units, self.parents)

    def descendants(self, units: set[str]) -> set[str]:
        return self._walk(units, self.children)

    @staticmethod
    def _walk(start: set[str], edges: dict[str, set[str]]) -> set[str]:
        found, frontier = set(start), list(start)
        while frontier:
            for nxt in edges[frontier.pop()]:
                if nxt not in found:
                    found.add(nxt)
                    frontier.append(nxt)
        return found

    def tables(self, units: set[str]) -> set[str]:
        return {m for u in units for m in self.members[u]}

    # -- one selector ---------------------------------------------------------------------------------
    def _names(self, node) -> list[str]:
        qualname = node.name.partition(":")[2]
        names = [node.name, node.full_table_name, qualname, qualname.rpartition(".")[2]]
        if node.schema and node.table_name:
            names.append(f"{node.schema}.{node.table_name}")
        return names

    def _by_name(self, text: str) -> set[str]:
        exact = {full for full, n in self.nodes.items() if text in self._names(n)[:2]}
        if exact:
            return exact
        return {full for full, n in self.nodes.items() if text in self._names(n)[2:]}

    def vocabulary(self) -> list[str]:
        words = {"*"} | {f"tier:{t}" for t in SELECTOR_TIERS}
        for n in self.nodes.values():
            words.update(self._names(n))
            if n.schema:
                words.add(f"schema:{n.schema}")
        return sorted(words)

    def _unknown(self, atom: str, selector: str, argument: str) -> DataJointError:
        close = difflib.get_close_matches(atom, self.vocabulary(), n=5, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        return DataJointError(f"{argument}={selector!r}: {atom!r} names no table of this pipeline.{hint} "
                              "A selector is a class name, module:Class, schema:NAME, tier:TIER or *, with "
                              "+ before (ancestors) or after (descendants).")

    def atom(self, atom: str, selector: str, argument: str) -> set[str]:
        """The units one selector atom (``+name+`` and the like) selects."""
        text = atom
        up = text.startswith("+")
        down = text.endswith("+") and len(text) > 1
        text = text[1 if up else 0: len(text) - (1 if down else 0)]
        if not text:
            raise DataJointError(f"{argument}={selector!r}: empty selector {atom!r}.")
        method, sep, value = text.partition(":")
        by_name = self._by_name(text)
        if text == "*":
            tables = set(self.nodes)
        elif sep and method in ("schema", "tier"):
            if method == "tier":
                if value.lower() not in SELECTOR_TIERS:
                    raise DataJointError(f"{argument}={selector!r}: unknown tier {value!r}; tiers are "
                                         f"{', '.join(SELECTOR_TIERS)}.")
                tables = {f for f, n in self.nodes.items() if n.tier.lower() == value.lower()}
            else:
                tables = {f for f, n in self.nodes.items() if n.schema == value}
                if not tables and not by_name:
                    raise self._unknown(text, selector, argument)
            if tables and by_name:
                raise DataJointError(f"{argument}={selector!r}: {text!r} is both a {method} selector and the "
                                     f"table {self.nodes[min(by_name)].name}; name the table by its full "
                                     "table name instead, or rename the module.")
            tables = tables or by_name
            if not tables:
                raise DataJointError(f"{argument}={selector!r}: {text!r} matches no table of this pipeline "
                                     f"(its tiers: {', '.join(sorted({n.tier for n in self.nodes.values()}))}).")
        else:
            tables = by_name
            if not tables:
                raise self._unknown(text, selector, argument)
            if len({self.unit(f) for f in tables}) > 1:
                raise DataJointError(f"{argument}={selector!r}: {text!r} names several tables: "
                                     f"{', '.join(sorted(self.nodes[f].name for f in tables))}; "
                                     "use module:Class to pick one.")
        units = {self.unit(f) for f in tables}
        result = set(units)
        if up:
            result |= self.ancestors(units)
        if down:
            result |= self.descendants(units)
        return result

    def resolve(self, selectors: list[str] | None, argument: str) -> set[str]:
        """Units selected by a list of selectors (union; ``A,B`` within one: intersection)."""
        found: set[str] = set()
        for selector in selectors or ():
            for term in selector.split():
                parts = [self.atom(atom, selector, argument) for atom in term.split(",")]
                found |= set.intersection(*parts)
        return found


def normalize_selectors(value: Any, argument: str) -> list[str] | None:
    """``select=`` / ``exclude=`` as a list of non-empty strings (None: not given)."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(isinstance(i, str) for i in items):
        raise DataJointError(f"{argument}= must be a selector string or a list of them "
                             f"(e.g. '+Spikes', 'schema:lab', 'tier:computed'), not {value!r}.")
    items = [i.strip() for i in items]
    if not items or not all(items):
        raise DataJointError(f"{argument}={value!r}: empty selector; leave {argument}= out to "
                             f"{'select every table' if argument == 'select' else 'exclude nothing'}.")
    return list(items)


# -- code version ----------------------------------------------------------------------------------------
CODE_MEMBERS = ("make", "make_fetch", "make_compute", "make_insert", "key_source")


def _source_bytes(member: Any) -> bytes:
    for attr in ("fget", "__func__"):  # property, classmethod / staticmethod
        member = getattr(member, attr, None) or member
    try:
        return textwrap.dedent(inspect.getsource(member)).encode()
    except (OSError, TypeError):
        code = getattr(inspect.unwrap(member), "__code__", None) if callable(member) else None
        if code is not None:  # no source file (exec, a frozen app): the compiled code, stable per Python
            return marshal.dumps(code)
        return type(member).__name__.encode()


def code_version(cls: type) -> str:
    """A short hash of the table's definition (and its parts') and the source of its ``make``,
    ``make_fetch``, ``make_compute``, ``make_insert`` and ``key_source`` (where the user's
    classes define them): the same in every process, different when that code changes."""
    digest = hashlib.sha256()
    digest.update(" ".join((getattr(cls, "definition", "") or "").split()).encode())
    for name in CODE_MEMBERS:
        owner = next((base for base in cls.__mro__ if name in vars(base)), None)
        if owner is None or owner.__module__.split(".")[0] == "joinflow":
            continue  # not defined, or the library's default
        digest.update(b"\0" + name.encode() + b"\0" + _source_bytes(vars(owner)[name]))
    from .user_tables import Part

    for attr, member in sorted(vars(cls).items()):  # its parts' definitions (the master fills them)
        if isinstance(member, type) and issubclass(member, Part):
            digest.update(b"\0part " + attr.encode() + b"\0" +
                          " ".join((getattr(member, "definition", "") or "").split()).encode())
    return digest.hexdigest()[:16]
