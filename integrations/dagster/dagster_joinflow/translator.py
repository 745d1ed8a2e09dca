"""How a joinflow table becomes a Dagster asset spec: subclass to customise."""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import dagster as dg
from joinflow.pipeline import TableNode

_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_]")


def dagster_name(text: str) -> str:
    """``text`` as a valid Dagster name part (letters, digits, underscores)."""
    return _NOT_A_NAME.sub("_", text) or "_"


def schema_of(node: TableNode) -> str:
    """The schema (database) that holds the table."""
    return node.table.database


def class_path(node: TableNode) -> str:
    """``Class`` or ``Master.Part``: the table's name in its module."""
    return node.name.partition(":")[2]


class DagsterJoinflowTranslator:
    """Maps a :class:`joinflow.pipeline.TableNode` to the attributes of its Dagster asset.

    The defaults: key ``[schema, Class]``, group = schema, description = table comment,
    metadata = column schema of the heading, kinds ``joinflow`` + the database dialect.
    Override any ``get_*`` method, or :meth:`get_asset_spec` for full control (its
    ``deps`` are replaced by the foreign-key dependencies, mapped through the keys of
    the parent tables' specs).
    """

    def __init__(self, *, owners: Sequence[str] = (), tags: Optional[Mapping[str, str]] = None,
                 partition_attributes: Optional[Mapping[str, str]] = None,
                 shards: Optional[Mapping[str, int]] = None):
        """``partition_attributes`` maps a table (``Class``, ``module:Class`` or the full table
        name) to the primary-key attribute whose values become its dynamic partitions.
        ``shards`` maps a table (same names) to a number of shard ops that compute its pending
        keys in parallel (see :mod:`dagster_joinflow.shards`)."""
        self._owners = list(owners)
        self._tags = dict(tags or {})
        self._partition_attributes = dict(partition_attributes or {})
        self._shards = dict(shards or {})

    # -- the whole spec ---------------------------------------------------------------------------
    def get_asset_spec(self, node: TableNode) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.get_asset_key(node),
            group_name=self.get_group_name(node),
            description=self.get_description(node),
            metadata=self.get_metadata(node),
            owners=self.get_owners(node),
            tags=self.get_tags(node),
            kinds=self.get_kinds(node),
            code_version=self.get_code_version(node),
        )

    # -- one attribute each -------------------------------------------------------------------------
    def get_asset_key(self, node: TableNode) -> dg.AssetKey:
        return dg.AssetKey([dagster_name(schema_of(node)), dagster_name(class_path(node))])

    def get_group_name(self, node: TableNode) -> Optional[str]:
        return dagster_name(schema_of(node))

    def get_description(self, node: TableNode) -> Optional[str]:
        comment = node.comment.strip()
        text = f"{comment}\n\n" if comment else ""
        return f"{text}joinflow {node.tier} table `{node.name}`."

    def get_metadata(self, node: TableNode) -> Mapping[str, Any]:
        heading = node.table.heading
        columns = []
        for attr in heading.attributes.values():
            columns.append(dg.TableColumn(
                name=attr.name,
                type=attr.type,
                description=attr.comment or None,
                constraints=dg.TableColumnConstraints(nullable=attr.nullable,
                                                      other=["primary key"] if attr.in_key else []),
            ))
        return {
            "dagster/column_schema": dg.TableSchema(columns=columns),
            "dagster/table_name": node.full_table_name,
            "joinflow/tier": node.tier,
            "joinflow/primary_key": list(heading.primary_key),
        }

    def get_owners(self, node: TableNode) -> Sequence[str]:
        return list(self._owners)

    def get_tags(self, node: TableNode) -> Mapping[str, str]:
        return {**self._tags, "joinflow/tier": node.tier.lower()}

    def get_kinds(self, node: TableNode) -> set[str]:
        return {"joinflow", node.table.connection.dialect}

    def get_code_version(self, node: TableNode) -> Optional[str]:
        """Changes when the table's definition or its ``make()`` (``make_fetch/compute/insert``,
        ``key_source``) source changes: joinflow's ``TableNode.code_version``."""
        return node.code_version

    def get_partition_attribute(self, node: TableNode) -> Optional[str]:
        """The primary-key attribute keying a dynamic partitions definition (None: unpartitioned).

        Only for imported/computed tables with a coarse key space (sessions, subjects:
        up to about 10^4 values); see the README's scale limits.
        """
        for name in (class_path(node), node.name, node.full_table_name, node.cls.__name__):
            if name in self._partition_attributes:
                return self._partition_attributes[name]
        return None

    def get_shards(self, node: TableNode) -> int:
        """How many shard ops compute this table's pending keys (1: one op, the default).

        With N > 1 the asset is a graph: plan -> N mapped shard ops -> collect, so the
        multiprocess executor (or any executor) computes the shards in parallel processes.
        """
        for name in (class_path(node), node.name, node.full_table_name, node.cls.__name__):
            if name in self._shards:
                return self._shards[name]
        return 1
