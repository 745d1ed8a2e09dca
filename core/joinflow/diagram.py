"""Pipeline diagrams: the dependency graph drawn in the notation of DataJoint 2.x.

``dj.Diagram(source)`` is a :class:`networkx.DiGraph` whose nodes are the full table names
shown and whose edges are the foreign keys between them.  The source is a table class or
instance, a :class:`~joinflow.Schema`, a module with a ``schema`` attribute (a pipeline
module or a virtual module), another diagram, or a list of these.

Notation (paper §2.5): the tier is told by shape and colour (Manual: green rounded box,
Lookup: grey rounded box, Imported: blue ellipse, Computed: red-orange ellipse, Part:
small plain text nested by its master); a solid line is a foreign key inside the child's
primary key (identity inheritance), a dashed line one outside it; a thick line is a
foreign key that is the child's whole primary key (one-to-one); a renamed foreign key is
amber; names of tables that bring new primary-key attributes (dimensions) are underlined;
each schema is one dashed cluster.  Flow follows ``display.diagram_direction`` (LR).

SVG and PNG need Graphviz's ``dot`` program; Mermaid text and DOT source do not.
"""

from __future__ import annotations

import html
import io
import logging
import re
import shutil
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import networkx as nx

from .errors import DataJointError
from .table import FreeTable, Table, part_master, tier_of, to_camel_case

logger = logging.getLogger("joinflow")

DIRECTIONS = ("LR", "TB", "RL", "BT")
INSTALL_HINT = (
    "Graphviz's `dot` program is not installed (or not on PATH), so SVG and PNG cannot be made. "
    "Install it: `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
    "`conda install graphviz`. Mermaid output (diagram.make_mermaid(), save('x.mmd')) and DOT "
    "source (save('x.dot')) work without it."
)
SAVE_FORMATS = {".png": "png", ".svg": "svg", ".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot",
                ".gv": "dot"}


class GraphvizMissingError(DataJointError):
    """Raised when SVG/PNG output is asked for and the ``dot`` program is absent."""


@dataclass(frozen=True)
class TierStyle:
    shape: str
    fill: str
    line: str
    font: str
    rounded: bool = False
    fontsize: float = 11.0


# my own palette; the tiers must be told apart in colour and in grey-scale print
STYLES = {
    "Manual": TierStyle("box", "#d7efd2", "#2f7d32", "#1b4d1f", rounded=True),
    "Lookup": TierStyle("box", "#e4e4e4", "#6b6b6b", "#333333", rounded=True),
    "Imported": TierStyle("ellipse", "#cfe0f7", "#2a5fa8", "#173a6b"),
    "Computed": TierStyle("ellipse", "#fbd3c4", "#c0431f", "#7a2710"),
    "Part": TierStyle("plaintext", "none", "none", "#3d3d3d", fontsize=9.0),
    "Other": TierStyle("circle", "#fff3b0", "#b39500", "#5c4c00", fontsize=9.0),
    "Collapsed": TierStyle("box3d", "#f2efe6", "#7a7361", "#3b372c"),
}
DARK_STYLES = {
    "Manual": TierStyle("box", "#1f4a22", "#7fcf83", "#e2f6e3", rounded=True),
    "Lookup": TierStyle("box", "#3a3a3a", "#a9a9a9", "#ededed", rounded=True),
    "Imported": TierStyle("ellipse", "#1c355c", "#86b2ee", "#e3eefc"),
    "Computed": TierStyle("ellipse", "#5c2414", "#f39a7b", "#fde6dd"),
    "Part": TierStyle("plaintext", "none", "none", "#d8d8d8", fontsize=9.0),
    "Other": TierStyle("circle", "#5a4c00", "#e0c640", "#fff7cc", fontsize=9.0),
    "Collapsed": TierStyle("box3d", "#3b382f", "#b8b09a", "#f2efe6"),
}
COLLAPSED_PREFIX = "\0collapsed:"  # drawn-node key of a collapsed schema (never a table name)
RENAMED_COLOR = "#C77D3A"
STATUS_COLORS = {"error": "#c62828", "pending": "#d9a400", "done": "#2f7d32"}


def dot_available() -> bool:
    """True when Graphviz's ``dot`` program is on PATH."""
    return shutil.which("dot") is not None


# -- nodes and edges ---------------------------------------------------------------------------
@dataclass
class _Catalog:
    """What diagrams built from one connection share: the whole FK graph and table facts."""

    connection: Any
    graph: nx.DiGraph
    info: dict[str, dict] = field(default_factory=dict)
    classes: dict[str, type] = field(default_factory=dict)  # full name -> user class, when known

    def node(self, full: str) -> dict:
        found = self.info.get(full)
        if found is None:
            backend = self.connection.backend
            schema, table = backend.split_full_name(full)
            tier = tier_of(table) or "Other"
            master = part_master(table)
            cls = self.classes.get(full)
            if tier == "Part":
                label = f"{to_camel_case(master)}.{to_camel_case(table[len(master) + 2:])}"
            else:
                label = cls.__name__ if cls is not None and cls.__name__ != "FreeTable" else to_camel_case(table)
            heading = FreeTable(self.connection, full).heading
            pk = list(heading.primary_key)
            inherited: set[str] = set()
            for parent in self.graph.predecessors(full) if full in self.graph else ():
                for attr_map in self.graph.edges[parent, full]["attr_maps"]:
                    inherited.update(attr_map)
            found = self.info[full] = {
                "schema": schema, "table_name": table, "tier": tier, "label": label,
                "master": backend.full_table_name(schema, master) if master else None,
                "primary_key": pk, "new_dimensions": [a for a in pk if a not in inherited],
                "comment": heading.table_comment,
            }
        return found

    def edge(self, parent: str, child: str) -> dict:
        attr_maps = self.graph.edges[parent, child]["attr_maps"]
        child_pk = set(self.node(child)["primary_key"])
        fk_attrs = set().union(*attr_maps) if attr_maps else set()
        primary = bool(attr_maps) and all(set(m) <= child_pk for m in attr_maps)
        return {
            "attr_maps": attr_maps,
            "primary": primary,
            "one_to_one": primary and any(set(m) == child_pk for m in attr_maps),
            "aliased": any(c != p for m in attr_maps for c, p in m.items()),
            "multi": len(attr_maps) > 1,
            "fk_attributes": sorted(fk_attrs),
        }


def _catalog_for(connection) -> _Catalog:
    deps = connection.dependencies
    deps.load()
    return _Catalog(connection, deps.graph.copy())


def _schema_tables(connection, schema: str) -> list[str]:
    backend = connection.backend
    return [backend.full_table_name(schema, t) for t in backend.list_tables(connection, schema)
            if not t.startswith("~")]


def _user_classes(source: Any) -> list[type]:
    """Declared table classes found in a schema or module (with their parts)."""
    from .schemas import Schema
    from .user_tables import Part, UserTable

    if isinstance(source, Schema):
        found = list(source.classes)
    elif isinstance(source, types.ModuleType):
        found = [v for v in vars(source).values()
                 if isinstance(v, type) and issubclass(v, UserTable) and not issubclass(v, Part)
                 and v.database is not None]
    elif isinstance(source, type) and issubclass(source, UserTable):
        found = [source]
    else:
        found = []
    result = []
    for cls in found:
        result.append(cls)
        result += [m for m in vars(cls).values() if isinstance(m, type) and issubclass(m, Part)]
    return result


def _resolve(source: Any) -> tuple[Any, list[str], list[type]]:
    """(connection, full table names, known classes) of a diagram source."""
    from .schemas import Schema

    if isinstance(source, type) and issubclass(source, Table) and not issubclass(source, FreeTable):
        source_table = source()
        return source_table.connection, [source_table.full_table_name], _user_classes(source)
    if isinstance(source, Table):
        classes = [] if isinstance(source, FreeTable) else _user_classes(type(source))
        return source.connection, [source.full_table_name], classes
    if isinstance(source, Schema):
        source._require_active()
        return source.connection, _schema_tables(source.connection, source.database), _user_classes(source)
    if isinstance(source, types.ModuleType):
        schema = getattr(source, "schema", None)
        if not isinstance(schema, Schema):
            raise DataJointError(
                f"Module {source.__name__} has no `schema` attribute (a dj.Schema); give the schema, "
                "a table class, or a module that defines `schema = dj.Schema(...)`."
            )
        schema._require_active()
        return schema.connection, _schema_tables(schema.connection, schema.database), \
            _user_classes(source) + _user_classes(schema)
    raise DataJointError(
        f"Cannot make a diagram of {source!r}: give a table class or instance, a dj.Schema, a module "
        "with a `schema` attribute, or a list of these (Diagram.from_sequence)."
    )


# -- the diagram ----------------------------------------------------------------------------------
class Diagram(nx.DiGraph):
    """The tables of a pipeline and their foreign keys, ready to be drawn.

    ``Diagram(source, context=None, *, status=False)``; ``status=True`` labels each
    Imported/Computed table with its done / pending / error counts (read-only queries).
    """

    def __init__(self, source: Any = None, context: dict | None = None, *, status: bool = False):
        super().__init__()
        self.context = context
        self.show_status = status
        # data-aware state: per table, the restrictions applied one after the other (AND); each may
        # itself be a list (OR).  _mode tells which operation made them: cascade, trace or restrict.
        self._restrictions: dict[str, list] = {}
        self._mode: str | None = None
        self._seed: str | None = None
        self._collapsed: set[str] = set()
        if source is None:  # an empty graph (networkx makes these when copying)
            self._catalog = None
            return
        if isinstance(source, Diagram):
            self._catalog = source._catalog
            self.show_status = status or source.show_status
            self._show(set(source.nodes))
            source._pass_state(self, set(source.nodes))
            return
        if isinstance(source, (list, tuple, set)):
            combined = Diagram.from_sequence(list(source))
            self._catalog = combined._catalog
            self._show(set(combined.nodes))
            combined._pass_state(self, set(combined.nodes))
            return
        connection, names, classes = _resolve(source)
        self._catalog = _catalog_for(connection)
        for cls in classes:
            self._catalog.classes.setdefault(cls().full_table_name, cls)
        self._show(set(names))

    @classmethod
    def from_sequence(cls, sequence: Iterable[Any]) -> "Diagram":
        """The union of the diagrams of each item."""
        items = list(sequence)
        if not items:
            raise DataJointError("Diagram.from_sequence needs at least one table, schema or module.")
        result = cls(items[0])
        for item in items[1:]:
            result = result + cls(item)
        return result

    # -- building -------------------------------------------------------------------------------
    def _derive(self, names: set[str]) -> "Diagram":
        new = Diagram(status=self.show_status)
        new.context = self.context
        new._catalog = self._catalog
        new._show(names)
        self._pass_state(new, names)
        return new

    def _pass_state(self, new: "Diagram", names: set[str]) -> None:
        """Give ``new`` this diagram's restrictions and collapsed tables among ``names``."""
        new._restrictions = {n: c for n, c in self._restrictions.items() if n in names}
        new._mode = self._mode if new._restrictions else None
        new._seed = self._seed if self._seed in names else None
        new._collapsed = self._collapsed & names

    def _show(self, names: set[str]) -> None:
        catalog = self._catalog
        for full in names:
            self.add_node(full, **catalog.node(full))
        graph = catalog.graph
        for parent, child in graph.subgraph(names).edges:
            self.add_edge(parent, child, **catalog.edge(parent, child))

    def _full_graph(self) -> nx.DiGraph:
        graph = self._catalog.graph
        missing = [n for n in self.nodes if n not in graph]
        if missing:
            graph = graph.copy()
            graph.add_nodes_from(missing)
        return graph

    def _combine(self, other: "Diagram", names: set[str]) -> "Diagram":
        if other._catalog.connection is not self._catalog.connection:
            raise DataJointError("Cannot combine diagrams of different connections (databases).")
        mine, theirs = self._catalog, other._catalog
        if mine is not theirs:  # diagrams made at different times: merge what each one knows
            merged = _Catalog(mine.connection, nx.compose(mine.graph, theirs.graph),
                              {**theirs.info, **mine.info}, {**theirs.classes, **mine.classes})
        else:
            merged = mine
        new = Diagram(status=self.show_status or other.show_status)
        new.context = self.context
        new._catalog = merged
        new._show(names)
        # restrictions: each operand's, for the tables kept; one table restricted differently by both
        # has no single meaning here
        for name in names & set(self._restrictions) & set(other._restrictions):
            if self._restrictions[name] is not other._restrictions[name]:
                raise DataJointError(
                    f"Both diagrams restrict {name} differently, so their combination is ambiguous. "
                    "Combine the plain diagrams first, then restrict the result: (d1 + d2).restrict(expr)."
                )
        new._restrictions = {n: c for d in (other, self) for n, c in d._restrictions.items() if n in names}
        new._mode = (self._mode or other._mode) if new._restrictions else None
        new._seed = next((d._seed for d in (self, other) if d._seed in names), None)
        # collapsed: a table stays collapsed only if no operand that holds it shows it expanded
        expanded = {n for d in (self, other) for n in d.nodes if n not in d._collapsed}
        new._collapsed = ((self._collapsed | other._collapsed) & names) - expanded
        return new

    def __add__(self, other: "Diagram | int") -> "Diagram":
        """``d + n``: add n generations of children; ``d1 + d2``: union."""
        if isinstance(other, bool) or not isinstance(other, (int, Diagram)):
            return NotImplemented
        if isinstance(other, int):
            return self._grow(other, descendants=True)
        return self._combine(other, set(self.nodes) | set(other.nodes))

    def __sub__(self, other: "Diagram | int") -> "Diagram":
        """``d - n``: add n generations of parents; ``d1 - d2``: difference."""
        if isinstance(other, bool) or not isinstance(other, (int, Diagram)):
            return NotImplemented
        if isinstance(other, int):
            return self._grow(other, descendants=False)
        return self._combine(other, set(self.nodes) - set(other.nodes))

    def __mul__(self, other: "Diagram") -> "Diagram":
        """``d1 * d2``: the tables in both."""
        if not isinstance(other, Diagram):
            return NotImplemented
        return self._combine(other, set(self.nodes) & set(other.nodes))

    def _grow(self, steps: int, descendants: bool) -> "Diagram":
        if steps < 0:
            raise DataJointError(f"Diagram + n / - n needs n >= 0, got {steps}.")
        graph = self._full_graph()
        shown = set(self.nodes)
        frontier = set(shown)
        for _ in range(steps):
            step = set()
            for name in frontier:
                step.update(graph.successors(name) if descendants else graph.predecessors(name))
            step = {n for n in step if not self._hidden(n)} - shown
            if not step:
                break
            shown |= step
            frontier = step
        return self._derive(shown)

    def _hidden(self, full: str) -> bool:
        _, table = self._catalog.connection.backend.split_full_name(full)
        return table.startswith("~")

    def add_parts(self) -> "Diagram":
        """A diagram that also shows the part tables of every master shown."""
        graph = self._full_graph()
        parts = {c for n in self.nodes for c in graph.successors(n)
                 if self._catalog.node(c)["master"] == n}
        new = self._derive(set(self.nodes) | parts)
        new._collapsed |= {p for p in parts if self._catalog.node(p)["master"] in self._collapsed}
        return new

    def collapse(self) -> "Diagram":
        """A copy drawn with each schema as one box ("(N tables)").

        In a union, a table that another diagram shows expanded stays expanded:
        ``dj.Diagram(Subject) + dj.Diagram(analysis).collapse()``.
        """
        new = self._derive(set(self.nodes))
        new._collapsed = set(new.nodes)
        return new

    def copy(self, as_view: bool = False) -> "Diagram":
        if as_view:
            return super().copy(as_view=True)
        return self._derive(set(self.nodes))

    def with_status(self, status: bool = True) -> "Diagram":
        """A copy that labels Imported/Computed tables with done / pending / error counts."""
        new = self._derive(set(self.nodes))
        new.show_status = status
        return new

    # -- data-aware --------------------------------------------------------------------------------
    @staticmethod
    def _seed_table(expr: Any, operation: str) -> Table:
        """The table (possibly restricted) that a data-aware operation starts from."""
        from .expression import is_table_class

        if is_table_class(expr):
            expr = expr()
        if not isinstance(expr, Table):
            raise DataJointError(
                f"Diagram.{operation}() takes a table or a restricted table (Table & condition), not "
                f"{type(expr).__name__}; restrict the table by your query instead: Table & query."
            )
        return expr

    def _data_diagram(self, names: set[str], restrictions: dict[str, list], mode: str, seed: str) -> "Diagram":
        new = self._derive(names)
        new._restrictions = restrictions
        new._mode = mode
        new._seed = seed
        return new

    @classmethod
    def cascade(cls, expr: Any, part_integrity: str = "enforce") -> "Diagram":
        """Everything that deleting ``expr`` would delete: its table and the descendants reached,
        each restricted to its doomed rows (a row is reached when any parent path reaches it).

        ``part_integrity`` is as in ``delete()``: "enforce" (part rows only with their master),
        "ignore", or "cascade" (doomed part rows bring their masters, which are then in the
        diagram too).  Nothing is deleted; ``counts()`` previews the delete.
        """
        table = cls._seed_table(expr, "cascade")
        if part_integrity not in ("enforce", "ignore", "cascade"):
            raise DataJointError(
                f'Diagram.cascade({table.full_table_name}): part_integrity must be "enforce", "ignore" or '
                f'"cascade", not {part_integrity!r}.'
            )
        if getattr(table, "_is_part", False) and part_integrity == "enforce":
            raise DataJointError(
                f"Cannot cascade from a Part directly ({table.full_table_name}): start from its master, or "
                "pass part_integrity='ignore' (part rows alone) or part_integrity='cascade' (their masters too)."
            )
        plan = table._cascade_plan(part_integrity)  # the plan delete() executes, parents first
        base = cls(table)  # reads the catalog afresh; the plan's tables are all in it
        restrictions = {name: list(query.restriction) for name, query in plan if not base._hidden(name)}
        return base._data_diagram(set(restrictions), restrictions, "cascade", table.full_table_name)

    @classmethod
    def trace(cls, expr: Any) -> "Diagram":
        """The ancestors of ``expr``'s table, each restricted to the rows that the rows of ``expr``
        derive from (through primary and secondary foreign keys; rows reached by any path are kept).

        ``diagram[T]`` is ancestor ``T``'s restricted query, ``diagram[expr's table]`` is ``expr``.
        """
        from .upstream import upstream_restrictions

        table = cls._seed_table(expr, "trace")
        conn = table.connection
        conn.dependencies.load()
        start = table.full_table_name
        traced = upstream_restrictions(conn, start, table)
        restrictions = {name: [conditions] for name, conditions in traced.items()}
        restrictions[start] = list(table.restriction)
        return cls(table)._data_diagram(set(restrictions), restrictions, "trace", start)

    def restrict(self, expr: Any) -> "Diagram":
        """This diagram with ``expr``'s table restricted by ``expr`` and the restriction carried down
        the foreign keys to the descendants shown: a row is kept only if every restricted parent it
        references is kept (AND; for selecting a consistent subset, e.g. to export).  Chainable.
        Only foreign keys between tables of this diagram carry the restriction.
        """
        if self._mode in ("cascade", "trace"):
            raise DataJointError(
                f"restrict() cannot be applied to a diagram made by Diagram.{self._mode}(); restrict a plain "
                "diagram: dj.Diagram(schema).restrict(Table & condition)."
            )
        table = self._seed_table(expr, "restrict")
        seed = table.full_table_name
        if seed not in set(self.nodes):
            raise DataJointError(
                f"Table {seed} is not in this diagram, so restrict() cannot start there; add it first: "
                f"(diagram + dj.Diagram(Table)).restrict(...)."
            )
        new = self._derive(set(self.nodes))
        new._mode, new._seed = "restrict", seed
        restrictions = dict(new._restrictions)
        restrictions[seed] = restrictions.get(seed, []) + list(table.restriction)
        descendants = nx.descendants(self._plain(), seed)
        changed = {seed}
        for node in self.topo_sort():
            if node not in descendants:
                continue
            conditions = []
            for parent in self.predecessors(node):
                if parent not in changed:
                    continue
                parent_rows = self._query(parent, restrictions)
                for attr_map in self.edges[parent, node]["attr_maps"]:
                    renames = {c: p for c, p in attr_map.items() if c != p}
                    conditions.append(parent_rows.proj(**renames) if renames else parent_rows.proj())
            if conditions:
                restrictions[node] = restrictions.get(node, []) + conditions
                changed.add(node)
        new._restrictions = restrictions
        return new

    @property
    def restricted(self) -> bool:
        """True when the diagram carries row restrictions (cascade, trace or restrict)."""
        return bool(self._restrictions)

    def _query(self, name: str, restrictions: dict[str, list] | None = None, base: Table | None = None) -> Table:
        restrictions = self._restrictions if restrictions is None else restrictions
        query = FreeTable(self.connection, name) if base is None else base
        for condition in restrictions.get(name, ()):
            query = query.restrict(condition, semantic_check=False)
        return query

    def counts(self) -> dict[str, int]:
        """``{full table name: rows}`` of each restricted table (parents first)."""
        if not self._restrictions:
            raise DataJointError(
                "counts() needs a restricted diagram: Diagram.cascade(Table & condition), "
                "Diagram.trace(Table & condition) or diagram.restrict(Table & condition)."
            )
        return {name: len(self._query(name)) for name in self.topo_sort() if name in self._restrictions}

    def prune(self) -> "Diagram":
        """A copy without the tables that have no rows (after their restriction, if any)."""
        return self._derive({name for name in self.nodes if self._query(name)})

    def _target_name(self, target: Any) -> tuple[str, Table | None]:
        from .upstream import resolve_table

        full, table = resolve_table(self.connection, target, "diagram[T]")
        return full, None if isinstance(table, FreeTable) else table

    def __getitem__(self, target: Any) -> Table:
        """The table ``target`` as this diagram restricts it (the whole table if unrestricted)."""
        name, base = self._target_name(target)
        if not super().__contains__(name):
            if self._mode == "trace":
                raise DataJointError(
                    f"Table {name} is not upstream of {self._seed} through foreign keys that its rows determine; "
                    "Diagram.trace(expr)[T] takes an ancestor of expr's table (a parent, grandparent, ...)."
                )
            raise DataJointError(
                f"Table {name} is not in this diagram; add it first: diagram + dj.Diagram(Table)."
            )
        return self._query(name, base=base)

    def _plain(self) -> nx.DiGraph:
        plain = nx.DiGraph()  # a plain graph: this class iterates as tables, not names
        plain.add_nodes_from(self.nodes)
        plain.add_edges_from(self.edges)
        return plain

    # -- reading ---------------------------------------------------------------------------------
    @property
    def connection(self):
        return self._catalog.connection

    def topo_sort(self) -> list[str]:
        """Full table names of the diagram, parents first (ties by name); a cycle is named."""
        from .dependencies import cycle_message

        plain = self._plain()
        try:
            return list(nx.lexicographical_topological_sort(plain))
        except nx.NetworkXUnfeasible:
            raise DataJointError(cycle_message(nx.find_cycle(plain))) from None

    def __iter__(self) -> Iterator[FreeTable]:
        """The tables, parents first, each restricted as the diagram restricts it."""
        for name in self.topo_sort():
            yield self._query(name)

    def __reversed__(self) -> Iterator[FreeTable]:
        """The tables, children first (the order a delete goes in), restricted."""
        for name in reversed(self.topo_sort()):
            yield self._query(name)

    def __contains__(self, item: Any) -> bool:
        if isinstance(item, str):
            return super().__contains__(item)
        if isinstance(item, type) and issubclass(item, Table):
            item = item()
        if isinstance(item, Table):
            return super().__contains__(item.full_table_name)
        return False

    def __repr__(self) -> str:
        names = ", ".join(self.nodes[n]["label"] for n in self.topo_sort())
        return f"Diagram of {self.number_of_nodes()} tables: {names}"

    __str__ = __repr__

    def status_counts(self) -> dict[str, dict]:
        """``{full name: {"done", "pending", "error", "reserved"}}`` for Imported/Computed tables.

        Read-only: job tables are counted only when they exist; nothing is declared.
        """
        from .autopopulate import AutoPopulate
        from .jobs import Job

        counts: dict[str, dict] = {}
        for name in self.topo_sort():
            if self.nodes[name]["tier"] not in ("Imported", "Computed") or name in self._collapsed:
                continue
            cls = self._catalog.classes.get(name)
            entry = {"done": None, "pending": None, "error": 0, "reserved": 0}
            if isinstance(cls, type) and issubclass(cls, AutoPopulate):
                table = cls()
                remaining, total = table.progress()
                entry["done"], entry["pending"] = total - remaining, remaining
                job = Job(table)
            else:  # no class (a table met only in the database): its row count only
                entry["done"] = len(FreeTable(self.connection, name))
                job = None
            if job is not None and job.is_declared:
                progress = job.progress()
                entry["error"], entry["reserved"] = progress["error"], progress["reserved"]
            counts[name] = entry
        return counts

    # -- drawing collapsed schemas -------------------------------------------------------------------
    def _drawing(self) -> tuple[list[str], dict[str, list[str]], dict[str, str], list[tuple[str, str, dict]]]:
        """What is drawn: (expanded tables in order, {schema: its collapsed tables},
        {drawn node: id}, [(drawn parent, drawn child, edge facts)]).  A collapsed schema is one node."""
        order = [n for n in self.topo_sort() if n not in self._collapsed]
        groups: dict[str, list[str]] = {}
        for name in self.topo_sort():
            if name in self._collapsed:
                groups.setdefault(self.nodes[name]["schema"], []).append(name)
        ids = _mermaid_ids(order)
        used = set(ids.values())
        drawn = {n: n for n in order}
        for schema, members in sorted(groups.items()):
            key = COLLAPSED_PREFIX + schema
            candidate, k = _mermaid_safe("collapsed_" + schema), 1
            base = candidate
            while candidate in used:
                k += 1
                candidate = f"{base}_{k}"
            used.add(candidate)
            ids[key] = candidate
            drawn.update({m: key for m in members})
        edges: dict[tuple[str, str], dict] = {}
        for parent, child in sorted(self.edges):
            a, b = drawn[parent], drawn[child]
            if a == b:
                continue
            facts = self.edges[parent, child]
            if a == parent and b == child:
                edges[a, b] = facts
                continue
            merged = edges.setdefault((a, b), {"attr_maps": [], "primary": True, "one_to_one": False,
                                                "aliased": False, "multi": False, "fk_attributes": []})
            merged["primary"] = merged["primary"] and facts["primary"]
        return order, groups, ids, [(a, b, facts) for (a, b), facts in edges.items()]

    # -- DOT -------------------------------------------------------------------------------------
    def _direction(self) -> str:
        direction = str(self.connection.config["display.diagram_direction"]).upper()
        if direction not in DIRECTIONS:
            raise DataJointError(
                f"config['display.diagram_direction'] is {direction!r}; use one of {', '.join(DIRECTIONS)}."
            )
        return direction

    def _theme(self, theme: str | None) -> dict:
        theme = (theme or self.connection.config["display.diagram_theme"] or "auto").lower()
        if theme not in ("auto", "light", "dark"):
            raise DataJointError(f"Diagram theme {theme!r} is unknown; use 'auto', 'light' or 'dark'.")
        return DARK_STYLES if theme == "dark" else STYLES

    def _label(self, name: str, status: dict | None) -> str:
        info = self.nodes[name]
        text = html.escape(info["label"])
        if info["new_dimensions"]:
            text = f"<U>{text}</U>"
        if status is not None:
            parts = []
            if status["done"] is not None:
                parts.append(f"{status['done']} done")
            if status["pending"] is not None:
                parts.append(f"{status['pending']} pending")
            parts.append(f"{status['error']} error" + ("s" if status["error"] != 1 else ""))
            text += f'<BR/><FONT POINT-SIZE="8">{" · ".join(parts)}</FONT>'
        return f"<{text}>"

    def make_dot(self, theme: str | None = None):
        """The diagram as a :class:`pydot.Dot` graph (no Graphviz program needed yet)."""
        import pydot

        styles = self._theme(theme)
        dark = styles is DARK_STYLES
        status = self.status_counts() if self.show_status else {}
        dot = pydot.Dot(graph_type="digraph", rankdir=self._direction(), bgcolor="#1e1e1e" if dark else "white",
                        nodesep="0.3", ranksep="0.45", fontname="Helvetica", compound="true")
        clusters: dict[str, pydot.Cluster] = {}
        order, groups, ids, drawn_edges = self._drawing()
        for schema in sorted({self.nodes[n]["schema"] for n in order}):
            cluster = pydot.Cluster(
                _mermaid_safe("schema_" + schema), label=schema, style="dashed,rounded",
                color="#9a9a9a" if not dark else "#777777", fontcolor="#555555" if not dark else "#bbbbbb",
                fontsize="10", fontname="Helvetica", labeljust="l",
            )
            clusters[schema] = cluster
            dot.add_subgraph(cluster)
        # masters with parts shown: master and parts share an unlabelled cluster
        families: dict[str, pydot.Cluster] = {}
        for name in order:
            master = self.nodes[name]["master"]
            if master is not None and master in self:
                if master not in families:
                    family = pydot.Cluster("family_" + ids[master], label="", style="rounded",
                                           color="#c8c8c8" if not dark else "#555555", penwidth="0.6")
                    families[master] = family
                    clusters[self.nodes[master]["schema"]].add_subgraph(family)
        for name in order:
            info = self.nodes[name]
            style = styles[info["tier"]]
            attrs = {
                "label": self._label(name, status.get(name)), "shape": style.shape,
                "fontcolor": style.font, "fontsize": str(style.fontsize), "fontname": "Helvetica",
                "tooltip": _tooltip(info), "class": f"tier-{info['tier'].lower()}",
            }
            if style.shape != "plaintext":
                attrs.update(style="filled,rounded" if style.rounded else "filled",
                             fillcolor=style.fill, color=style.line, penwidth="1")
            else:
                attrs.update(height="0.2", margin="0.02")
            counts = status.get(name)
            if counts is not None:
                state = "error" if counts["error"] else ("pending" if counts["pending"] else "done")
                attrs.update(color=STATUS_COLORS[state], penwidth="2.5")
                attrs["class"] += f" status-{state}"
            node = pydot.Node(ids[name], **attrs)
            holder = families.get(name) or families.get(info["master"]) or clusters[info["schema"]]
            holder.add_node(node)
        collapsed_style = styles["Collapsed"]
        for schema, members in sorted(groups.items()):
            label = f"<{html.escape(schema)}<BR/>({len(members)} tables)>"
            dot.add_node(pydot.Node(
                ids[COLLAPSED_PREFIX + schema], label=label, shape="box3d", style="filled",
                fillcolor=collapsed_style.fill, color=collapsed_style.line, fontcolor=collapsed_style.font,
                fontsize=str(collapsed_style.fontsize), fontname="Helvetica", penwidth="1",
                tooltip=f"schema {schema}, collapsed: " + ", ".join(self.nodes[m]["label"] for m in members),
                **{"class": "collapsed"},
            ))
        for parent, child, edge in drawn_edges:
            color = RENAMED_COLOR if edge["aliased"] else ("#555555" if not dark else "#bbbbbb")
            dot.add_edge(pydot.Edge(
                ids[parent], ids[child], arrowhead="none", color=color,
                style="solid" if edge["primary"] else "dashed",
                penwidth="2" if edge["one_to_one"] else "0.75",
                tooltip=", ".join(f"{c}→{p}" if c != p else c for m in edge["attr_maps"] for c, p in m.items())
                or "foreign keys to/from a collapsed schema",
                **{"class": " ".join(["fk-primary" if edge["primary"] else "fk-secondary"]
                                     + (["fk-one-to-one"] if edge["one_to_one"] else [])
                                     + (["fk-renamed"] if edge["aliased"] else []))},
            ))
        return dot

    def _render(self, fmt: str, theme: str | None = None) -> bytes:
        if not dot_available():
            raise GraphvizMissingError(INSTALL_HINT)
        try:
            return self.make_dot(theme).create(format=fmt, prog="dot")
        except FileNotFoundError as exc:  # dot vanished between the check and the call
            raise GraphvizMissingError(INSTALL_HINT) from exc

    def svg_string(self, theme: str | None = None) -> str:
        """The diagram as SVG text (needs Graphviz's ``dot``)."""
        return self._render("svg", theme).decode("utf-8")

    def make_svg(self, theme: str | None = None):
        """An ``IPython.display.SVG`` of the diagram (the SVG text when IPython is absent)."""
        svg = self.svg_string(theme)
        try:
            from IPython.display import SVG
        except ImportError:
            return svg
        return SVG(svg)

    def make_png(self, theme: str | None = None) -> io.BytesIO:
        """PNG bytes of the diagram in a BytesIO (needs Graphviz's ``dot``)."""
        return io.BytesIO(self._render("png", theme))

    def make_image(self, theme: str | None = None):
        """The diagram as an image array (needs matplotlib)."""
        try:
            import matplotlib.image as mpimg
        except ImportError:
            raise DataJointError("make_image() and draw() need matplotlib: pip install matplotlib") from None
        return mpimg.imread(self.make_png(theme))

    def draw(self, theme: str | None = None) -> None:
        """Show the diagram with matplotlib."""
        image = self.make_image(theme)
        import matplotlib.pyplot as plt

        plt.imshow(image)
        plt.axis("off")
        plt.show()

    def _repr_svg_(self) -> str | None:
        if not dot_available():
            logger.warning(INSTALL_HINT)
            return None
        return self.svg_string()

    def _repr_markdown_(self) -> str | None:  # Jupyter fallback when dot is missing
        if dot_available():
            return None
        return "```mermaid\n" + self.make_mermaid() + "```\n"

    # -- Mermaid ---------------------------------------------------------------------------------------
    def make_mermaid(self) -> str:
        """A Mermaid flowchart: one ``subgraph`` per schema, one ``classDef`` per tier."""
        direction = self._direction()
        status = self.status_counts() if self.show_status else {}
        order, groups, ids, drawn_edges = self._drawing()
        lines = [f"flowchart {direction}"]
        for tier, cls in (("Manual", "manual"), ("Lookup", "lookup"), ("Imported", "imported"),
                          ("Computed", "computed"), ("Part", "part"), ("Other", "other")):
            style = STYLES[tier]
            if tier == "Part":
                lines.append(f"    classDef {cls} fill:none,stroke:none,color:{style.font},font-size:11px")
            else:
                lines.append(f"    classDef {cls} fill:{style.fill},stroke:{style.line},color:{style.font}")
        collapsed_style = STYLES["Collapsed"]
        lines.append(f"    classDef collapsed fill:{collapsed_style.fill},stroke:{collapsed_style.line},"
                     f"color:{collapsed_style.font}")
        for state, color in STATUS_COLORS.items():
            lines.append(f"    classDef status_{state} stroke:{color},stroke-width:3px")
        shapes = {"Manual": ('("', '")'), "Lookup": ('("', '")'), "Imported": ('(["', '"])'),
                  "Computed": ('(["', '"])'), "Part": ('["', '"]'), "Other": ('(("', '"))')}
        for schema in sorted({self.nodes[n]["schema"] for n in order}):
            lines.append(f'    subgraph {_mermaid_safe("schema_" + schema)}["{schema}"]')
            for name in order:
                info = self.nodes[name]
                if info["schema"] != schema:
                    continue
                label = html.escape(info["label"], quote=False).replace('"', "#quot;")
                if info["new_dimensions"]:
                    label = f"<u>{label}</u>"
                counts = status.get(name)
                if counts is not None:
                    label += "<br/><small>" + " · ".join(
                        f"{counts[k]} {k}" for k in ("done", "pending", "error") if counts[k] is not None
                    ) + "</small>"
                left, right = shapes[info["tier"]]
                line = f"        {ids[name]}{left}{label}{right}:::{info['tier'].lower()}"
                lines.append(line)
                if counts is not None:
                    state = "error" if counts["error"] else ("pending" if counts["pending"] else "done")
                    lines.append(f"        class {ids[name]} status_{state}")
            lines.append("    end")
        for schema, members in sorted(groups.items()):
            name = html.escape(schema, quote=False).replace('"', "#quot;")
            lines.append(f'    {ids[COLLAPSED_PREFIX + schema]}[["{name}<br/>({len(members)} tables)"]]:::collapsed')
        renamed = []
        for index, (parent, child, edge) in enumerate(drawn_edges):
            link = "===" if edge["one_to_one"] else ("---" if edge["primary"] else "-.-")
            lines.append(f"    {ids[parent]} {link} {ids[child]}")
            if edge["aliased"]:
                renamed.append(str(index))
        if renamed:
            lines.append(f"    linkStyle {','.join(renamed)} stroke:{RENAMED_COLOR}")
        return "\n".join(lines) + "\n"

    # -- files -------------------------------------------------------------------------------------------
    def save(self, filename: str | Path, format: str | None = None, theme: str | None = None) -> Path:
        """Write the diagram; the format is ``png``, ``svg``, ``mermaid`` or ``dot`` (from the suffix)."""
        path = Path(filename)
        fmt = (format or SAVE_FORMATS.get(path.suffix.lower(), "")).lower()
        if fmt not in ("png", "svg", "mermaid", "dot"):
            raise DataJointError(
                f"Cannot tell the diagram format of {str(filename)!r}: use a .png, .svg, .mmd/.mermaid or "
                ".dot file name, or format='png'|'svg'|'mermaid'|'dot'."
            )
        if fmt == "mermaid":
            path.write_text(self.make_mermaid())
        elif fmt == "dot":
            path.write_text(self.make_dot(theme).to_string())
        else:
            path.write_bytes(self._render(fmt, theme))
        return path


def _tooltip(info: dict) -> str:
    text = f"{info['schema']}.{info['table_name']} ({info['tier']})"
    if info["comment"]:
        text += f": {info['comment']}"
    return text + "\nkey: " + ", ".join(info["primary_key"])


def _mermaid_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _mermaid_ids(names: list[str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = _mermaid_safe(name.replace("#", "L_").replace('"', "").replace("`", "").replace(".", "__"))
        candidate, k = base, 1
        while candidate in used:
            k += 1
            candidate = f"{base}_{k}"
        used.add(candidate)
        ids[name] = candidate
    return ids
