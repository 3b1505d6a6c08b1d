"""XChaCha20-Poly1305 straight through libsodium (PyNaCl's cffi module), for the hot path.

``nacl.bindings`` adds several microseconds of argument checking and allocation per call.
Here each direction is one C call writing into a reusable output buffer (``Scratch``);
callers read the result through a cffi buffer view, so nothing is copied that need not be.
Key and nonce lengths are checked by the callers that take them from outside (libsodium
reads fixed sizes from raw pointers). Tests cross-check against nacl.bindings.
"""

from __future__ import annotations

from typing import Any, Final

from nacl._sodium import ffi, lib

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
TAG_BYTES: Final = 16

encrypt_into = lib.crypto_aead_xchacha20poly1305_ietf_encrypt
decrypt_into = lib.crypto_aead_xchacha20poly1305_ietf_decrypt
view = ffi.buffer
NULL: Final = ffi.NULL
_new = ffi.new

assert lib.crypto_aead_xchacha20poly1305_ietf_keybytes() == KEY_BYTES
assert lib.crypto_aead_xchacha20poly1305_ietf_npubbytes() == NONCE_BYTES
assert lib.crypto_aead_xchacha20poly1305_ietf_abytes() == TAG_BYTES


class Scratch:
    """A growable C output buffer, reused call after call by one (single-threaded) owner.

    ``buf`` is the C array (valid until the next ``get``); ``whole`` and ``memory`` are a
    cffi buffer and a memoryview over all of it, made once: slicing ``whole`` copies bytes
    out, slicing ``memory`` copies nothing.
    """

    __slots__ = ("buf", "memory", "size", "whole")

    def __init__(self, size: int = 4096) -> None:
        self.size = 0
        self.buf: Any = None
        self.whole: Any = None
        self.memory = memoryview(b"")
        self.get(size)

    def get(self, size: int) -> Any:
        """A buffer of at least ``size`` bytes (valid until the next call)."""
        if size > self.size:
            self.size = max(size, 2 * self.size)
            self.buf = _new("unsigned char[]", self.size)
            self.whole = view(self.buf)
            self.memory = memoryview(self.whole)
        return self.buf


def _check(nonce: bytes, key: bytes) -> None:
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")


def aead_encrypt(plaintext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """Ciphertext followed by the 16-byte tag."""
    _check(nonce, key)
    size = len(plaintext) + TAG_BYTES
    out = _new("unsigned char[]", size)
    encrypt_into(out, NULL, plaintext, len(plaintext), aad, len(aad), NULL, nonce, key)
    data: bytes = view(out, size)[:]
    return data


def aead_decrypt(ciphertext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not verify (nothing is released then)."""
    _check(nonce, key)
    size = len(ciphertext) - TAG_BYTES
    if size < 0:
        return None
    out = _new("unsigned char[]", max(size, 1))
    if decrypt_into(out, NULL, NULL, ciphertext, len(ciphertext), aad, len(aad), nonce, key):
        return None
    data: bytes = view(out, size)[:]
    return data
