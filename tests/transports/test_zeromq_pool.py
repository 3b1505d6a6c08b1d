"""run_inline: a coroutine awaited with a hook on its first suspension."""

from __future__ import annotations

import pytest
import trio

from intentus_trio.transports.zeromq.pool import run_inline


async def test_coroutine_that_never_suspends_runs_inline() -> None:
    calls: list[str] = []

    async def quick() -> int:
        return 7

    assert await run_inline(quick(), lambda: calls.append("suspended")) == 7
    assert calls == []


async def test_hook_runs_once_at_the_first_suspension(autojump_clock: trio.abc.Clock) -> None:
    calls: list[str] = []

    async def slow() -> str:
        calls.append("start")
        await trio.sleep(1)
        calls.append("middle")
        await trio.sleep(1)
        return "done"

    assert await run_inline(slow(), lambda: calls.append("suspended")) == "done"
    assert calls == ["start", "suspended", "middle"]


async def test_errors_and_cancellation_pass_through(autojump_clock: trio.abc.Clock) -> None:
    async def failing() -> None:
        await trio.sleep(1)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await run_inline(failing(), lambda: None)

    cleaned: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append("finally")

    with trio.move_on_after(1) as scope:
        await run_inline(forever(), lambda: None)
    assert scope.cancelled_caught and cleaned == ["finally"]
