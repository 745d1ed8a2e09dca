"""DataJoint's blob serialization, byte-compatible with ``datajoint.blob``.

A blob is ``mYm\\0`` (the MATLAB-compatible subset) or ``dj0\\0`` (Python extensions)
followed by one serialized item.  Blobs longer than 1000 bytes are stored as
``ZL123\\0`` + uint64 uncompressed length + zlib stream when that is shorter.

Item codes (every count and length is a little-endian uint64 unless noted)::

    A  numeric/char/object array: ndim, shape[ndim], uint32 type id, uint32 is_complex,
       then the data in column-major (Fortran) order (imaginary part after the real part);
       object and str arrays hold length-prefixed items, char arrays uint16 codes
    F  structured array: uint32 n_fields, names joined by NUL + NUL, one item per field
    S  MATLAB struct array, C  MATLAB cell array, P  sparse (not supported)
    \\x01 tuple  \\x02 list  \\x03 set  \\x04 dict   (count, then length-prefixed items)
    \\x05 str (utf-8)  \\x06 bytes  \\x0a int (uint16 size + signed little-endian)
    \\x0b bool  \\x0c complex128  \\x0d float64  \\xff None
    d  Decimal (as str)  t  date/time/datetime (int32 yyyymmdd, int64 hhmmssuuuuuu)  u  UUID

Numeric arrays are written and read as whole buffers (``tobytes``/``frombuffer``),
never element by element.  Arrays come back writable, in Fortran order (the format
does not record the memory order of the original).

Decoding is bounded, so bytes that are corrupt or crafted raise :class:`~joinflow.errors.BlobError`
instead of exhausting memory or the stack: every declared count and shape is checked against the
bytes that actually follow before anything is allocated (each element takes at least a known number
of bytes), a zlib stream is inflated to at most its declared size, and values may nest at most
``MAX_DEPTH`` levels deep (also when packing, so nothing is stored that could not be read back).
"""

from __future__ import annotations

import collections.abc
import datetime
import decimal
import math
import struct
import uuid
import zlib
from typing import Any

import numpy as np

from .errors import BlobError, DataJointError, DataTypeError

MYM = b"mYm\0"
DJ0 = b"dj0\0"
ZL123 = b"ZL123\0"
COMPRESS_ABOVE = 1000
SAMPLE_ABOVE = 256 * 1024  # with skip_incompressible: blobs this large are compressed only if a sample shows it pays
# values nest at most this deep (a list in a list in ... counts one level each); deeper ones are
# refused when packing and when unpacking (decoding is recursive: this keeps it far from Python's
# recursion limit, with room for the caller's own stack)
MAX_DEPTH = 200
_ZLIB_MAX_RATIO = 1040  # deflate's largest expansion is 1032:1 (258 bytes from 2 bits)
# the fewest bytes one length-prefixed item takes (uint64 length + 1-byte code)
_ITEM_BYTES = 9

_DATETIME_UNITS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as")

# type id -> dtype (None: cell, struct, function ...)
TYPE_DTYPES: dict[int, np.dtype] = {
    3: np.dtype("bool"),
    4: np.dtype("S1"),  # MATLAB char
    5: np.dtype("O"),
    6: np.dtype("float64"),
    7: np.dtype("float32"),
    8: np.dtype("int8"),
    9: np.dtype("uint8"),
    10: np.dtype("int16"),
    11: np.dtype("uint16"),
    12: np.dtype("int32"),
    13: np.dtype("uint32"),
    14: np.dtype("int64"),
    15: np.dtype("uint64"),
}
for _i, _unit in enumerate(_DATETIME_UNITS):
    TYPE_DTYPES[65536 + _i] = np.dtype(f"datetime64[{_unit}]")
DTYPE_IDS: dict[np.dtype, int] = {dtype: type_id for type_id, dtype in TYPE_DTYPES.items()}
CHAR_ID, OBJECT_ID = 4, 5

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")


class MatCell(np.ndarray):
    """An object array that serializes as a MATLAB cell array (code ``C``)."""


class MatStruct(np.recarray):
    """A record array that serializes as a MATLAB struct array (code ``S``)."""


def _u64(n: int) -> bytes:
    return _U64.pack(n)


def _nbytes(chunks: list) -> int:
    return sum(c.nbytes if isinstance(c, np.ndarray) else len(c) for c in chunks)


class _Packer:
    """Serializes one object into a list of byte chunks; remembers whether dj0 is needed."""

    __slots__ = ("dj0", "depth")

    def __init__(self) -> None:
        self.dj0 = False
        self.depth = 1

    def item(self, obj: Any, out: list) -> None:
        """Append a length-prefixed serialized item."""
        sub: list = []
        self.deeper()
        self.pack(obj, sub)
        self.depth -= 1
        out.append(_U64.pack(_nbytes(sub)))
        out.extend(sub)

    def deeper(self) -> None:
        """One nesting level down (the reader counts the same levels)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DataTypeError(
                f"Cannot serialize a value nested more than {MAX_DEPTH} levels deep into a blob (or a "
                "container that contains itself): it could not be read back. Flatten the structure, or "
                "store it another way (e.g. as JSON or an <object@> file)."
            )

    def pack(self, obj: Any, out: list) -> None:
        if isinstance(obj, MatCell):
            return self.cell(obj, out)
        if isinstance(obj, MatStruct):
            return self.struct(obj, out)
        if isinstance(obj, np.ndarray) and obj.dtype.fields is None:
            return self.array(obj, out)
        self.dj0 = True  # everything below is a Python extension of the MATLAB format
        kind = type(obj)
        if kind is bool:
            out.append(b"\x0b\x01" if obj else b"\x0b\x00")
            return None
        if not isinstance(obj, (np.ndarray, np.number)):
            if isinstance(obj, bool):
                out.append(b"\x0b\x01" if obj else b"\x0b\x00")
                return None
            if isinstance(obj, int):
                size = obj.bit_length() // 8 + 1
                if size > 0xFFFF:
                    raise DataJointError("Cannot serialize an integer longer than 65535 bytes.")
                out.append(b"\x0a" + _U16.pack(size) + obj.to_bytes(size, "little", signed=True))
                return None
            if isinstance(obj, complex):
                out.append(b"\x0c" + _C128.pack(obj.real, obj.imag))
                return None
            if isinstance(obj, float):
                out.append(b"\x0d" + _F64.pack(obj))
                return None
        if isinstance(obj, np.ndarray):  # structured
            return self.records(np.asarray(obj), out)
        if isinstance(obj, (np.number, np.datetime64, np.bool_)):
            return self.array(np.asarray(obj), out)
        if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
            return self.temporal(obj, out)
        if isinstance(obj, decimal.Decimal):
            text = str(obj).encode()
            out.append(b"d" + _u64(len(text)) + text)
            return None
        if isinstance(obj, uuid.UUID):
            out.append(b"u" + obj.bytes)
            return None
        if isinstance(obj, collections.abc.Mapping):
            out.append(b"\x04" + _u64(len(obj)))
            for k, v in obj.items():
                self.item(k, out)
                self.item(v, out)
            return None
        if isinstance(obj, str):
            data = obj.encode()
            out.append(b"\x05" + _u64(len(data)))
            out.append(data)
            return None
        if isinstance(obj, (bytes, bytearray)):
            out.append(b"\x06" + _u64(len(obj)))
            out.append(bytes(obj))
            return None
        if isinstance(obj, collections.abc.MutableSequence):
            return self.sequence(b"\x02", obj, out)
        if isinstance(obj, collections.abc.Sequence):
            return self.sequence(b"\x01", obj, out)
        if isinstance(obj, collections.abc.Set):
            return self.sequence(b"\x03", obj, out)
        if obj is None:
            out.append(b"\xff")
            return None
        raise DataTypeError(
            f"Cannot serialize a {type(obj).__module__}.{type(obj).__name__} into a blob. Blobs hold numpy "
            "arrays, numbers, str, bytes, None, bool, Decimal, UUID, date/time and lists, tuples, sets and "
            "dicts of those; convert the value first (or write a custom dj.Codec)."
        )

    def sequence(self, code: bytes, items, out: list) -> None:
        out.append(code + _u64(len(items)))
        for it in items:
            self.item(it, out)

    def array(self, array: np.ndarray, out: list) -> None:
        dtype = array.dtype
        if dtype.kind == "M":
            self.dj0 = True
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and not np.little_endian):
            array = array.astype(dtype.newbyteorder("<"))
            dtype = array.dtype
        is_complex = dtype.kind == "c"
        if is_complex:
            real_dtype = {8: np.dtype("float32"), 16: np.dtype("float64")}.get(dtype.itemsize)
            if real_dtype is None:
                raise DataJointError(f"Cannot serialize complex arrays of dtype {dtype} into a blob.")
            dtype = real_dtype
        if dtype.kind == "U":
            type_id = OBJECT_ID
        else:
            type_id = DTYPE_IDS.get(dtype)
            if type_id is None:
                raise DataTypeError(
                    f"Cannot serialize a numpy array of dtype {array.dtype} into a blob (its type is ambiguous "
                    "or unknown). Convert it to one of bool, int8..int64, uint8..uint64, float32, float64, "
                    "complex64, complex128, datetime64, str or object."
                )
        head = b"A" + _u64(array.ndim) + np.asarray(array.shape, dtype="<u8").tobytes()
        out.append(head + _U32.pack(type_id) + _U32.pack(int(is_complex)))
        if type_id == OBJECT_ID:
            self.dj0 = True
            for element in array.ravel(order="F"):
                self.item(element, out)
        elif type_id == CHAR_ID:  # 16-bit chars for MATLAB (in C order, as DataJoint writes them)
            out.append(np.ascontiguousarray(array).view(np.uint8).astype("<u2").tobytes())
        else:
            if array.ndim == 0:
                self.dj0 = True
            if is_complex:
                flat = array.ravel(order="F")
                out.append(np.ascontiguousarray(flat.real).view(np.uint8))
                out.append(np.ascontiguousarray(flat.imag).view(np.uint8))
            else:
                out.append(array.ravel(order="F").view(np.uint8))

    def records(self, array: np.ndarray, out: list) -> None:
        names = array.dtype.names
        out.append(b"F" + _U32.pack(len(names)) + "\0".join(names).encode() + b"\0")
        self.deeper()  # the fields are read as items one level down
        for name in names:
            column = array[name]
            if column.dtype.fields:
                self.records(column, out)
            else:
                self.array(column, out)
        self.depth -= 1

    def temporal(self, value, out: list) -> None:
        if isinstance(value, datetime.datetime):
            date, time = value.date(), value.time()
        elif isinstance(value, datetime.date):
            date, time = value, None
        else:
            date, time = None, value
        day = -1 if date is None else (date.year * 100 + date.month) * 100 + date.day
        clock = -1 if time is None else (
            ((time.hour * 100 + time.minute) * 100 + time.second) * 1_000_000 + time.microsecond
        )
        out.append(b"t" + _I32.pack(day) + _I64.pack(clock))

    def struct(self, array: np.ndarray, out: list) -> None:
        names = array.dtype.names
        out.append(
            b"S" + np.asarray((array.ndim,) + array.shape, dtype="<u8").tobytes() + _U32.pack(len(names))
            + "\0".join(names).encode() + b"\0"
        )
        for record in array.ravel(order="F"):
            for value in record:
                self.item(value, out)

    def cell(self, array: np.ndarray, out: list) -> None:
        out.append(b"C" + np.asarray((array.ndim,) + array.shape, dtype="<u8").tobytes())
        for element in array.ravel(order="F"):
            self.item(element, out)


def pack(obj: Any, compress: bool = True, *, skip_incompressible: bool = False) -> bytes:
    """Serialize ``obj`` into DataJoint's blob format (the same bytes as ``datajoint.blob.pack``).

    ``skip_incompressible=True`` (config ``blob.compression = "fast"``) stores a blob of 256 KiB
    or more uncompressed when a sample shows zlib would save under 10%: much faster for noise,
    but the bytes (and a store's content hash) then differ from DataJoint's."""
    packer = _Packer()
    chunks: list = []
    packer.pack(obj, chunks)
    chunks.insert(0, DJ0 if packer.dj0 else MYM)
    blob = b"".join(chunks)
    if compress and len(blob) > COMPRESS_ABOVE:
        if skip_incompressible and len(blob) >= SAMPLE_ABOVE and not _worth_compressing(blob):
            return blob  # e.g. measured noise: zlib would take ~50x the copy time to save a few percent
        compressed = zlib.compress(blob)
        if len(compressed) + len(ZL123) + 8 < len(blob):
            return b"".join((ZL123, _u64(len(blob)), compressed))
    return blob


def _worth_compressing(blob: bytes) -> bool:
    """Whether a large blob compresses by 10% or more, judged on 16 KiB from its start and middle."""
    middle = len(blob) // 2
    sample = blob[:8192] + blob[middle : middle + 8192]
    return len(zlib.compress(sample, 1)) < 0.9 * len(sample)


serialize = pack


class _Reader:
    __slots__ = ("buf", "pos", "squeeze_arrays", "depth")

    def __init__(self, buf, squeeze: bool) -> None:
        self.buf = buf
        self.pos = 0
        self.squeeze_arrays = squeeze
        self.depth = 0

    # -- primitives ----------------------------------------------------------------------
    def take(self, n: int):
        start = self.pos
        end = start + n
        if end > len(self.buf):
            raise BlobError("Invalid blob: it ends in the middle of a value (truncated or corrupted).")
        self.pos = end
        return self.buf[start:end]

    def need(self, count: int, each: int, what: str) -> int:
        """``count`` elements of at least ``each`` bytes each: refused, before anything is
        allocated for them, when the bytes that follow cannot hold that many."""
        left = len(self.buf) - self.pos
        if count * each > left:
            raise BlobError(
                f"Invalid blob: {what} declares {count} elements, but only {left} bytes follow, too few for "
                "them: the blob is corrupted or crafted."
            )
        return count

    def shape(self, what: str) -> tuple[tuple[int, ...], int]:
        """(shape, number of elements) of an array header: ndim, then ndim uint64 sizes."""
        ndim = self.need(self.u64(), 8, f"the shape of {what}")
        shape = tuple(self.values(np.dtype("<u8"), ndim).tolist())
        return shape, math.prod(shape)

    def u64(self) -> int:
        value = _U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return value

    def u32(self) -> int:
        value = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return value

    def values(self, dtype: np.dtype, count: int) -> np.ndarray:
        data = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += dtype.itemsize * count
        return data

    def cstring(self) -> str:
        end = self.buf.index(b"\0", self.pos)
        text = bytes(self.buf[self.pos : end]).decode()
        self.pos = end + 1
        return text

    def squeeze(self, array: np.ndarray, to_scalar: bool = True):
        if not self.squeeze_arrays:
            return array
        array = array.squeeze()
        return array.item() if to_scalar and array.ndim == 0 else array

    # -- items -----------------------------------------------------------------------------
    def item(self) -> Any:
        """A length-prefixed item (the length is checked)."""
        size = self.u64()
        start = self.pos
        value = self.read()
        if self.pos - start != size:
            raise BlobError("Invalid blob: an item's length does not match its contents.")
        return value

    def read(self) -> Any:
        code = self.buf[self.pos]
        self.pos += 1
        reader = _READERS.get(code)
        if reader is None:
            raise BlobError(
                f"Unknown blob data structure code {chr(code)!r}: the blob was written by a newer or "
                "different serializer, or it is corrupted."
            )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise BlobError(
                f"Invalid blob: values nested more than {MAX_DEPTH} levels deep (joinflow.blob.MAX_DEPTH); "
                "joinflow never writes such a blob: it is corrupted or crafted."
            )
        value = reader(self)
        self.depth -= 1
        return value

    def array(self):
        shape, n = self.shape("an array")
        type_id, is_complex = self.u32(), self.u32()
        dtype = TYPE_DTYPES.get(type_id)
        if dtype is None:
            raise BlobError(f"Invalid blob: unsupported array type id {type_id}.")
        if type_id == OBJECT_ID:
            data = np.empty(self.need(n, _ITEM_BYTES, "an object array"), dtype=object)
            item = self.item
            for i in range(n):
                data[i] = item()
        elif type_id == CHAR_ID:
            data = self.values(np.dtype("S1"), 2 * self.need(n, 2, "a char array"))[::2].astype("U1")
            if len(shape) == 1 or (len(shape) == 2 and shape[0] == 1):
                compact = data.squeeze()
                data = compact if compact.shape == () else np.array("".join(compact.tolist()))
                shape = (1,)
        else:
            self.need(n, dtype.itemsize * (2 if is_complex else 1), "an array")
            data = self.values(dtype.newbyteorder("<") if dtype.kind != "b" else dtype, n)
            if is_complex:
                imag = self.values(dtype.newbyteorder("<"), n)
                out = np.empty(n, dtype=np.complex64 if dtype == np.float32 else np.complex128)
                out.real = data
                out.imag = imag
                data = out
            else:
                data = data.astype(dtype, copy=True)  # writable, native byte order
        if not shape and type_id not in (OBJECT_ID, CHAR_ID):
            # a 0-d array comes back as a numpy scalar (as DataJoint returns it)
            return data[0].item() if self.squeeze_arrays else data[0]
        return self.squeeze(data.reshape(shape, order="F"))

    def records(self):
        n_fields = self.need(self.u32(), 2, "a structured array's field list")  # a NUL and a code each
        if not n_fields:
            return np.array(None)
        names = [self.cstring() for _ in range(n_fields)]
        columns = []
        for _ in range(n_fields):
            columns.append(self.read())
        if any(not isinstance(c, (np.ndarray, np.generic)) for c in columns):
            raise BlobError("Invalid blob: a field of a structured array is not an array.")
        shape = columns[0].shape
        dtype = np.dtype([(n, c.dtype) for n, c in zip(names, columns)])
        # fields of another shape are broadcast (as DataJoint does: char fields come back 0-d), but
        # not into more memory than real fields could fill: each element of a field was in the blob
        if math.prod(shape) * dtype.itemsize > 4 * len(self.buf) + 2**16:
            raise BlobError("Invalid blob: the fields of a structured array do not have the shape they declare.")
        rec = np.empty(shape, dtype)
        for name, column in zip(names, columns):
            rec[name] = column
        return rec.view(np.recarray)

    def struct(self):
        shape, n = self.shape("a struct array")
        n_fields = self.need(self.u32(), 1, "a struct array's field list")  # a NUL each
        if not n_fields:
            return np.array(None)
        names = [self.cstring() for _ in range(n_fields)]
        self.need(n * n_fields, _ITEM_BYTES, "a struct array")
        data = np.empty(n, dtype=[(name, object) for name in names])
        item = self.item
        for i in range(n):
            values = []
            for _ in range(n_fields):
                values.append(item())
            data[i] = tuple(values)
        return self.squeeze(data.reshape(shape, order="F"), to_scalar=False).view(MatStruct)

    def cell(self):
        shape, n = self.shape("a cell array")
        data = np.empty(self.need(n, _ITEM_BYTES, "a cell array"), dtype=object)
        item = self.item
        for i in range(n):
            data[i] = item()
        if n == 0:
            return data.view(MatCell)
        return self.squeeze(data.reshape(shape, order="F"), to_scalar=False).view(MatCell)

    def sparse(self):
        raise BlobError("Sparse MATLAB arrays (blob code 'P') are not supported.")

    def none(self):
        return None

    # (loops, not comprehensions: a comprehension is one more stack frame per nesting level)
    def tuple_(self):
        return tuple(self.list_())

    def list_(self):
        result = []
        item = self.item
        for _ in range(self.need(self.u64(), _ITEM_BYTES, "a list, tuple or set")):
            result.append(item())
        return result

    def set_(self):
        return set(self.list_())

    def dict_(self):
        result = {}
        item = self.item
        for _ in range(self.need(self.u64(), 2 * _ITEM_BYTES, "a dict")):
            k = item()
            result[k] = item()
        return result

    def str_(self):
        return bytes(self.take(self.u64())).decode()

    def bytes_(self):
        return bytes(self.take(self.u64()))

    def int_(self):
        size = _U16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return int.from_bytes(self.take(size), "little", signed=True)

    def bool_(self):
        return bool(self.take(1)[0])

    def complex_(self):
        re, im = _C128.unpack_from(self.buf, self.pos)
        self.pos += 16
        return complex(re, im)

    def float_(self):
        value = _F64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return value

    def decimal_(self):
        return decimal.Decimal(self.str_())

    def temporal(self):
        day = _I32.unpack_from(self.buf, self.pos)[0]
        clock = _I64.unpack_from(self.buf, self.pos + 4)[0]
        self.pos += 12
        date = datetime.date(day // 10000, (day // 100) % 100, day % 100) if day >= 0 else None
        time = (
            datetime.time(
                (clock // 10_000_000_000) % 100, (clock // 100_000_000) % 100, (clock // 1_000_000) % 100,
                clock % 1_000_000,
            )
            if clock >= 0
            else None
        )
        if date is not None and time is not None:
            return datetime.datetime.combine(date, time)
        return date if date is not None else time

    def uuid_(self):
        return uuid.UUID(bytes=bytes(self.take(16)))


_READERS = {
    ord("A"): _Reader.array,
    ord("P"): _Reader.sparse,
    ord("S"): _Reader.struct,
    ord("C"): _Reader.cell,
    ord("F"): _Reader.records,
    0xFF: _Reader.none,
    0x01: _Reader.tuple_,
    0x02: _Reader.list_,
    0x03: _Reader.set_,
    0x04: _Reader.dict_,
    0x05: _Reader.str_,
    0x06: _Reader.bytes_,
    0x0A: _Reader.int_,
    0x0B: _Reader.bool_,
    0x0C: _Reader.complex_,
    0x0D: _Reader.float_,
    ord("d"): _Reader.decimal_,
    ord("t"): _Reader.temporal,
    ord("u"): _Reader.uuid_,
}


def _inflate(buf: bytes) -> bytes:
    """The bytes of a ``ZL123`` blob, inflated to at most their declared size."""
    start = len(ZL123) + 8
    if len(buf) < start:
        raise BlobError("Invalid blob: it ends inside its compression header (truncated or corrupted).")
    size = _U64.unpack_from(buf, len(ZL123))[0]
    if size <= len(MYM):  # max_length=0 would mean "no limit"; no blob is that short anyway
        raise BlobError(f"Invalid blob: its compression header declares {size} bytes, too few for any blob.")
    if size > _ZLIB_MAX_RATIO * (len(buf) - start) + 1024:
        raise BlobError(
            f"Invalid blob: its compression header declares {size} bytes, more than its {len(buf) - start} "
            "compressed bytes can hold (zlib expands at most about 1032-fold): corrupted or crafted."
        )
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(memoryview(buf)[start:], size)
        if not inflater.eof and inflater.unconsumed_tail:
            # at the declared size: only the stream's end marker and checksum may be left
            if inflater.decompress(inflater.unconsumed_tail, 1):
                raise BlobError(
                    f"Invalid blob: its compressed data inflates to more than the {size} bytes its header "
                    "declares (corrupted or crafted); it was not inflated further."
                )
    except zlib.error as exc:
        raise BlobError(f"Invalid blob: its compressed data cannot be decompressed ({exc}).") from None
    if not inflater.eof:
        raise BlobError("Invalid blob: its compressed data ends early (incomplete or truncated stream).")
    if len(data) != size:
        raise BlobError(f"Invalid blob: size mismatch after decompression (expected {size}, got {len(data)}).")
    return data


# what decoding raises on bytes that do not follow the format (an unhashable set member or dict
# key, an impossible date, bad UTF-8, a reshape that does not fit, ...): all become BlobError
_DECODE_ERRORS = (struct.error, ValueError, LookupError, TypeError, AttributeError, ArithmeticError, RecursionError)


def unpack(blob, squeeze: bool = False) -> Any:
    """Deserialize a blob written by :func:`pack`, ``datajoint.blob.pack`` or MATLAB's mYm.

    Raises :class:`~joinflow.errors.BlobError` for bytes that are not a valid blob, without
    allocating more than the bytes could hold (see the module's notes on bounds)."""
    if blob is None:
        return None
    buf = blob if isinstance(blob, bytes) else bytes(blob)
    if buf.startswith(ZL123):
        buf = _inflate(buf)
    if not (buf.startswith(MYM) or buf.startswith(DJ0)):
        raise BlobError(
            "Invalid blob: it does not start with the mYm or dj0 header, so it was not written by a DataJoint "
            "blob serializer."
        )
    reader = _Reader(buf, squeeze)
    reader.pos = len(MYM)
    try:
        value = reader.read()
    except RecursionError:
        raise BlobError(
            "Invalid blob: nested too deeply for the stack left to decode it (corrupted, crafted, or "
            "decoded from deep inside other calls)."
        ) from None
    except _DECODE_ERRORS as exc:
        raise BlobError(f"Invalid blob: truncated or corrupted ({type(exc).__name__}: {exc}).") from None
    if reader.pos != len(buf):
        raise BlobError("Invalid blob: trailing bytes after the serialized value (blob length check failed).")
    return value


deserialize = unpack

__all__ = ["pack", "unpack", "serialize", "deserialize", "MatCell", "MatStruct"]
