"""The blob format: byte compatibility with ``datajoint.blob`` and ``<blob>`` attributes on every backend."""

from __future__ import annotations

import datetime
import decimal
import uuid
import warnings

import numpy as np
import pytest

import joinflow as dj
from joinflow import blob
from joinflow.errors import DataJointError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "No datajoint.json found" is raised on import
    djd = pytest.importorskip("datajoint")
    from datajoint import blob as djblob


def _records():
    rec = np.zeros(3, dtype=[("a", "i4"), ("b", "f8"), ("c", "U3")])
    rec["a"] = [1, 2, 3]
    rec["b"] = [0.5, np.nan, np.inf]
    rec["c"] = ["x", "yy", "zzz"]
    return rec


def _nested_records():
    inner = np.dtype([("x", "f4"), ("y", "i2")])
    rec = np.zeros(2, dtype=[("p", inner), ("q", "u1")])
    rec["p"]["x"] = [1.5, 2.5]
    rec["q"] = [7, 8]
    return rec


rng = np.random.default_rng(7)

VALUES = {
    "f8_2d": np.arange(12, dtype=np.float64).reshape(3, 4),
    "f8_fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    "i16_3d": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    "transposed_u64": np.arange(6, dtype=np.uint64).reshape(2, 3).T,
    "strided": np.arange(20, dtype=np.int32)[::3],
    **{f"dtype_{t}": np.arange(5, dtype=t) for t in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4")},
    "bool_array": np.array([[True, False], [False, True]]),
    "nan_inf": np.array([np.nan, np.inf, -np.inf, 0.0, -0.0]),
    "float32_nan": np.array([np.nan, 1.0], dtype=np.float32),
    "complex128": np.array([1 + 2j, 3 - 4j, np.nan + 1j]),
    "complex64_2d": (np.arange(6) + 1j * np.arange(6)).astype(np.complex64).reshape(2, 3),
    "empty": np.array([], dtype=np.float64),
    "empty_2d": np.zeros((0, 3), dtype=np.int32),
    "0d": np.array(3.5),
    "np_float32": np.float32(2.5),
    "np_int64": np.int64(-7),
    "np_bool": np.bool_(True),
    "datetime64_D": np.arange("2024-01-01", "2024-01-04", dtype="datetime64[D]"),
    "datetime64_ms": np.array(["2024-01-01T00:00:00.123", "NaT"], dtype="datetime64[ms]"),
    "datetime64_scalar": np.datetime64("2024-05-06T07:08:09", "s"),
    "unicode_array": np.array(["ab", "c", ""]),
    "object_array": np.array([1, "x", None, [1, 2]], dtype=object),
    "char_array": np.array([b"a", b"b"], dtype="S1"),
    "records": _records(),
    "nested_records": _nested_records(),
    "int": 5,
    "negative_int": -300,
    "big_int": 2**100,
    "huge_negative_int": -(2**200) + 1,
    "float": 1.5,
    "float_nan": float("nan"),
    "float_inf": float("-inf"),
    "complex": complex(1, -2),
    "str": "héllo wörld ✓",
    "empty_str": "",
    "bytes": b"\x00\x01bytes\xff",
    "bytearray": bytearray(b"abc"),
    "list": [1, "a", None, 2.5, [3, [4]]],
    "tuple": (1, 2.0, "three"),
    "empty_list": [],
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "dict": {"a": np.eye(3), "b": [1, {"c": None}], 3: (4,)},
    "None": None,
    "True": True,
    "False": False,
    "decimal": decimal.Decimal("1.2300"),
    "decimal_negative": decimal.Decimal("-1E-10"),
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, 6789),
    "date": datetime.date(2020, 2, 29),
    "time": datetime.time(1, 2, 3, 4),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "large_random": rng.standard_normal(20_000),
    "large_compressible": np.zeros(5_000),
    "nested": {"nested": ({"x": [np.arange(3)]}, {"set": {1.5}})},
}


def same(a, b) -> bool:
    """Equal values of equal types; arrays: same dtype, shape, values (NaN == NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.fields:
            return all(same(a[n], b[n]) for n in a.dtype.names)
        if a.dtype == object:
            return all(same(x, y) for x, y in zip(a.ravel(), b.ravel()))
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        if a.dtype.kind == "M":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return type(a) is type(b) and a == b


def expected_after_round_trip(value):
    """What a blob gives back (DataJoint's semantics): what changes type on the way."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind not in "OUS":
        return value[()]  # 0-d arrays come back as numpy scalars
    if isinstance(value, np.ndarray) and value.dtype == np.dtype("S1") and value.ndim == 1:
        return np.array(["".join(value.astype("U1").tolist())])  # MATLAB char arrays read as one string
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return value.astype(object)  # str arrays are stored as object arrays of str
    if isinstance(value, np.ndarray) and value.dtype.fields:  # str fields come back as object fields
        dtype = [(n, object if value.dtype[n].kind == "U" else value.dtype[n]) for n in value.dtype.names]
        return value.astype(dtype).view(np.recarray)
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, frozenset):
        return set(value)
    return value


@pytest.mark.parametrize("name", sorted(VALUES))
def test_round_trip(name):
    value = VALUES[name]
    for compress in (True, False):
        got = blob.unpack(blob.pack(value, compress=compress))
        assert same(got, expected_after_round_trip(value)), (name, got)
    if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS" and not value.dtype.fields and value.ndim:
        got = blob.unpack(blob.pack(value))
        assert got.flags.writeable
        assert got.shape == value.shape and got.dtype == value.dtype
        if value.ndim > 1 and value.size:
            assert np.array_equal(got[1], value[1]) and np.array_equal(got[:, 1], value[:, 1])  # element order


@pytest.mark.parametrize("name", sorted(VALUES))
def test_byte_compatible_with_datajoint(name):
    value = VALUES[name]
    ours, theirs = blob.pack(value), djblob.pack(value)
    assert ours == theirs, name  # same bytes: zlib and the serializer are deterministic
    assert same(blob.unpack(theirs), djblob.unpack(theirs)), name
    assert same(djblob.unpack(ours), blob.unpack(ours)), name
    assert same(blob.unpack(theirs, squeeze=True), djblob.unpack(theirs, squeeze=True)), name


def test_headers_and_compression_framing():
    assert blob.pack(np.arange(3.0)).startswith(b"mYm\0A")  # plain arrays: MATLAB's subset
    assert blob.pack({"a": 1}).startswith(b"dj0\0")  # Python extensions
    assert blob.pack(np.array(1.0)).startswith(b"dj0\0")  # 0-d arrays are an extension too
    small = blob.pack(np.zeros(100))
    assert not small.startswith(b"ZL123\0")  # under 1000 bytes: never compressed
    packed = blob.pack(np.zeros(1000))
    assert packed.startswith(b"ZL123\0")
    assert int.from_bytes(packed[6:14], "little") == len(blob.pack(np.zeros(1000), compress=False))
    noise = rng.integers(0, 256, 5000, dtype=np.uint8)
    assert not blob.pack(noise).startswith(b"ZL123\0")  # compression that does not shrink is skipped


def test_column_major_layout():
    array = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    raw = blob.pack(array, compress=False)
    data = np.frombuffer(raw[-24:], dtype="<i4")
    assert data.tolist() == [1, 4, 2, 5, 3, 6]


def test_big_endian_arrays_are_stored_little_endian():
    value = np.arange(6, dtype=">f8").reshape(2, 3)
    got = blob.unpack(blob.pack(value))
    assert got.dtype == np.float64 and np.array_equal(got, value)
    assert djblob.unpack(blob.pack(value)).tolist() == value.tolist()


def test_matlab_cell_and_struct():
    cell = np.empty(3, dtype=object).view(blob.MatCell)
    cell[:] = [np.arange(2.0), "x", np.eye(2)]
    struct = np.array([(np.arange(2.0), "a")], dtype=[("f", object), ("g", object)]).view(blob.MatStruct)
    for value, theirs_type in ((cell, djblob.MatCell), (struct, djblob.MatStruct)):
        ours = blob.pack(value)
        theirs = djblob.pack(value.view(theirs_type))
        assert ours == theirs
        got = blob.unpack(theirs)
        assert isinstance(got, type(value)) and got.shape == value.shape


def test_errors_are_datajoint_errors():
    with pytest.raises(DataJointError, match="Cannot serialize"):
        blob.pack(object())
    with pytest.raises(DataJointError, match="dtype float16"):
        blob.pack(np.zeros(2, dtype=np.float16))
    with pytest.raises(DataJointError, match="header"):
        blob.unpack(b"not a blob")
    good = blob.pack([1, 2, 3])
    with pytest.raises(DataJointError):
        blob.unpack(good[:-3])
    with pytest.raises(DataJointError):
        blob.unpack(good + b"\0")
    for flip in (1, 2):  # the declared size one smaller (inflating stops there) or two larger
        packed = bytearray(blob.pack(np.zeros(1000)))
        packed[6] ^= flip
        with pytest.raises(DataJointError, match="size mismatch|inflates to more than"):
            blob.unpack(bytes(packed))


def test_large_array_is_not_copied_element_by_element():
    value = rng.standard_normal(2_000_000)  # 16 MB: element-wise code would take seconds
    import time

    start = time.perf_counter()
    got = blob.unpack(blob.pack(value, compress=False))
    assert time.perf_counter() - start < 1.0
    assert np.array_equal(got, value)


# --------------------------------------------------------------------------------------------
# <blob> attributes on every backend
# --------------------------------------------------------------------------------------------
TABLE_VALUES = [
    np.arange(12, dtype=np.float64).reshape(3, 4),
    np.array([np.nan, np.inf], dtype=np.float32),
    {"a": [1, 2, {"b": None}], "c": "text"},
    "a string",
    3,
    [np.arange(3), (1, "x")],
    np.array(["ab", "c"]),
    _records(),
    rng.standard_normal(50_000),  # 400 kB
]


@pytest.mark.backend
def test_blob_attribute_round_trip(schema, connection):
    @schema
    class Signal(dj.Manual):
        definition = """
        signal_id : int32
        ---
        data : <blob>          # any array
        extra = null : <blob>
        """

    Signal.insert([{"signal_id": i, "data": v, "extra": None if i % 2 else v} for i, v in enumerate(TABLE_VALUES)])
    rows = Signal.to_dicts(order_by="signal_id")
    for i, value in enumerate(TABLE_VALUES):
        want = expected_after_round_trip(value)
        assert same(rows[i]["data"], want), i
        assert rows[i]["extra"] is None if i % 2 else same(rows[i]["extra"], want)
    assert same((Signal & {"signal_id": 0}).fetch1("data"), TABLE_VALUES[0])
    arrays = Signal.to_arrays("data", order_by="signal_id")
    assert arrays.dtype == object and len(arrays) == len(TABLE_VALUES)
    assert same(arrays[0], TABLE_VALUES[0])
    ids, data = Signal.to_arrays("signal_id", "data", order_by="signal_id")
    assert ids.tolist() == list(range(len(TABLE_VALUES))) and same(data[2], TABLE_VALUES[2])
    frame = Signal.to_pandas(order_by="signal_id")
    assert same(frame.loc[2, "data"], TABLE_VALUES[2])
    Signal.update1({"signal_id": 3, "data": {"updated": True}})
    assert (Signal & {"signal_id": 3}).fetch1("data") == {"updated": True}

    # the catalog keeps DataJoint's spelling; a fresh connection rebuilds the codec heading
    connection.forget_catalog()
    table = dj.FreeTable(connection, Signal.full_table_name)
    assert table.heading["data"].type == "<blob>" and table.heading["data"].comment == "any array"
    assert "data : <blob>  # any array" in table.describe()
    assert same(table.to_dicts(order_by="signal_id")[0]["data"], TABLE_VALUES[0])


@pytest.mark.backend
def test_blob_arrays_of_equal_shape_in_to_arrays(schema):
    @schema
    class Frames(dj.Manual):
        definition = """
        frame : int32
        ---
        image : <blob>
        """

    Frames.insert({"frame": i, "image": np.full((2, 3), i, dtype=np.int16)} for i in range(3))
    images = Frames.to_arrays("image", order_by="frame")
    assert images.shape == (3,) and images.dtype == object
    assert images[2].shape == (2, 3) and images[2].dtype == np.int16 and images[2][0, 0] == 2


@pytest.mark.backend
def test_blob_refuses_unserializable_values_naming_the_attribute(schema):
    @schema
    class Holder(dj.Manual):
        definition = """
        holder : int32
        ---
        payload : <blob>
        """

    with pytest.raises(DataJointError, match=r"attribute `payload` \(<blob>\)"):
        Holder.insert1({"holder": 1, "payload": object()})
    assert len(Holder()) == 0


# --------------------------------------------------------------------------------------------
# DataJoint reads joinflow's <blob> columns and joinflow reads DataJoint's (PostgreSQL, MySQL)
# --------------------------------------------------------------------------------------------
DJ_SETTINGS = ("database.backend", "database.host", "database.port", "database.user",
               "database.password", "database.name", "database.use_tls", "safemode")


@pytest.fixture
def datajoint_conn(backend, connection, schema_names):
    """DataJoint's global connection pointed at this backend's server (skipped on SQLite)."""
    if backend == "sqlite":
        pytest.skip("DataJoint has no SQLite backend")
    url = connection.engine.url
    pg = backend == "postgresql"
    settings = {
        "database.backend": backend,
        "database.host": url.host or "127.0.0.1",
        "database.port": url.port or (5432 if pg else 3306),
        "database.user": url.username or ("postgres" if pg else "root"),
        "database.password": url.password or "",
        "database.name": (url.database or "postgres") if pg else None,
        "database.use_tls": False,
        "safemode": False,
    }
    from datajoint import instance as djd_instance

    saved = {key: djd.config[key] for key in DJ_SETTINGS}
    saved_connection = djd_instance._singleton_connection
    dj_connection = None
    try:
        for key, value in settings.items():
            djd.config[key] = value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dj_connection = djd.conn(reset=True)
        yield dj_connection
    finally:
        if dj_connection is not None:
            try:
                dj_connection.close()
            except Exception:  # pragma: no cover
                pass
        for key in DJ_SETTINGS:
            djd.config[key] = saved[key]
        djd_instance._singleton_connection = saved_connection


INTEROP_VALUES = [
    np.arange(12, dtype=np.float64).reshape(3, 4),
    {"a": [1, 2, {"b": None}], "c": "text", "d": decimal.Decimal("2.50")},
    rng.standard_normal(10_000),
    np.array([1 + 1j, np.nan], dtype=np.complex64),
]

DEFINITION = """
item : int32
---
value : <blob>
"""


@pytest.mark.backend
def test_joinflow_reads_blobs_written_by_datajoint(datajoint_conn, connection, schema_names):
    name = schema_names()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        djd_schema = djd.Schema(name, connection=datajoint_conn)

        @djd_schema
        class Item(djd.Manual):
            definition = DEFINITION

        Item.insert([{"item": i, "value": v} for i, v in enumerate(INTEROP_VALUES)])
    table = dj.FreeTable(connection, connection.backend.full_table_name(name, "item"))
    assert table.heading["value"].type == "<blob>"
    rows = table.to_dicts(order_by="item")
    for i, value in enumerate(INTEROP_VALUES):
        assert same(rows[i]["value"], value), i


@pytest.mark.backend
def test_datajoint_reads_blobs_written_by_joinflow(datajoint_conn, connection, schema_names):
    name = schema_names()
    schema = dj.Schema(name, connection=connection)

    @schema
    class Item(dj.Manual):
        definition = DEFINITION

    Item.insert([{"item": i, "value": v} for i, v in enumerate(INTEROP_VALUES)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = djd.VirtualModule(f"vm_{name}", name, connection=datajoint_conn)
        rows = module.Item.to_dicts(order_by="item")
        for i, value in enumerate(INTEROP_VALUES):
            assert same(rows[i]["value"], value), i
        module.Item.insert1({"item": 99, "value": {"from": "datajoint"}})
    assert (Item & {"item": 99}).fetch1("value") == {"from": "datajoint"}
