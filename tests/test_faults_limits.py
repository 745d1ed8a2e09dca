"""``limit`` / ``offset`` out of range or of the wrong type: one clear error on every backend.

Before, each backend did something else with the same call: SQLite took ``limit=-1`` as "all
rows", PostgreSQL refused it with a server error and MariaDB with a syntax error; ``2**63`` was
refused by SQLite and PostgreSQL and taken by MariaDB; ``2.5``, ``True`` and ``"3"`` were
silently turned into 2, 1 and 3 everywhere.  Now every way of reading a query checks both
values once, before the server sees them: None or an integer from 0 to 2**63-1.
"""

from __future__ import annotations

import numpy as np
import pytest

import joinflow as dj
from joinflow.errors import DataJointError

pytestmark = pytest.mark.filterwarnings("ignore:fetch.. is deprecated:DeprecationWarning")

BAD_LIMITS = [-1, -(2**70), 2**63, 2**64, 2.5, 2.0, True, False, np.bool_(True), "3", [1], float("nan")]
BAD_OFFSETS = [-1, 2**63, 2**64, 1.5, True, "1"]


@pytest.fixture
def rows(schema):
    @schema
    class Item(dj.Manual):
        definition = """
        item : int32
        """

    Item.insert([{"item": i} for i in range(5)])
    return Item


def _reads(table):
    """Every public way that takes ``limit`` / ``offset`` (all but Top, tested on its own)."""
    table = table()
    return [
        ("fetch", lambda limit, offset: table.fetch(limit=limit, offset=offset)),
        ("fetch(as_dict)", lambda limit, offset: table.fetch(as_dict=True, limit=limit, offset=offset)),
        ("fetch(attr)", lambda limit, offset: table.fetch("item", limit=limit, offset=offset)),
        ("fetch(KEY)", lambda limit, offset: table.fetch("KEY", limit=limit, offset=offset)),
        ("to_dicts", lambda limit, offset: table.to_dicts(limit=limit, offset=offset)),
        ("to_arrays", lambda limit, offset: table.to_arrays(limit=limit, offset=offset)),
        ("to_arrays(attr)", lambda limit, offset: table.to_arrays("item", limit=limit, offset=offset)),
        ("keys", lambda limit, offset: table.keys(limit=limit, offset=offset)),
        ("to_pandas", lambda limit, offset: table.to_pandas(limit=limit, offset=offset)),
        ("cursor", lambda limit, offset: table.cursor(limit=limit, offset=offset).fetchall()),
    ]


def test_bad_limit_is_one_clear_error_everywhere(rows):
    for bad in BAD_LIMITS:
        for name, read in _reads(rows):
            with pytest.raises(DataJointError, match=r"limit") as info:
                read(bad, None)
            assert "2**63-1" in str(info.value), (name, bad)
        with pytest.raises(DataJointError, match=r"limit"):
            rows.head(bad)
        with pytest.raises(DataJointError, match=r"limit"):
            rows.tail(bad)
        with pytest.raises(DataJointError, match=r"Top: limit"):
            dj.Top(limit=bad)
    assert len(rows()) == 5  # the table is untouched and the connection still answers


def test_bad_offset_is_one_clear_error_everywhere(rows):
    for bad in BAD_OFFSETS:
        for name, read in _reads(rows):
            with pytest.raises(DataJointError, match=r"offset") as info:
                read(2, bad)
            assert "2**63-1" in str(info.value), (name, bad)
        with pytest.raises(DataJointError, match=r"Top: offset"):
            dj.Top(limit=2, offset=bad)
    assert len(rows()) == 5


def test_limit_and_offset_bounds_work_on_every_backend(rows):
    """The extremes that are allowed mean the same on every backend."""
    biggest = 2**63 - 1
    assert len(rows.to_dicts(limit=biggest)) == 5
    assert rows.to_dicts(limit=biggest, offset=biggest) == []
    assert rows.to_dicts(limit=0) == []
    assert [r["item"] for r in rows.to_dicts(order_by="item", limit=np.int64(2), offset=np.uint8(1))] == [1, 2]
    assert len(rows & dj.Top(limit=biggest, order_by="item", offset=biggest)) == 0
    assert [r["item"] for r in (rows & dj.Top(limit=np.int32(2), order_by="item DESC")).to_dicts()] == [4, 3]
    assert len(rows & dj.Top(limit=None, order_by="item", offset=3)) == 2
    assert len(rows & dj.Top(limit=2, offset=None)) == 2  # None: no offset, as in DataJoint
    with pytest.raises(DataJointError, match="offset requires limit"):
        rows.to_dicts(offset=2)
