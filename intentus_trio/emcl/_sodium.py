"""XChaCha20-Poly1305 straight through libsodium (PyNaCl's cffi module), for the hot path.

``nacl.bindings`` adds several microseconds of argument checking per call; these two
functions check lengths themselves (libsodium reads fixed-size keys and nonces from raw
pointers) and call the C functions directly. Tests cross-check them against nacl.bindings.
"""

from __future__ import annotations

from typing import Final

from nacl._sodium import ffi, lib

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
TAG_BYTES: Final = 16

_encrypt = lib.crypto_aead_xchacha20poly1305_ietf_encrypt
_decrypt = lib.crypto_aead_xchacha20poly1305_ietf_decrypt
_new = ffi.new
_buffer = ffi.buffer
_NULL = ffi.NULL

assert lib.crypto_aead_xchacha20poly1305_ietf_keybytes() == KEY_BYTES
assert lib.crypto_aead_xchacha20poly1305_ietf_npubbytes() == NONCE_BYTES
assert lib.crypto_aead_xchacha20poly1305_ietf_abytes() == TAG_BYTES


def aead_encrypt(plaintext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """Ciphertext followed by the 16-byte tag."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    size = len(plaintext) + TAG_BYTES
    out = _new("unsigned char[]", size)
    _encrypt(out, _NULL, plaintext, len(plaintext), aad, len(aad), _NULL, nonce, key)
    data: bytes = _buffer(out, size)[:]
    return data


def aead_decrypt(ciphertext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not verify (nothing is released then)."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    size = len(ciphertext) - TAG_BYTES
    if size < 0:
        return None
    out = _new("unsigned char[]", max(size, 1))
    if _decrypt(out, _NULL, _NULL, ciphertext, len(ciphertext), aad, len(aad), nonce, key):
        return None
    data: bytes = _buffer(out, size)[:]
    return data
