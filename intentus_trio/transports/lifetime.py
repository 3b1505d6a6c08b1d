"""Lifetimes of clients and servers: a generator entered once, a shielded worker nursery."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import trio


class RunsOnce:
    """Entering runs ``_running()`` up to its ``yield``; leaving finishes it.

    Clients own tasks in a nursery that must live exactly as long as the ``async with``
    block; writing that lifetime as one generator keeps start-up and shutdown side by side.
    """

    _lifetime: AbstractAsyncContextManager[object] | None = None

    @property
    def _started(self) -> bool:
        return self._lifetime is not None

    def _running(self) -> AbstractAsyncContextManager[object]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._lifetime is not None:
            raise RuntimeError(f"a {type(self).__name__} can be entered only once")
        self._lifetime = self._running()
        await self._lifetime.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._lifetime is not None
        return await self._lifetime.__aexit__(exc_type, exc, tb)


async def shielded_nursery(stop: trio.Event, *, task_status: Any) -> None:
    """A nursery (reported to ``nursery.start``) that its parent's cancellation does not
    reach: a server's connection tasks live in it until ``stop`` is set, so a shutdown can
    let them finish within a grace period instead of cutting them off."""
    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.shield = True
        task_status.started(nursery)
        await stop.wait()
        nursery.cancel_scope.cancel()
