"""MySQL/MariaDB: an in-row value larger than the server's ``max_allowed_packet``.

Before, inserting a ``<blob>`` over the limit made the server drop the connection and joinflow
reported ``LostConnectionError: MySQL server has gone away`` (which ``populate`` retries as a
lost connection).  Now the encoded row is measured against ``max_allowed_packet`` (read from
the server once per connection) before anything is sent: a ``DataTypeError`` names the table,
the attribute, both sizes and the fixes; nothing is written and the connection stays usable.
A statement that reaches the server anyway (raw SQL) gets the same explanation.

The test reads the server's real limit and never changes it; it runs when the limit is at most
64 MiB (MariaDB's default is 16 MiB, MySQL 8's 64 MiB).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import joinflow as dj
from joinflow.errors import DataTypeError

pytestmark = pytest.mark.parametrize("backend", ["mysql"], indirect=True)


@pytest.fixture
def limit(connection):
    value = int(connection.query("SELECT @@max_allowed_packet")[0][0])
    if value > 64 * 2**20:
        pytest.skip(f"max_allowed_packet is {value} bytes: a value over it is too large for a quick test")
    return value


@pytest.fixture
def Store(schema):
    @schema
    class Store(dj.Manual):
        definition = """
        item : int32
        ---
        data = null : <blob>
        raw = null : bytes
        note = null : json
        """

    return Store


def _assert_clear(info, Store, attribute):
    message = str(info.value)
    assert Store.full_table_name in message and f"`{attribute}`" in message
    assert "max_allowed_packet" in message and "<blob@>" in message and "Nothing was sent" in message


def test_blob_over_max_allowed_packet_is_refused_before_sending(connection, Store, limit):
    over = os.urandom(limit + 2**20)
    with pytest.raises(DataTypeError) as info:
        Store.insert1({"item": 1, "data": over})
    _assert_clear(info, Store, "data")
    assert len(Store()) == 0  # nothing written, and the connection still answers
    # a batch whose second row is too large: not even the first row is written
    with pytest.raises(DataTypeError, match=r"row 1"):
        Store.insert([{"item": 2, "data": [1, 2]}, {"item": 3, "data": over}])
    assert len(Store()) == 0
    # inside a transaction the transaction stays usable
    with connection.transaction:
        Store.insert1({"item": 4, "data": np.arange(3)})
        with pytest.raises(DataTypeError):
            Store.insert1({"item": 5, "data": over})
    assert Store.keys() == [{"item": 4}]
    with pytest.raises(DataTypeError) as info:  # update1 too
        Store.update1({"item": 4, "data": over})
    _assert_clear(info, Store, "data")
    assert np.array_equal((Store & {"item": 4}).fetch1("data"), np.arange(3))


def test_escaping_is_counted_and_values_within_the_limit_go_through(Store, limit):
    quotes = b"'" * (limit * 3 // 4)  # under the limit raw, over it once PyMySQL escapes every quote
    with pytest.raises(DataTypeError) as info:
        Store.insert1({"item": 1, "raw": quotes})
    _assert_clear(info, Store, "raw")
    big_json = {"x": "y" * (limit + 1024)}
    with pytest.raises(DataTypeError) as info:
        Store.insert1({"item": 2, "note": big_json})
    _assert_clear(info, Store, "note")
    fits = os.urandom(2 * 2**20)
    Store.insert1({"item": 3, "data": fits})
    assert (Store & {"item": 3}).fetch1("data") == fits
    assert Store.keys() == [{"item": 3}]


def test_server_refusal_of_a_large_statement_is_explained(connection, Store, limit, caplog):
    """A statement that bypasses the check (raw SQL) and is dropped by the server names the limit
    instead of 'server has gone away', is not sent again, and the next statement reconnects."""
    caplog.set_level("WARNING", logger="joinflow")
    with pytest.raises(DataTypeError, match="max_allowed_packet") as info:
        connection.query(f"INSERT INTO {Store.full_table_name} (item, data) VALUES (1, :d)",
                         {"d": os.urandom(limit + 2**20)})
    assert "<blob@>" in str(info.value)
    assert "reconnecting" not in caplog.text  # not retried as a lost connection
    assert len(Store()) == 0
