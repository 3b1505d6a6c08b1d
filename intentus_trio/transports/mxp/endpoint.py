"""``mxp://host:port?key=<server public key>`` URLs.

The key is the server's static X25519 public key, which the client must know before the
handshake (Noise IK): a URL that carries it is enough to reach and authenticate a server.
It is written URL-safe base64 without padding; hex and standard base64 are accepted too.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlsplit

from attrs import frozen

from ...keys import KeyFileError, decode_key

#: The port a URL without one names (no registered port exists; this one is ours).
DEFAULT_PORT = 4433


def format_key(public: bytes) -> str:
    """The URL form of a public key: URL-safe base64 without padding (43 characters)."""
    return base64.urlsafe_b64encode(public).decode("ascii").rstrip("=")


@frozen
class MxpEndpoint:
    host: str
    port: int
    #: The server's static public key, if the URL names one.
    key: bytes | None = None

    @classmethod
    def parse(cls, url: str) -> MxpEndpoint:
        parts = urlsplit(url)
        if parts.scheme.lower() != "mxp":
            raise ValueError(f"not an MXP URL (mxp://host:port?key=...): {url!r}")
        if not parts.hostname:
            raise ValueError(f"MXP URL without a host: {url!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"an MXP URL has no path: {url!r}")
        try:
            port = parts.port if parts.port is not None else DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"bad port in MXP URL {url!r}: {exc}") from None
        key: bytes | None = None
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name != "key":
                raise ValueError(f"unknown MXP URL parameter {name!r} (only 'key' is known)")
            try:
                key = decode_key(value.replace(" ", "+"))  # an unescaped "+" reads as " "
            except KeyFileError:
                raise ValueError("the MXP URL's key is not a 32-byte key in base64 or hex"
                                 ) from None
        return cls(parts.hostname, port, key)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def with_port(self, port: int) -> MxpEndpoint:
        return MxpEndpoint(self.host, port, self.key)

    def with_key(self, key: bytes | None) -> MxpEndpoint:
        return MxpEndpoint(self.host, self.port, key)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?key={format_key(self.key)}" if self.key is not None else ""
        return f"mxp://{host}:{self.port}{query}"
