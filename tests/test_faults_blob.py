"""Corrupt or crafted blob bytes: a clear ``BlobError``, never a machine out of memory, a
``RecursionError`` or a stray exception.

Before, a header declaring 10**12 elements made ``unpack`` allocate for them (``MemoryError``,
or gigabytes for smaller counts), a zlib stream was inflated in full before its declared size
was compared, and deep nesting raised ``RecursionError``.  The decoder now checks every
declared count against the bytes that follow before allocating, inflates at most the declared
size, and refuses nesting deeper than ``blob.MAX_DEPTH`` (the encoder refuses to write it).
"""

from __future__ import annotations

import datetime
import decimal
import os
import random
import struct
import sys
import tracemalloc
import uuid
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import joinflow as dj
from joinflow import blob
from joinflow.errors import BlobError, DataTypeError

U32, U64 = struct.Struct("<I"), struct.Struct("<Q")
HUGE = 10**12


def _u64(n: int) -> bytes:
    return U64.pack(n)


def _array_header(shape, type_id: int, is_complex: int = 0) -> bytes:
    return b"A" + _u64(len(shape)) + b"".join(_u64(s) for s in shape) + U32.pack(type_id) + U32.pack(is_complex)


CRAFTED_COUNTS = {
    "object array of 10**12": _array_header((HUGE,), 5) + b"\0" * 64,
    "object array of 2*10**7 (160 MB of pointers)": _array_header((2 * 10**7,), 5) + b"\0" * 64,
    "float64 array of 10**12": _array_header((HUGE,), 6) + b"\0" * 64,
    "complex array of 10**12": _array_header((10**6, 10**6), 6, 1) + b"\0" * 64,
    "char array of 10**12": _array_header((1, HUGE), 4) + b"\0" * 64,
    "shape product beyond 64 bits": _array_header((2**32, 2**32, 3), 9) + b"\0" * 64,
    "ndim of 10**12": b"A" + _u64(HUGE) + b"\0" * 64,
    "cell array of 10**12": b"C" + _u64(2) + _u64(10**6) + _u64(10**6) + b"\0" * 64,
    "struct array of 10**12": b"S" + _u64(1) + _u64(HUGE) + U32.pack(2) + b"a\0b\0" + b"\0" * 64,
    "struct array of 10**7 x 10**3 fields": b"S" + _u64(1) + _u64(10**7) + U32.pack(3) + b"a\0b\0c\0" + b"\0" * 64,
    "record array of 4e9 fields": b"F" + U32.pack(2**32 - 1) + b"\0" * 64,
    # 2*10**4 bools, then 999 complex scalars broadcast over them: 320 MB from 60 kB
    "record array broadcast": b"F" + U32.pack(1000) + b"\0".join(b"f%d" % i for i in range(1000)) + b"\0"
    + _array_header((2 * 10**4,), 3) + bytes(2 * 10**4) + (_array_header((), 6, 1) + bytes(16)) * 999,
    "list of 10**12": b"\x02" + _u64(HUGE) + b"\0" * 64,
    "tuple of 10**12": b"\x01" + _u64(HUGE) + b"\0" * 64,
    "set of 10**12": b"\x03" + _u64(HUGE) + b"\0" * 64,
    "dict of 10**12": b"\x04" + _u64(HUGE) + b"\0" * 64,
    "str of 10**12 bytes": b"\x05" + _u64(HUGE) + b"abc",
    "bytes of 2**64-1": b"\x06" + _u64(2**64 - 1) + b"abc",
}


@pytest.mark.parametrize("payload", list(CRAFTED_COUNTS.values()), ids=list(CRAFTED_COUNTS))
def test_declared_counts_beyond_the_bytes_are_refused_before_allocating(payload):
    tracemalloc.start()
    try:
        with pytest.raises(BlobError, match="Invalid blob"):
            blob.unpack(b"dj0\0" + payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # nothing near the declared size was allocated


def _zlib_blob(declared: int, payload: bytes) -> bytes:
    return b"ZL123\0" + _u64(declared) + payload


def _bomb(size: int) -> bytes:
    """A zlib stream of ``size`` bytes of a valid blob (an uint8 array of zeros), made in pieces."""
    deflate = zlib.compressobj(6)
    chunk = bytes(2**20)
    head = b"mYm\0" + _array_header((size - 29,), 9)  # 29 bytes: header, code, ndim, shape, type
    parts = [deflate.compress(head)]
    left = size - len(head)
    while left:
        piece = chunk[: min(left, len(chunk))]
        parts.append(deflate.compress(piece))
        left -= len(piece)
    parts.append(deflate.flush())
    return b"".join(parts)


def test_zlib_stream_is_inflated_at_most_to_its_declared_size():
    size = 24 * 2**20
    stream = _bomb(size)
    assert blob.unpack(_zlib_blob(size, stream)).size == size - 29  # the honest header decodes
    tracemalloc.start()
    try:
        with pytest.raises(BlobError, match="inflates to more than the 1000 bytes"):
            blob.unpack(_zlib_blob(1000, stream))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # not the 24 MiB the stream would inflate to
    good = blob.pack(np.zeros(1000))
    for bad in (
        good[:10],  # ends inside the compression header
        _zlib_blob(0, good[14:]),  # max_length=0 would mean "no limit"
        _zlib_blob(len(blob.pack(np.zeros(1000), compress=False)) + 1, good[14:]),  # declared one too many
        good[:-5],  # the stream is cut short
        _zlib_blob(10**12, good[14:]),  # declares far more than it holds
        _zlib_blob(100, b"not zlib at all"),
    ):
        with pytest.raises(BlobError, match="Invalid blob"):
            blob.unpack(bad)
    assert np.array_equal(blob.unpack(good + b"trailing"), np.zeros(1000))  # as zlib.decompress (DataJoint)


def _nested_list_bytes(depth: int) -> bytes:
    """A crafted blob of ``depth`` nested one-item lists (item lengths not even right)."""
    return b"dj0\0" + (b"\x02" + _u64(1) + _u64(0)) * depth + b"\xff"


def test_deep_nesting_is_a_clear_error_not_recursion_error():
    with pytest.raises(BlobError, match=f"nested more than {blob.MAX_DEPTH} levels"):
        blob.unpack(_nested_list_bytes(100_000))
    with pytest.raises(BlobError, match="nested more than"):
        blob.unpack(b"dj0\0" + _array_header((1,), 5) + (_u64(0) + _array_header((1,), 5)) * 5000)


def _nested(depth: int):
    value = None
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_round_trips_and_deeper_is_refused_when_packing():
    deepest = _nested(blob.MAX_DEPTH)
    assert blob.unpack(blob.pack(deepest)) == deepest
    with pytest.raises(DataTypeError, match="nested more than"):
        blob.pack(_nested(blob.MAX_DEPTH + 1))
    loop: list = []
    loop.append(loop)
    with pytest.raises(DataTypeError, match="contains itself"):
        blob.pack(loop)
    rec = np.zeros(2, dtype=[("a", [("b", "i4")])])
    assert blob.unpack(blob.pack(rec)).tolist() == rec.tolist()


def test_decoding_from_deep_inside_other_calls_is_a_clear_error():
    deep = blob.pack(_nested(blob.MAX_DEPTH))

    def recurse(n):
        return recurse(n - 1) if n else blob.unpack(deep)

    with pytest.raises(BlobError, match="nested too deeply for the stack"):
        recurse(sys.getrecursionlimit() - 120)


# -- fuzz: mutated and random bytes --------------------------------------------------------------

def _corpus() -> list[bytes]:
    values = [
        [1, "two", 3.0, None, True, b"\x00\xff", (4, 5), {6, 7}, {"k": [8, {"n": 9}]}],
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
        np.array(["ab", "c"], dtype=object),
        np.array("a char row", dtype="U"),
        np.array([b"x", b"y"], dtype="S1"),
        np.arange("2024-01-01", "2024-01-03", dtype="datetime64[D]"),
        np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),
        blob.MatCell((2,), dtype=object),
        np.zeros(2, dtype=[("s", "O")]).view(blob.MatStruct),
        decimal.Decimal("1.25"), uuid.UUID(int=7), datetime.datetime(2024, 5, 6, 7, 8, 9, 10), 2**100,
        np.int64(-3), 1.5 + 2j,
        np.arange(400, dtype=np.int32),  # compressed (ZL123)
    ]
    corpus = [blob.pack(v) for v in values]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from datajoint import blob as djblob
    except ImportError:  # pragma: no cover - DataJoint is a test dependency
        return corpus
    return corpus + [djblob.pack(v) for v in values[:8] if not isinstance(v, np.ndarray) or v.dtype.kind != "M"]


CORPUS = _corpus()


def _decodes_or_blob_error(data: bytes) -> None:
    try:
        blob.unpack(data)
    except BlobError:
        pass


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:  # flip a byte
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:  # insert bytes
            data[at:at] = rng.randbytes(rng.randint(1, 9))
        elif kind == 2:  # cut
            del data[at : at + rng.randint(1, 16)]
        elif kind == 3:  # truncate
            del data[at:]
        else:  # overwrite with a count that is too large (or 2**64-1, or 0)
            data[at : at + 8] = rng.choice([_u64(HUGE), _u64(2**64 - 1), _u64(0), _u64(rng.getrandbits(40))])
    return bytes(data)


def test_mutated_blobs_decode_or_raise_blob_error():
    rng = random.Random(int(os.environ.get("JF_FUZZ_SEED", "15")))
    for data in CORPUS:
        blob.unpack(data)  # the corpus itself is valid
    for i in range(int(os.environ.get("JF_FUZZ_EXAMPLES", "40")) * 60):
        data = rng.choice(CORPUS)
        if data.startswith(b"ZL123"):  # mutate inside the compressed stream, too
            data = data if rng.random() < 0.5 else zlib.decompress(data[14:])
        _decodes_or_blob_error(_mutate(rng, data))


@settings(max_examples=int(os.environ.get("JF_FUZZ_EXAMPLES", "40")) * 3, deadline=None,
          derandomize=not os.environ.get("JF_FUZZ_EXAMPLES"), suppress_health_check=[HealthCheck.too_slow])
@given(head=st.sampled_from([b"mYm\0", b"dj0\0", b""]), body=st.binary(max_size=200))
def test_random_bytes_decode_or_raise_blob_error(head, body):
    _decodes_or_blob_error(head + body)
    _decodes_or_blob_error(_zlib_blob(len(body) + 4, zlib.compress(head + body)))


# -- a crafted value in a table --------------------------------------------------------------------

def test_crafted_blob_in_a_table_names_table_and_attribute(schema, connection):
    @schema
    class Store(dj.Manual):
        definition = """
        item : int32
        ---
        data : <blob>
        """

    Store.insert([{"item": 1, "data": [1, 2]}, {"item": 2, "data": np.arange(3)}])
    connection.query(f"UPDATE {Store.full_table_name} SET data = :d WHERE item = 2",
                     {"d": b"dj0\0" + _array_header((HUGE,), 5)})
    with pytest.raises(BlobError) as info:
        Store.to_dicts()
    message = str(info.value)
    assert Store.full_table_name in message and "`data`" in message and "update1()" in message
    with pytest.raises(BlobError, match="`data`"):
        (Store & {"item": 2}).fetch1("data")
    with pytest.raises(BlobError, match="`data`"):
        list(Store())
    assert (Store & {"item": 1}).fetch1("data") == [1, 2]  # the other rows and the connection are fine
    assert Store.proj().to_dicts(order_by="item") == [{"item": 1}, {"item": 2}]
    Store.update1({"item": 2, "data": "fixed"})
    assert (Store & {"item": 2}).fetch1("data") == "fixed"
