"""Row provenance (DataJoint 2.3.4+): where a row of a Manual table came from.

A Manual table declared while ``config["provenance.capture"]`` is on gets the hidden
attribute ``_prov = null : json`` (hidden: not in ``heading.names``, not fetched).  While
capture is on, every insert into a table that has the column stores, per row::

    {"time": ISO-8601 UTC,
     "agent": {"user", "host", "database_name"},      # of the connection (None parts left out)
     "version": code version (config["jobs.version_method"]; left out when empty),
     "source": config["provenance.source"] (left out when empty),
     "context": {"table", "key", "version"}}          # only inside a make(), see below

The insert call takes no provenance argument: the framework writes the column, nobody else.
``context`` names the auto-populated table (full name) and key whose ``make()`` is running
when rows are inserted into a Manual table from inside it (a "fat ingestion" make).
joinflow addition: when the environment variable ``JOINFLOW_RUN_ID`` is set (an orchestrator
run), ``context.run_id`` holds it, inside a make() or not.

``Target.insert(Source & cond)`` (INSERT ... SELECT) copies the source rows' ``_prov`` when
both tables have the column: a copied row keeps the record of where it really came from.
Tables without the column (declared with capture off, or by DataJoint before 2.3.4) are left
as they are; ``joinflow.deploy.add_prov_column`` adds the column to them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import decimal
import json
import logging
import os
import uuid
from typing import Any

import sqlalchemy as sa

logger = logging.getLogger("joinflow")

PROV_ATTRIBUTE = "_prov"
# the declaration DataJoint gives it (the name is set after parsing: user names cannot start with "_")
PROV_DEFINITION = "prov = null : json # provenance of a row entered from outside the pipeline"
RUN_ID_VARIABLE = "JOINFLOW_RUN_ID"

# the make() now running in this thread/task: {"table", "key"[, "version"]} or None
_making: contextvars.ContextVar = contextvars.ContextVar("joinflow_provenance_making", default=None)


def prov_attribute():
    """The hidden ``_prov`` attribute, as declared on a Manual table while capture is on."""
    from .declare import parse_attribute

    return dataclasses.replace(parse_attribute(PROV_DEFINITION, False, "provenance"), name=PROV_ATTRIBUTE)


def wants_column(config, table_name: str) -> bool:
    """Whether a table being declared gets ``_prov``: Manual tier, capture on (DataJoint's rule)."""
    from .table import tier_of

    return bool(config["provenance.capture"]) and tier_of(table_name) == "Manual"


# -- the make() context ---------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        with contextlib.suppress(Exception):
            return _jsonable(value.item())
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    return str(value)


def enter_make(table_name: str, key: dict, version: str = ""):
    """Record that ``table_name``'s make() runs for ``key``; returns a token for ``exit_make``."""
    value = {"table": table_name, "key": {k: _jsonable(v) for k, v in (key or {}).items()}}
    if version:
        value["version"] = version
    return _making.set(value)


def exit_make(token) -> None:
    if token is not None:
        _making.reset(token)


@contextlib.contextmanager
def making(table_name: str, key: dict, version: str = ""):
    """``with making(table, key):`` inserts into Manual tables record this make() as their context."""
    token = enter_make(table_name, key, version)
    try:
        yield
    finally:
        exit_make(token)


# -- the record -----------------------------------------------------------------------------------
def _agent(connection) -> dict:
    url = connection.url
    found = {"user": url.username, "host": url.host, "database_name": url.database}
    return {k: v for k, v in found.items() if v not in (None, "")}


def payload(connection) -> dict | None:
    """The provenance record of rows inserted now on ``connection`` (None: nothing to record)."""
    from .autopopulate import job_version

    config = connection.config
    record: dict[str, Any] = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    agent = _agent(connection)
    if agent:
        record["agent"] = agent
    version = job_version(config)
    if version:
        record["version"] = version
    source = config["provenance.source"]
    if source:
        record["source"] = source
    context = dict(_making.get() or {})
    run_id = os.environ.get(RUN_ID_VARIABLE)
    if run_id:
        context["run_id"] = run_id
    if context:
        record["context"] = context
    if len(record) == 1:  # the time alone says nothing about where a row came from
        return None
    # through JSON once: a value the source holds that JSON cannot (a date, a Path) becomes its text
    return json.loads(json.dumps(record, default=str))


def stamp(table, fields: list, values: list) -> None:
    """Append ``_prov`` and its value to an insert's fields and to each row (in place).

    Called by ``Table.insert`` when capture is on and the table has the column.  A failure
    to build the record is logged and the rows go in without it: recording where a row came
    from never stops the row from being written."""
    if PROV_ATTRIBUTE in fields:
        return
    try:
        record = payload(table.connection)
    except Exception as exc:  # noqa: BLE001 - see above
        logger.warning("Provenance not recorded for the insert into %s: %s: %s",
                       table.full_table_name, type(exc).__name__, exc)
        return
    if record is None:
        return
    fields.append(PROV_ATTRIBUTE)  # the insert encodes it with the other fields (json column)
    for row in values:
        row.append(record)


def copy_select(target, query, names: list):
    """INSERT ... SELECT into ``target``: (column names, select) that also copies the source
    rows' ``_prov``, or None when the target or the source has no such column."""
    if PROV_ATTRIBUTE not in target.heading.all_attributes or PROV_ATTRIBUTE in names:
        return None
    from .table import Table

    if not isinstance(query, Table) or PROV_ATTRIBUTE not in query.heading.all_attributes:
        return None
    compiled = query._compile()
    source = compiled.from_
    if not isinstance(source, sa.TableClause) or PROV_ATTRIBUTE not in source.c:
        return None
    stmt = (sa.select(*[compiled.cols[n].label(n) for n in names], source.c[PROV_ATTRIBUTE])
            .select_from(source).where(*compiled.where))
    return names + [PROV_ATTRIBUTE], stmt
