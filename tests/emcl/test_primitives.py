"""The hot-path libsodium calls, HKDF, and the strict field encodings."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator

import nacl.bindings as b
import pybase64
import pybase64._fallback
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentus_trio.emcl import _sodium, encoding
from intentus_trio.emcl.encoding import (
    b64d,
    b64e,
    format_timestamp,
    parse_timestamp,
)
from intentus_trio.emcl.kdf import hkdf_expand, hkdf_extract, hkdf_sha256


@given(st.binary(max_size=4096), st.binary(max_size=300))
def test_raw_aead_matches_nacl_bindings(plaintext: bytes, aad: bytes) -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    sealed = _sodium.aead_encrypt(plaintext, aad, nonce, key)
    assert sealed == b.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    assert _sodium.aead_decrypt(sealed, aad, nonce, key) == plaintext
    assert b.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, nonce, key) == plaintext


def test_raw_aead_refuses_any_change() -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    sealed = _sodium.aead_encrypt(b"secret body", b"aad", nonce, key)
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 1
        assert _sodium.aead_decrypt(bytes(bad), b"aad", nonce, key) is None
    assert _sodium.aead_decrypt(sealed, b"aae", nonce, key) is None
    assert _sodium.aead_decrypt(sealed[:15], b"aad", nonce, key) is None
    assert _sodium.aead_decrypt(sealed, b"aad", nonce, os.urandom(32)) is None


def test_raw_aead_checks_sizes() -> None:
    with pytest.raises(ValueError):
        _sodium.aead_encrypt(b"x", b"", bytes(24), bytes(31))
    with pytest.raises(ValueError):
        _sodium.aead_decrypt(bytes(32), b"", bytes(23), bytes(32))


# RFC 5869 appendix A, test cases 1 to 3.
@pytest.mark.parametrize(
    ("ikm", "salt", "info", "length", "prk", "okm"),
    [
        ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
         "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
         "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
        ("".join(f"{i:02x}" for i in range(0x00, 0x50)),
         "".join(f"{i:02x}" for i in range(0x60, 0xB0)),
         "".join(f"{i:02x}" for i in range(0xB0, 0x100)), 82,
         "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
         "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41"
         "c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"),
        ("0b" * 22, "", "", 42,
         "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
         "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
    ],
)
def test_hkdf_rfc5869(ikm: str, salt: str, info: str, length: int, prk: str, okm: str) -> None:
    assert hkdf_extract(bytes.fromhex(salt), bytes.fromhex(ikm)).hex() == prk
    assert hkdf_expand(bytes.fromhex(prk), bytes.fromhex(info), length).hex() == okm
    assert hkdf_sha256(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info),
                       length).hex() == okm


def test_hkdf_matches_cryptography() -> None:
    hkdf = pytest.importorskip("cryptography.hazmat.primitives.kdf.hkdf")
    hashes = pytest.importorskip("cryptography.hazmat.primitives.hashes")
    for length in (1, 32, 64, 100):
        ikm, salt, info = os.urandom(32), os.urandom(16), os.urandom(20)
        ref = hkdf.HKDF(hashes.SHA256(), length, salt, info).derive(ikm)
        assert hkdf_sha256(ikm, salt, info, length) == ref
    with pytest.raises(ValueError):
        hkdf_expand(bytes(32), b"", 255 * 32 + 1)


# Every canonical spelling, and nothing else (docs/emcl-spec.md §3).
_CANONICAL = re.compile(r"(?:[A-Za-z0-9+/]{4})*"
                        r"(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?")


@pytest.fixture(params=["c", "fallback"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """b64d over pybase64's C extension and over its pure-Python fallback."""
    if request.param == "fallback":
        monkeypatch.setattr(encoding, "_decode", pybase64._fallback.b64decode)
    elif pybase64.b64decode is pybase64._fallback.b64decode:
        pytest.skip("pybase64's C extension is not installed")
    yield request.param


@given(st.binary(max_size=200))
def test_b64_round_trip_and_matches_stdlib(data: bytes) -> None:
    text = b64e(data)
    assert text == base64.b64encode(data).decode()
    assert b64d(text) == data
    assert b64d(b64e(bytearray(data))) == data


@pytest.mark.parametrize("text", [
    "A",            # impossible length
    "AA",           # padding missing
    "AAA",
    "AAAAA",
    "AB==",         # non-zero unused bits (canonical is "AA==")
    "AAB=",         # non-zero unused bits (canonical is "AAA=")
    "AP8/AB==",
    "AA=",          # short padding
    "AA=A",         # padding inside
    "AA==AA==",     # data after padding
    "AA==A",
    "AAA=A",
    "AA===",        # excess padding
    "AAA==",
    "AAAA=",
    "AAAA==",
    "AAAA====",
    "A===",
    "====",
    "=AAA",
    "AA-A",         # base64url alphabet
    "AA_A",
    "AA A",         # space
    "AA\nA",
    "AAAA\n",
    "\nAAAA",
    "AA==\n",
    "AA\r\n==",
    "AA\t==",
    "AA!A",
    "AA.A",
    "AAé=",         # not ASCII
    "AAA\u0100",
    "AAAA\x00",
    "AA\x00A",
    "AA\x7fA",
    "\uff21AAA",   # a fullwidth letter
])
def test_b64_rejects_other_spellings(decoder: str, text: str) -> None:
    assert b64d(text) is None


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="AQgwBw/+=-_ \n\x00é", max_size=13))
def test_b64_accepts_exactly_the_canonical_spellings(decoder: str, text: str) -> None:
    data = b64d(text)
    if _CANONICAL.fullmatch(text) is None:
        assert data is None
    else:
        assert data == binascii.a2b_base64(text, strict_mode=True)
        assert b64e(data) == text


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64))
def test_b64_decodes_every_canonical_spelling(decoder: str, data: bytes) -> None:
    assert b64d(b64e(data)) == data


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=12))
def test_b64_decode_never_raises(decoder: str, text: str) -> None:
    data = b64d(text)
    if data is not None:
        assert b64e(data) == text


def test_timestamps() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(1_767_225_600.1239) == "2026-01-01T00:00:00.123Z"
    assert parse_timestamp("2026-01-01T00:00:00.123Z") == pytest.approx(1_767_225_600.123)
    for bad in ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123+00:00",
                "2026-13-01T00:00:00.123Z", "2026-02-30T00:00:00.123Z",
                "2026-01-01 00:00:00.123Z", "\uff12026-01-01T00:00:00.123Z", ""]:
        assert parse_timestamp(bad) is None
    with pytest.raises(ValueError):
        format_timestamp(-1)
