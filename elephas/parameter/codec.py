"""Wire format for weights and updates: a small typed header followed by raw array buffers.

A payload is::

    prefix   struct "<4sHBBI": magic b"ELPH", format version, kind, compression, header length
    header   UTF-8 JSON: {"arrays": [[shape, dtype, wire_dtype], ...], "meta": {...}}, padded
             with spaces so that the data starts at a multiple of 64 bytes (arrays decoded in
             place are then aligned when they share one dtype, as a Keras model's weights
             usually do; numpy's loops run up to twice as fast on aligned arrays)
    data     the arrays' bytes, little-endian, C order, back to back (zlib: one compressed stream)

Decoding validates every field and raises :class:`WireFormatError` on anything malformed.
Nothing is unpickled or evaluated: the header is parsed with :func:`json.loads`, dtypes come
from a fixed allow-list and arrays are views made with :func:`numpy.frombuffer`.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"ELPH"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<4sHBBI")
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_ARRAYS = 100_000
MAX_NDIM = 32
MAX_DATA_BYTES = 1 << 44
"""Largest data section :func:`decode` accepts at all (a bound for callers that give none)."""
DATA_ALIGNMENT = 64

KIND_PARAMETERS = 1
KIND_UPDATE = 2
KINDS = {KIND_PARAMETERS: "parameters", KIND_UPDATE: "update"}

COMPRESSIONS = ("none", "fp16", "zlib")
_COMPRESSION_CODES = {name: code for code, name in enumerate(COMPRESSIONS)}

ALLOWED_DTYPES = frozenset(
    {
        "<f2",
        "<f4",
        "<f8",
        "|i1",
        "|u1",
        "<i2",
        "<u2",
        "<i4",
        "<u4",
        "<i8",
        "<u8",
        "|b1",
    }
)
_FLOAT_CASTS = frozenset({"<f4", "<f8"})


class WireFormatError(ValueError):
    """A payload that does not follow the wire format (bad magic, header, sizes or dtypes)."""


@dataclass
class Decoded:
    """A decoded payload.

    Attributes:
        kind: ``KIND_PARAMETERS`` or ``KIND_UPDATE``.
        compression: The compression the sender used.
        arrays: The arrays, in the model's dtypes (views into the received buffer when possible).
        meta: The JSON metadata the sender attached.
    """

    kind: int
    compression: str
    arrays: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def check_compression(compression: str) -> str:
    """Validate a compression name.

    Args:
        compression: ``'none'``, ``'fp16'`` or ``'zlib'``.

    Returns:
        The name, unchanged.

    Raises:
        ValueError: For an unknown name.
    """
    if compression not in _COMPRESSION_CODES:
        raise ValueError(f"Could not interpret compression: {compression!r}. Expected one of {list(COMPRESSIONS)}.")
    return compression


def wire_dtype(dtype: np.dtype) -> str:
    """The little-endian dtype string used on the wire for ``dtype``.

    Raises:
        ValueError: For dtypes outside the allow-list (object, strings, complex, ...).
    """
    dt = np.dtype(dtype)
    name = dt.str if dt.byteorder == "|" else dt.newbyteorder("<").str
    if name not in ALLOWED_DTYPES:
        raise ValueError(f"Expected arrays of a numeric dtype in {sorted(ALLOWED_DTYPES)}, received dtype={dtype}.")
    return name


def _header(entries: list, meta: dict[str, Any] | None) -> bytes:
    """The JSON header, padded with spaces so the data section starts aligned."""
    header = json.dumps({"arrays": entries, "meta": meta or {}}, separators=(",", ":"), allow_nan=False).encode()
    return header + b" " * (-(PREFIX.size + len(header)) % DATA_ALIGNMENT)


def encode(
    arrays: Sequence[np.ndarray],
    kind: int,
    compression: str = "none",
    meta: dict[str, Any] | None = None,
    allocate: Callable[[int], Any] | None = None,
) -> bytearray | np.ndarray:
    """Encode arrays into one contiguous payload.

    The arrays are copied exactly once, straight into the payload buffer (this copy is the
    snapshot the server serves, so it is also what makes a pull consistent).

    Args:
        arrays: The arrays to send.
        kind: ``KIND_PARAMETERS`` or ``KIND_UPDATE``.
        compression: ``'none'``, ``'fp16'`` (float32/float64 arrays travel as float16) or
            ``'zlib'`` (the data section is deflated).
        meta: JSON-serialisable metadata (worker id, version, ...).
        allocate: ``allocate(nbytes)`` returns the writable buffer the payload is written into
            (e.g. :meth:`elephas.parameter.buffers.BufferPool.get`; not used for ``'zlib'``);
            default: a new ``bytearray``.

    Returns:
        The payload (what ``allocate`` returned, when given).
    """
    check_compression(compression)
    zlib_out = compression == "zlib"
    out, head, views = _layout(arrays, kind, compression, meta, None if zlib_out else allocate)
    for view, a in zip(views, arrays):
        np.copyto(view, a, casting="unsafe")
    if zlib_out:
        out = out[:head] + zlib.compress(memoryview(out)[head:], 1)
    return out


def encode_views(
    like: Sequence[np.ndarray],
    kind: int,
    meta: dict[str, Any] | None = None,
    allocate: Callable[[int], Any] | None = None,
) -> tuple[Any, list[np.ndarray]]:
    """An uncompressed payload for arrays shaped and typed like ``like``, with its data section
    left to be written through the returned views.

    Used by the parameter server to compute a new version of the center straight into the
    payload that pulls of that version send, instead of encoding a copy of it per version.

    Args:
        like: Arrays whose shapes and dtypes the payload declares (their values are not read).
        kind: ``KIND_PARAMETERS`` or ``KIND_UPDATE``.
        meta: JSON-serialisable metadata.
        allocate: ``allocate(nbytes)`` returns the writable buffer (default: a new ``bytearray``).

    Returns:
        ``(payload, views)``: the payload (header written, data undefined) and one writable
        array per entry of ``like``, in the payload's data section.
    """
    out, _, views = _layout(like, kind, "none", meta, allocate)
    return out, views


def _layout(
    like: Sequence[np.ndarray],
    kind: int,
    compression: str,
    meta: dict[str, Any] | None,
    allocate: Callable[[int], Any] | None,
) -> tuple[Any, int, list[np.ndarray]]:
    """Allocate a payload for arrays like ``like``, write its prefix and header, and return
    ``(payload, header end, writable views of the data section in the wire dtypes)``; for
    ``'zlib'`` the data section is laid out uncompressed (the caller deflates it)."""
    entries, sizes = [], []
    for a in like:
        dtype = wire_dtype(a.dtype)
        wire = "<f2" if compression == "fp16" and dtype in _FLOAT_CASTS else dtype
        entries.append([list(a.shape), dtype, wire])
        sizes.append(int(a.size) * np.dtype(wire).itemsize)
    header = _header(entries, meta)
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, kind, _COMPRESSION_CODES[compression], len(header))
    head = len(prefix) + len(header)
    out = bytearray(head + sum(sizes)) if allocate is None else allocate(head + sum(sizes))
    view = memoryview(out).cast("B")
    view[: len(prefix)] = prefix
    view[len(prefix) : head] = header
    arrays, offset = [], head
    for a, (_, _, wire), size in zip(like, entries, sizes):
        arrays.append(np.frombuffer(view, dtype=wire, count=int(a.size), offset=offset).reshape(a.shape))
        offset += size
    return out, head, arrays


def encode_segments(
    arrays: Sequence[np.ndarray], kind: int, compression: str = "none", meta: dict[str, Any] | None = None
) -> list[bytes | bytearray | memoryview]:
    """Encode arrays as buffers to send back to back, without copying the array data.

    Equivalent to :func:`encode` (joining the segments gives the same payload), but for
    ``compression='none'`` the data segments are views of the arrays themselves (C-contiguous
    little-endian arrays are not copied; others are converted once). The arrays must not change
    until the segments are sent. Compressed payloads come back as one segment.

    Args:
        arrays: The arrays to send.
        kind: ``KIND_PARAMETERS`` or ``KIND_UPDATE``.
        compression: ``'none'``, ``'fp16'`` or ``'zlib'``.
        meta: JSON-serialisable metadata.

    Returns:
        The segments: prefix and header first, then one buffer per non-empty array.
    """
    if check_compression(compression) != "none":
        return [encode(arrays, kind, compression, meta)]
    entries = []
    data: list[memoryview] = []
    for a in arrays:
        dtype = wire_dtype(a.dtype)
        entries.append([list(a.shape), dtype, dtype])
        if a.size:
            flat = np.ascontiguousarray(a, dtype=dtype).reshape(-1)
            data.append(memoryview(flat.view(np.uint8)))
    header = _header(entries, meta)
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, kind, _COMPRESSION_CODES["none"], len(header))
    return [prefix + header, *data]


def _parse_header(raw: memoryview) -> tuple[list[tuple[tuple[int, ...], str, str]], dict]:
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireFormatError(
            f"Expected a UTF-8 JSON header, received undecodable bytes ({type(exc).__name__})."
        ) from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise WireFormatError("Expected a header object with an 'arrays' list.")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise WireFormatError(f"Expected 'meta' to be an object, received {type(meta).__name__}.")
    if len(header["arrays"]) > MAX_ARRAYS:
        raise WireFormatError(f"Expected at most {MAX_ARRAYS} arrays, received {len(header['arrays'])}.")
    specs = []
    for i, entry in enumerate(header["arrays"]):
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], list)
            and isinstance(entry[1], str)
            and isinstance(entry[2], str)
        ):
            raise WireFormatError(f"Expected array entry {i} as [shape, dtype, wire_dtype], received {entry!r:.200}.")
        shape, dtype, wire = entry
        if len(shape) > MAX_NDIM or not all(type(d) is int and 0 <= d < 2**40 for d in shape):
            raise WireFormatError(f"Expected array {i} to have a shape of non-negative ints, received {shape!r:.200}.")
        if dtype not in ALLOWED_DTYPES or wire not in ALLOWED_DTYPES:
            raise WireFormatError(
                f"Expected array {i} dtypes in {sorted(ALLOWED_DTYPES)}, "
                f"received dtype={dtype!r:.40}, wire_dtype={wire!r:.40}."
            )
        if wire != dtype and not (wire == "<f2" and dtype in _FLOAT_CASTS):
            raise WireFormatError(f"Expected array {i} wire dtype {dtype!r} (or '<f2' for fp16), received {wire!r}.")
        specs.append((tuple(shape), dtype, wire))
    return specs, meta


def decode(payload: bytes | bytearray | memoryview, *, max_data_bytes: int | None = None) -> Decoded:
    """Decode a payload made by :func:`encode`.

    Args:
        payload: The received bytes. Arrays of uncompressed payloads are views into it, so keep
            it alive (and unmodified) while they are used.
        max_data_bytes: Upper bound on the decoded data section (bounds zlib inflation);
            at most :data:`MAX_DATA_BYTES` in any case.

    Returns:
        The decoded payload.

    Raises:
        WireFormatError: If anything is malformed.
    """
    view = memoryview(payload).cast("B")
    if len(view) < PREFIX.size:
        raise WireFormatError(f"Expected at least {PREFIX.size} bytes, received {len(view)}.")
    magic, version, kind, comp_code, header_len = PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise WireFormatError(f"Expected magic {MAGIC!r}, received {bytes(magic)!r}.")
    if version != FORMAT_VERSION:
        raise WireFormatError(f"Expected wire format version {FORMAT_VERSION}, received {version}.")
    if kind not in KINDS:
        raise WireFormatError(f"Expected payload kind in {sorted(KINDS)}, received {kind}.")
    if comp_code >= len(COMPRESSIONS):
        raise WireFormatError(f"Expected compression code < {len(COMPRESSIONS)}, received {comp_code}.")
    compression = COMPRESSIONS[comp_code]
    head = PREFIX.size + header_len
    if header_len > MAX_HEADER_BYTES or head > len(view):
        raise WireFormatError(
            f"Expected a header of at most {min(MAX_HEADER_BYTES, len(view))} "
            f"bytes, received a header length of {header_len}."
        )
    specs, meta = _parse_header(view[PREFIX.size : head])
    # Python integers: a product of declared dimensions must not wrap around as int64 would
    sizes = [math.prod(shape) * np.dtype(wire).itemsize for shape, _, wire in specs]
    expected = sum(sizes)
    bound = MAX_DATA_BYTES if max_data_bytes is None else min(max_data_bytes, MAX_DATA_BYTES)
    if expected > bound:
        raise WireFormatError(f"Expected at most {bound} data bytes, the header declares {expected}.")
    data = view[head:]
    if compression == "zlib":
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(data, expected + 1)
        except zlib.error as exc:
            raise WireFormatError(f"Expected a zlib stream, received corrupt data ({exc}).") from None
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise WireFormatError(
                "Expected one complete zlib stream of the declared size, "
                "received a truncated, oversized or padded stream."
            )
        data = memoryview(raw)
    if len(data) != expected:
        raise WireFormatError(f"Expected {expected} data bytes for the declared arrays, received {len(data)}.")
    arrays = []
    offset = 0
    for (shape, dtype, wire), size in zip(specs, sizes):
        count = size // np.dtype(wire).itemsize
        a = np.frombuffer(data, dtype=wire, count=count, offset=offset).reshape(shape)
        if wire != dtype:
            a = a.astype(dtype)
        arrays.append(a)
        offset += size
    return Decoded(kind=kind, compression=compression, arrays=arrays, meta=meta)
