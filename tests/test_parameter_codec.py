"""Wire codec and signatures of the parameter server (no network, no Spark)."""

from __future__ import annotations

import json
import pathlib
import re
import struct
import zlib

import numpy as np
import pytest

from elephas.parameter import codec
from elephas.parameter.auth import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    AuthenticationError,
    Signer,
    Verifier,
    new_secret,
)


def _arrays():
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((3, 4)).astype(np.float32),
        np.arange(5, dtype=np.int64),
        np.zeros((0, 2), np.float32),
        np.array(2.5, np.float64),
    ]


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_round_trip_is_exact(compression):
    arrays = _arrays()
    decoded = codec.decode(codec.encode(arrays, codec.KIND_UPDATE, compression, {"a": 1}))
    assert decoded.kind == codec.KIND_UPDATE and decoded.meta == {"a": 1}
    assert decoded.compression == compression
    for got, want in zip(decoded.arrays, arrays):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_fp16_halves_float_bytes_and_restores_dtype():
    arrays = [np.array([0.5, -2.0, 1024.0], np.float32), np.array([1, 2], np.int32)]
    raw = codec.encode(arrays, codec.KIND_PARAMETERS, "none")
    half = codec.encode(arrays, codec.KIND_PARAMETERS, "fp16")
    assert len(raw) - len(half) == 6  # 3 floats shrink by 2 bytes each, same header size
    decoded = codec.decode(half)
    assert decoded.arrays[0].dtype == np.float32 and decoded.arrays[1].dtype == np.int32
    np.testing.assert_array_equal(decoded.arrays[0], arrays[0])


def test_big_endian_input_is_sent_little_endian():
    a = np.arange(4, dtype=">f4")
    decoded = codec.decode(codec.encode([a], codec.KIND_UPDATE))
    assert decoded.arrays[0].dtype == np.dtype("<f4")
    np.testing.assert_array_equal(decoded.arrays[0], [0, 1, 2, 3])


@pytest.mark.parametrize("compression", ["none", "fp16", "zlib"])
def test_segments_join_to_the_payload_and_do_not_copy_contiguous_arrays(compression):
    arrays = [
        *_arrays(),
        np.arange(6, dtype=">f4").reshape(2, 3),
        np.ones((3, 4), np.float32)[:, ::2],
        np.array([True, False]),
    ]
    segments = codec.encode_segments(arrays, codec.KIND_UPDATE, compression, {"a": 1})
    joined = b"".join(bytes(s) for s in segments)
    assert joined == bytes(codec.encode(arrays, codec.KIND_UPDATE, compression, {"a": 1}))
    if compression == "none":
        # one header segment, then one per non-empty array; contiguous ones are the arrays' memory
        assert len(segments) == 1 + sum(1 for a in arrays if a.size)
        first = np.frombuffer(segments[1], np.float32)
        assert np.shares_memory(first, arrays[0])


@pytest.mark.parametrize("meta", [{}, {"version": 7}, {"worker_id": "x" * 61}])
def test_data_section_starts_aligned_so_decoded_views_are_aligned(meta):
    arrays = [np.ones((3, 5), np.float32), np.arange(7, dtype=np.float32)]  # one dtype, as in Keras
    payload = codec.encode(arrays, codec.KIND_PARAMETERS, "none", meta)
    header_len = codec.PREFIX.unpack_from(payload)[4]
    assert (codec.PREFIX.size + header_len) % codec.DATA_ALIGNMENT == 0
    received = np.empty(len(payload), np.uint8)  # what a client receives into
    received[:] = np.frombuffer(payload, np.uint8)
    decoded = codec.decode(received)
    assert decoded.meta == meta
    assert all(a.flags.aligned for a in decoded.arrays)
    assert all(np.shares_memory(a, received) for a in decoded.arrays)


def test_object_dtype_is_refused_on_encode():
    with pytest.raises(ValueError, match="Expected arrays of a numeric dtype"):
        codec.encode([np.array([object()])], codec.KIND_UPDATE)


def _payload_with_header(header: dict, data: bytes = b"", kind: int = codec.KIND_UPDATE, comp: int = 0) -> bytes:
    raw = json.dumps(header).encode()
    return codec.PREFIX.pack(codec.MAGIC, codec.FORMAT_VERSION, kind, comp, len(raw)) + raw + data


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "Expected at least"),
        (b"XXXX" + bytes(20), "Expected magic"),
        (struct.pack("<4sHBBI", b"ELPH", 9, 2, 0, 0), "wire format version"),
        (struct.pack("<4sHBBI", b"ELPH", 1, 7, 0, 0), "payload kind"),
        (struct.pack("<4sHBBI", b"ELPH", 1, 2, 9, 0), "compression code"),
        (struct.pack("<4sHBBI", b"ELPH", 1, 2, 0, 2**31), "header"),
        (struct.pack("<4sHBBI", b"ELPH", 1, 2, 0, 3) + b"{{{", "JSON header"),
        (_payload_with_header({"arrays": [[[2], "|O", "|O"]]}), "dtypes"),
        (_payload_with_header({"arrays": [[[-1], "<f4", "<f4"]]}), "shape of non-negative"),
        (_payload_with_header({"arrays": [[[2.5], "<f4", "<f4"]]}), "shape of non-negative"),
        (_payload_with_header({"arrays": [[[2], "<f4", "<i4"]]}), "wire dtype"),
        (_payload_with_header({"arrays": "x"}), "'arrays' list"),
        (_payload_with_header({"arrays": [], "meta": [1]}), "'meta'"),
        (_payload_with_header({"arrays": [[[2], "<f4", "<f4"]]}, bytes(7)), "Expected 8 data bytes"),
        (_payload_with_header({"arrays": [[[2], "<f4", "<f4"]]}, bytes(9)), "Expected 8 data bytes"),
        (_payload_with_header({"arrays": [[[2], "<f4", "<f4"]]}, b"notzlib", comp=2), "zlib"),
        (_payload_with_header({"arrays": [[[2], "<f4", "<f4"]]}, zlib.compress(bytes(10**6)), comp=2), "zlib stream"),
    ],
)
def test_malformed_payloads_are_refused(payload, message):
    with pytest.raises(codec.WireFormatError, match=message):
        codec.decode(payload)


def test_declared_size_over_the_cap_is_refused_before_inflating():
    payload = _payload_with_header({"arrays": [[[10**9], "<f4", "<f4"]]}, zlib.compress(b""), comp=2)
    with pytest.raises(codec.WireFormatError, match="at most 4000"):
        codec.decode(payload, max_data_bytes=4000)


def test_random_bytes_never_decode():
    rng = np.random.default_rng(1)
    for _ in range(1000):
        blob = rng.bytes(int(rng.integers(0, 200)))
        if rng.random() < 0.5:  # also start with a valid prefix to get past the magic check
            blob = codec.PREFIX.pack(codec.MAGIC, 1, 2, 0, len(blob)) + blob
        with pytest.raises(codec.WireFormatError):
            codec.decode(blob)


def test_package_never_unpickles_or_evaluates():
    root = pathlib.Path(codec.__file__).parent
    pattern = re.compile(r"\b(pickle|marshal|eval|exec|cloudpickle|dill)\b\s*[.(]")
    for path in root.glob("*.py"):
        source = path.read_text()
        assert not pattern.search(source), f"{path.name} uses {pattern.search(source).group()}"
        assert "import pickle" not in source and "allow_pickle=True" not in source


# ----- signatures ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 10, 512 * 1024, 3 * 512 * 1024 + 7])
def test_signature_is_independent_of_incremental_feeding_and_segments(size):
    secret = new_secret()
    body = np.random.default_rng(size).bytes(size)
    one = Signer(secret).tag("POST", "/update", "1.0", "n", body)
    signer = Signer(secret)
    mac = signer.body_mac("1.0", "n", size)
    for got in range(0, size, 100_003):
        mac.update(body, got)
    mac.update(body, size)
    assert signer.tag("POST", "/update", "1.0", "n", mac=mac) == one
    cuts = sorted({0, size // 3, size // 2, size})
    segments = [memoryview(body)[a:b] for a, b in zip(cuts, cuts[1:])]
    assert signer.tag("POST", "/update", "1.0", "n", segments) == one
    # a MAC fed for another nonce is not trusted: the tag is recomputed from the body
    other = signer.body_mac("1.0", "m", size)
    other.update(body, size)
    assert signer.tag("POST", "/update", "1.0", "n", body, mac=other) == one


def test_body_mac_refuses_overfeeding_and_early_tags():
    mac = Signer(new_secret()).body_mac("1.0", "n", 4)
    mac.feed(b"ab")
    with pytest.raises(ValueError, match="hashed"):
        mac.finalize()
    with pytest.raises(ValueError, match="at most 4"):
        mac.feed(b"cde")
    mac.feed(b"cd")
    assert len(mac.finalize()) == 16 and mac.finalize() == mac.finalize()
    with pytest.raises(ValueError):
        mac.feed(b"")  # nothing more after the tag


def test_signature_matches_the_documented_construction():
    import hmac

    from cryptography.hazmat.primitives.poly1305 import Poly1305

    secret = new_secret()
    body = b"some update bytes"
    key = hmac.digest(secret, f"elephas-body-key-v2\n1.5\nabc\n{len(body)}\n".encode(), "sha256")
    body_tag = Poly1305.generate_tag(key, body)
    context = f"elephas-mac-v2\nPOST\n/update\n1.5\nabc\n{len(body)}\n".encode()
    want = hmac.digest(secret, context + body_tag, "sha256").hex()
    assert Signer(secret).tag("POST", "/update", "1.5", "abc", body) == want
    assert Signer(secret.hex()).tag("POST", "/update", "1.5", "abc", body) == want


def test_signature_binds_method_path_timestamp_nonce_and_body():
    signer = Signer(new_secret())
    base = signer.tag("POST", "/update", "1.0", "n", b"body")
    assert (
        len(
            {
                base,
                signer.tag("GET", "/update", "1.0", "n", b"body"),
                signer.tag("POST", "/stats", "1.0", "n", b"body"),
                signer.tag("POST", "/update", "2.0", "n", b"body"),
                signer.tag("POST", "/update", "1.0", "m", b"body"),
                signer.tag("POST", "/update", "1.0", "n", b"bodx"),
            }
        )
        == 6
    )
    assert Signer(new_secret()).tag("POST", "/update", "1.0", "n", b"body") != base


def test_verifier_refuses_missing_wrong_expired_and_flags_replays():
    signer = Signer(new_secret())
    verifier = Verifier(signer, window_s=60)
    with pytest.raises(AuthenticationError) as missing:
        verifier.verify("GET", "/stats", {}, b"")
    assert missing.value.status == 401
    headers = signer.sign("POST", "/update", b"abc")
    with pytest.raises(AuthenticationError) as wrong:
        verifier.verify("POST", "/update", headers, b"abd")
    assert wrong.value.status == 403
    entry, fresh = verifier.verify("POST", "/update", headers, b"abc")
    again, fresh_again = verifier.verify("POST", "/update", headers, b"abc")
    assert fresh and not fresh_again and again is entry
    old = {HEADER_TIMESTAMP: "1000.0", HEADER_NONCE: "x"}
    old[HEADER_SIGNATURE] = signer.tag("GET", "/stats", "1000.0", "x", b"")
    with pytest.raises(AuthenticationError, match="timestamp within"):
        verifier.verify("GET", "/stats", old, b"")


def test_forgotten_nonces_cannot_be_replayed():
    signer = Signer(new_secret())
    verifier = Verifier(signer, window_s=60, max_nonces=2)
    first = signer.sign("GET", "/stats")
    verifier.verify("GET", "/stats", first)
    for _ in range(3):
        verifier.verify("GET", "/stats", signer.sign("GET", "/stats"))
    with pytest.raises(AuthenticationError, match="timestamp"):
        verifier.verify("GET", "/stats", first)
