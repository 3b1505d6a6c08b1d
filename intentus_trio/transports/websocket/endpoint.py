"""``ws://`` and ``wss://`` URLs as (host, port, resource, secure)."""

from __future__ import annotations

from urllib.parse import urlsplit

from attrs import frozen


@frozen
class Endpoint:
    host: str
    port: int
    #: The request target: the path (``/`` when empty) plus any query.
    resource: str
    secure: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss"):
            raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
        if not parts.hostname:
            raise ValueError(f"WebSocket URL without a host: {url!r}")
        secure = scheme == "wss"
        port = parts.port if parts.port is not None else (443 if secure else 80)
        resource = parts.path or "/"
        if parts.query:
            resource += "?" + parts.query
        return cls(parts.hostname, port, resource, secure)

    def with_port(self, port: int) -> Endpoint:
        return Endpoint(self.host, port, self.resource, self.secure)

    @property
    def path(self) -> str:
        return self.resource.partition("?")[0]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.secure else 'ws'}://{host}:{self.port}{self.resource}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"
