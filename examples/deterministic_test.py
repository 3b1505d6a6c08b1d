"""A deterministic test of an agent with a deadline, under trio's MockClock.

Run it with pytest (``pytest examples/deterministic_test.py``) or directly. Time only moves
when every task is blocked, so a 30-second timeout takes microseconds and never flakes.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from intentus_trio import ErrorCode, IntentEnvelope, Router
from intentus_trio.testing import open_test_node


async def slow_lookup(env: IntentEnvelope) -> dict[str, Any]:
    await trio.sleep(env.payload["seconds"])
    return {"found": True}


async def check_lookup_deadline() -> None:
    router = Router()
    router.register("lookup", "lookup", slow_lookup, timeout=30.0)
    async with open_test_node(router=router, samples=False) as node:
        start = trio.current_time()
        fast = await node.call("lookup", {"seconds": 29})
        assert fast.ok
        slow = await node.call("lookup", {"seconds": 31})
        assert slow.error is not None and slow.error.code is ErrorCode.AGENT_TIMEOUT
        # 29 s for the first call, 30 s until the second one's deadline: virtual time.
        assert trio.current_time() - start == 59


def test_lookup_deadline_with_mock_clock() -> None:
    trio.run(check_lookup_deadline, clock=trio.testing.MockClock(autojump_threshold=0))


if __name__ == "__main__":
    test_lookup_deadline_with_mock_clock()
    print("ok: 59 virtual seconds passed instantly")
