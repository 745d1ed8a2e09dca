"""Tracing rows upstream: which rows of each ancestor table some rows of a table derive from.

One algorithm, used by ``self.upstream[T]`` inside ``make()`` (autopopulate) and by
``dj.Diagram.trace(expr)`` (diagram).  It walks the foreign-key graph from the table towards
its ancestors, children before parents; each ancestor is restricted to the rows referenced
by the restricted rows of its children on the way (a foreign key's attributes projected and
renamed to the parent's names).  Where several foreign keys lead to an ancestor, its rows
reached by any of them are kept (an OR-list).
"""

from __future__ import annotations

from typing import Any


def _projected(source: Any, attr_map: dict[str, str]):
    """The parent-side restriction that the foreign key ``attr_map`` (child -> parent) gives."""
    if isinstance(source, dict):  # a key: it fixes the parent's row only when it holds the whole FK
        if all(c in source for c in attr_map):
            return {p: source[c] for c, p in attr_map.items()}
        return None
    if not all(c in source.heading.names for c in attr_map):
        return None
    kept = [c for c, p in attr_map.items() if c == p]
    renamed = {p: c for c, p in attr_map.items() if c != p}
    return source.proj(*kept, **renamed)


def resolve_table(connection, target: Any, what: str) -> tuple[str, Any]:
    """``(full name, table object or None)`` of ``target``: a table class, an unrestricted table
    object or a ``"schema.table"`` name (None for a name).  ``what`` names the caller in errors,
    e.g. ``"self.upstream[...]"``."""
    from .errors import DataJointError
    from .expression import is_table_class
    from .table import Table

    if isinstance(target, str):
        backend = connection.backend
        return backend.full_table_name(*backend.split_full_name(target)), None
    if is_table_class(target):
        target = target()
    if isinstance(target, Table):
        if target.restriction:
            raise DataJointError(
                f"{what} takes a table, not a restricted query ({target.full_table_name}); "
                f"restrict the result instead: {what} & condition."
            )
        return target.full_table_name, target
    raise DataJointError(
        f"{what} takes a table class, a table object or a 'schema.table' name, not {type(target).__name__}."
    )


def upstream_restrictions(connection, start: str, source: Any, until: str | None = None) -> dict[str, list]:
    """``{ancestor full name: OR-list of restrictions}`` for the ancestors of table ``start``.

    ``source`` is what is known of ``start``'s rows: a key dict (only foreign keys whose
    attributes it holds lead upward, as in ``make()`` where the row does not exist yet) or a
    query over ``start`` (its rows exist, so every foreign key is followed).  With ``until``,
    only the ancestors on paths from ``start`` up to that table are traced.  An ancestor
    reached by no foreign key that ``source`` determines is absent from the result.
    The caller loads ``connection.dependencies`` first.
    """
    from .table import FreeTable

    deps = connection.dependencies
    graph = deps.graph
    ancestors = deps.ancestors(start)
    between = ancestors if until is None else (deps.descendants(until) & ancestors) | {until}
    restricted: dict[str, list] = {}
    for node in reversed(deps.topological(between)):  # children before parents
        conditions = []
        for child in graph.successors(node):
            if child == start:
                child_rows = source
            elif child in restricted:
                child_rows = FreeTable(connection, child).restrict(restricted[child], semantic_check=False)
            else:
                continue
            for attr_map in graph.edges[node, child]["attr_maps"]:
                condition = _projected(child_rows, attr_map)
                if condition is not None:
                    conditions.append(condition)
        if conditions:
            restricted[node] = conditions
    return restricted
