"""One URL names a node; its other ZeroMQ endpoints follow from it.

A node serves request/reply on its URL. Its event hub (XPUB) and, when it distributes work,
its worker queue (PUSH) and result intake (PULL) sit next to it:

=========  ==================  ========================
endpoint   ``tcp://host:P``    ``ipc:///path``
=========  ==================  ========================
rpc        ``tcp://host:P``    ``ipc:///path``
events     ``tcp://host:P+1``  ``ipc:///path.events``
work       ``tcp://host:P+2``  ``ipc:///path.work``
results    ``tcp://host:P+3``  ``ipc:///path.results``
=========  ==================  ========================

so clients and workers need only the node URL. Each endpoint can be overridden by an option
(``events_url=``, ``work_url=``, ``results_url=``) on both sides.
"""

from __future__ import annotations

from typing import Final, Literal

Role = Literal["events", "work", "results"]

OFFSETS: Final[dict[str, int]] = {"events": 1, "work": 2, "results": 3}


def split_tcp(url: str) -> tuple[str, int]:
    """``tcp://host:port`` -> (host, port); ``host`` keeps IPv6 brackets."""
    rest = url[len("tcp://"):]
    host, sep, port = rest.rpartition(":")
    if not url.startswith("tcp://") or not sep or not host or not port.isdigit():
        raise ValueError(f"expected tcp://host:port, got {url!r}")
    value = int(port)
    if not 0 <= value <= 65535:
        raise ValueError(f"port out of range in {url!r}")
    return host, value


def check_url(url: str) -> str:
    if url.startswith("tcp://"):
        split_tcp(url)
    elif not url.startswith("ipc://") or len(url) <= len("ipc://"):
        raise ValueError(f"expected a tcp://host:port or ipc://path URL, got {url!r}")
    return url


def endpoint(url: str, role: Role) -> str:
    """The ``role`` endpoint of the node at ``url`` (see the module table)."""
    if url.startswith("ipc://"):
        return f"{check_url(url)}.{role}"
    host, port = split_tcp(url)
    if port == 0:
        raise ValueError("derived endpoints need the node's real port, not 0")
    if port + OFFSETS[role] > 65535:
        raise ValueError(f"no room for the {role} endpoint above port {port}")
    return f"tcp://{host}:{port + OFFSETS[role]}"


def connectable(url: str) -> str:
    """A URL clients can connect to for a bound ``url`` (wildcard hosts become loopback)."""
    if url.startswith("tcp://"):
        host, port = split_tcp(url)
        if host in ("*", "0.0.0.0"):
            return f"tcp://127.0.0.1:{port}"
        if host in ("[::]", "[*]"):
            return f"tcp://[::1]:{port}"
    return url
