"""Shared pieces of the MXP driver tests: keys, configurations, an echo handler, task census."""

from __future__ import annotations

from typing import Any

import trio

from intentus_trio.mxp.config import ClientPolicy, Configuration, ServerConfiguration, allow_keys
from intentus_trio.mxp.driver import MxpConnection
from intentus_trio.mxp.noise import KeyPair

SERVER_KEY = KeyPair.generate()
CLIENT_KEY = KeyPair.generate()


def server_config(policy: ClientPolicy | None = None, **options: Any) -> ServerConfiguration:
    """Connection settings and server settings by keyword; only CLIENT_KEY is allowed unless
    another ``policy`` is given."""
    conn = {k: options.pop(k) for k in list(options) if k in Configuration.__annotations__}
    return ServerConfiguration(
        Configuration(SERVER_KEY, **conn),
        policy if policy is not None else allow_keys([CLIENT_KEY.public]),
        **options,
    )


def client_config(**options: Any) -> Configuration:
    return Configuration(CLIENT_KEY, **options)


async def echo(conn: MxpConnection) -> None:
    async for data in conn:
        await conn.send_datagram(data)


async def echo_with_retry(
    conn: MxpConnection, payload: bytes, *, attempts: int = 20, wait: float = 0.3
) -> bytes:
    """Send until the echo comes back (datagrams are unreliable); stale echoes are skipped."""
    for _ in range(attempts):
        await conn.send_datagram(payload)
        with trio.move_on_after(wait):
            while True:
                data = await conn.receive_datagram()
                if data == payload:
                    return data
    raise AssertionError(f"no echo of {payload!r}")


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task alive in this trio run."""
    out: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        out.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return out
