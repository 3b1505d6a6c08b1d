"""Stateless retry tokens and the retry packet's integrity tag.

A token proves the client received a RETRY at its address: ``ts || odcid || mac`` where
``mac = BLAKE2b-128(key=secret, ts || odcid || retry_scid || address)``. The server keeps no
state between sending the RETRY and receiving the token; expiry uses the server's own clock.
"""

from __future__ import annotations

import hashlib
import hmac

from intentus_trio.mxp.packet import CID_LEN, RETRY_TAG_LEN

Address = tuple[str, int]

_TS_LEN = 8
_MAC_LEN = 16
TOKEN_LEN = _TS_LEN + CID_LEN + _MAC_LEN


def address_bytes(addr: Address) -> bytes:
    host, port = addr[0], addr[1]
    return f"{host}|{port}".encode()


class RetryTokens:
    def __init__(self, secret: bytes, lifetime: float) -> None:
        if len(secret) < 16:
            raise ValueError("token secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, body: bytes, retry_scid: bytes, addr: Address) -> bytes:
        return hashlib.blake2b(
            body + retry_scid + address_bytes(addr), key=self._secret, digest_size=_MAC_LEN
        ).digest()

    def issue(self, addr: Address, odcid: bytes, retry_scid: bytes, now: float) -> bytes:
        body = max(0, round(now * 1000)).to_bytes(_TS_LEN, "big") + odcid
        return body + self._mac(body, retry_scid, addr)

    def validate(self, token: bytes, addr: Address, dcid: bytes, now: float) -> bytes | str:
        """The original destination connection id, or a drop reason."""
        if len(token) != TOKEN_LEN:
            return "invalid_token"
        body, mac = token[:-_MAC_LEN], token[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(body, dcid, addr)):
            return "invalid_token"
        issued = int.from_bytes(body[:_TS_LEN], "big") / 1000
        if not issued - 1.0 <= now <= issued + self.lifetime:
            return "expired_token"
        return body[_TS_LEN:]


def retry_integrity_tag(server_static_public: bytes, odcid: bytes, packet: bytes) -> bytes:
    """Binds a RETRY to the client's original DCID and the server's static key, so only
    someone who saw the INITIAL (and knows whom the client is calling) can forge one."""
    key = hashlib.blake2b(b"mxp retry" + server_static_public, digest_size=32).digest()
    return hashlib.blake2b(odcid + packet, key=key, digest_size=RETRY_TAG_LEN).digest()
