"""RunsOnce: the lifetime generator runs around the block, and only once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from intentus_trio.transports.lifetime import RunsOnce


class Client(RunsOnce):
    def __init__(self) -> None:
        self.log: list[str] = []

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Client]:
        self.log.append("start")
        try:
            yield self
        finally:
            self.log.append("stop")


async def test_lifetime_wraps_the_block_and_runs_once() -> None:
    client = Client()
    assert not client._started
    async with client as entered:
        assert entered is client and client._started
        assert client.log == ["start"]
    assert client.log == ["start", "stop"]
    with pytest.raises(RuntimeError, match="a Client can be entered only once"):
        async with client:
            pass
    assert client.log == ["start", "stop"]


async def test_an_error_in_the_block_reaches_the_generator() -> None:
    client = Client()
    with pytest.raises(KeyError):
        async with client:
            raise KeyError("boom")
    assert client.log == ["start", "stop"]
