"""The dependency graph: foreign keys read from the database catalog (networkx).

networkx is imported when a graph is first built, not with ``import joinflow``.
"""

from __future__ import annotations

from typing import Iterable

from .errors import DataJointError


class Dependencies:
    """Directed graph parent -> child over full table names, rebuilt from the catalog.

    Each edge holds ``attr_maps``: one ``{child attribute: parent attribute}`` dict per
    foreign key between the two tables.
    """

    def __init__(self, connection):
        import networkx as nx  # imported on first use: `import joinflow` stays light
        self._connection = connection
        self.graph = nx.DiGraph()
        self._loaded = False

    def clear(self) -> None:
        self._loaded = False

    def load(self, force: bool = True) -> "Dependencies":
        """Read every foreign key in the database (one catalog query).

        The graph may hold cycles among tables joinflow never touches (plain tables of another
        schema or database that reference each other): they are kept, not refused.  Only an
        operation whose tables form a cycle fails, naming them (see :meth:`topological`).
        """
        import networkx as nx
        if self._loaded and not force:
            return self
        conn = self._connection
        graph = nx.DiGraph()
        for fk in conn.backend.load_foreign_keys(conn):
            if fk.child == fk.parent:
                continue
            if not graph.has_edge(fk.parent, fk.child):
                graph.add_edge(fk.parent, fk.child, attr_maps=[])
            graph.edges[fk.parent, fk.child]["attr_maps"].append(dict(fk.columns))
        self.graph = graph
        self._loaded = True
        return self

    def _info(self, parent: str, child: str) -> dict:
        from .table import FreeTable

        attr_maps = self.graph.edges[parent, child]["attr_maps"]
        child_pk = set(FreeTable(self._connection, child).primary_key)
        return {
            "attr_maps": attr_maps,
            "primary": all(set(m) <= child_pk for m in attr_maps),
            "aliased": any(c != p for m in attr_maps for c, p in m.items()),
        }

    def parents(self, name: str) -> dict[str, dict]:
        if name not in self.graph:
            return {}
        return {p: self._info(p, name) for p in self.graph.predecessors(name)}

    def children(self, name: str) -> dict[str, dict]:
        if name not in self.graph:
            return {}
        return {c: self._info(name, c) for c in self.graph.successors(name)}

    def master_of(self, name: str) -> str | None:
        from .table import part_master

        schema, table = self._connection.backend.split_full_name(name)
        master = part_master(table)
        return self._connection.backend.full_table_name(schema, master) if master else None

    def parts_of(self, name: str) -> list[str]:
        if name not in self.graph:
            return []
        return [c for c in self.graph.successors(name) if self.master_of(c) == name]

    def descendants(self, name: str) -> set[str]:
        import networkx as nx
        return nx.descendants(self.graph, name) if name in self.graph else set()

    def ancestors(self, name: str) -> set[str]:
        import networkx as nx
        return nx.ancestors(self.graph, name) if name in self.graph else set()

    def topological(self, names: Iterable[str]) -> list[str]:
        """``names`` ordered parents first (ties broken by name, so the order is stable).

        Raises DataJointError naming the tables when foreign keys among ``names`` form a cycle.
        """
        import networkx as nx
        names = set(names)
        sub = nx.DiGraph(self.graph.subgraph(names))
        sub.add_nodes_from(names)
        try:
            return list(nx.lexicographical_topological_sort(sub))
        except nx.NetworkXUnfeasible:
            raise DataJointError(cycle_message(nx.find_cycle(sub))) from None

    def path(self, source: str, target: str) -> list[str] | None:
        """The tables on one foreign-key path from ``source`` down to ``target`` (None: no path)."""
        import networkx as nx
        if source not in self.graph or target not in self.graph:
            return None
        try:
            return nx.shortest_path(self.graph, source, target)
        except nx.NetworkXNoPath:
            return None


def cycle_message(edges) -> str:
    """The error for foreign keys that form a cycle: the tables, in order, and the fix."""
    tables = [parent for parent, _child in edges]
    loop = " -> ".join(tables + tables[:1])
    return (
        f"The foreign keys of tables {', '.join(sorted(set(tables)))} form a cycle ({loop}: each "
        "table is referenced by the next). joinflow needs acyclic dependencies among the tables it "
        "works on: drop one of these foreign keys."
    )
