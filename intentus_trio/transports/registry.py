"""Transports by URL scheme, imported only when used.

Each network transport module provides two entry points:

* ``open_client(url, **options)`` — an async context manager yielding a ``Transport``;
* ``serve(router, url, *, task_status, **options)`` — a server for ``nursery.start`` that
  reports the URL it is bound to (port 0 picks a free port);
* optionally ``run_worker(router, distributor_url, *, task_status, **options)`` — serve a
  router's agents as a worker of a distributing node.

Keeping the table here lets the CLI and users name a transport by URL while the core
package stays importable without any transport's optional dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen


@frozen
class TransportEntry:
    module: str
    extra: str


SCHEMES: dict[str, TransportEntry] = {
    "http": TransportEntry("intentus_trio.transports.http", "http"),
    "https": TransportEntry("intentus_trio.transports.http", "http"),
    "ws": TransportEntry("intentus_trio.transports.websocket", "websocket"),
    "wss": TransportEntry("intentus_trio.transports.websocket", "websocket"),
    "tcp": TransportEntry("intentus_trio.transports.zeromq", "zeromq"),
    "ipc": TransportEntry("intentus_trio.transports.zeromq", "zeromq"),
    "mxp": TransportEntry("intentus_trio.transports.mxp", "mxp"),
}


class UnknownScheme(ValueError):
    """No transport serves this URL scheme, or its optional dependencies are missing."""


def _entry(url: str) -> tuple[str, TransportEntry]:
    scheme = urlsplit(url).scheme.lower()
    entry = SCHEMES.get(scheme)
    if entry is None:
        known = ", ".join(sorted(SCHEMES))
        raise UnknownScheme(f"no transport for URL scheme {scheme!r} (known: {known})")
    return scheme, entry


def _load(url: str, attribute: str) -> Callable[..., Any]:
    scheme, entry = _entry(url)
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name == entry.module:
            raise UnknownScheme(f"the {scheme!r} transport is not available yet") from None
        raise UnknownScheme(
            f"the {scheme!r} transport needs the {entry.extra!r} extra: "
            f"pip install 'intentus-trio[{entry.extra}]' (missing module {exc.name!r})"
        ) from None
    function: Callable[..., Any] | None = getattr(module, attribute, None)
    if function is None:
        raise UnknownScheme(f"the {scheme!r} transport has no {attribute!r} entry point")
    return function


def open_transport(url: str, **options: Any) -> Any:
    """``async with open_transport("http://host:port") as transport: ...``"""
    return _load(url, "open_client")(url, **options)


def worker_for(url: str) -> Callable[..., Any]:
    """The ``run_worker`` function for a distributor at ``url`` (transports with work queues)."""
    return _load(url, "run_worker")


def server_for(url: str) -> Callable[..., Any]:
    """The ``serve`` function for ``url``'s scheme, for ``nursery.start(fn, router, url)``."""
    return _load(url, "serve")
