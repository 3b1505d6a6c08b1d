"""ZeroMQ client: a request whose caller was told it failed is never run afterwards.

libzmq keeps the requests a connecting socket has not written out yet across a dropped
connection and sends them over the next one. A node restarted on the same address would
then run calls already reported as CONNECTION_FAILURE (retryable), and a caller that retried
would have its intent run twice.
"""

from __future__ import annotations

import trio

from intentus_trio.protocol.enums import TransportCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.zeromq import ZmqServer, open_client

from .test_zeromq_reqrep import free_port_block, node_on_port
from .test_zeromq_shutdown import code, link_of

TIMEOUT = 20.0
BIG = 1_000_000


async def test_requests_failed_at_a_drop_never_run_on_the_next_node() -> None:
    url = f"tcp://127.0.0.1:{free_port_block(4)}"
    first = Router(name="zmq-first")
    second = Router(name="zmq-second")
    entered = trio.Event()
    ran_on_second: set[int] = set()

    @first.agent("slow", "work")
    async def slow(env: IntentEnvelope) -> JsonObject:
        entered.set()
        await trio.sleep(0.3)
        return {"n": env.payload["n"], "by": 1}

    @second.agent("quick", "work")
    async def quick(env: IntentEnvelope) -> JsonObject:
        ran_on_second.add(int(env.payload["n"]))
        return {"n": env.payload["n"], "by": 2}

    # One call at a time and tiny queues on the node, big requests and a short client queue:
    # the node's kernel buffers fill, some requests wait in the client's queue and the rest
    # of the callers wait for room in it.
    server = ZmqServer(first, max_concurrency=1, hwm=1, shutdown_timeout=0.05,
                       max_frame_bytes=4 * BIG, events=False)
    results: dict[int, AgentResponse] = {}
    all_done = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with open_client(url, max_frame_bytes=4 * BIG, hwm=4) as client:
            async def call(n: int) -> None:
                results[n] = await client.send_intent(
                    new_intent("work", {"n": n, "pad": "x" * BIG}), timeout=TIMEOUT)
                if len(results) == 35:
                    all_done.set()

            async with trio.open_nursery() as calls:
                with trio.CancelScope() as node:
                    async with trio.open_nursery() as serving:
                        await serving.start(server.run, url)
                        for n in range(30):
                            calls.start_soon(call, n)
                        await entered.wait()
                        await trio.sleep(0.5)
                        lost = link_of(client)
                        node.cancel()  # the node stops...
                await lost.wait_down()
                # ...and another takes its address, to which calls made meanwhile go too.
                for n in range(30, 35):
                    calls.start_soon(call, n)
                async with node_on_port(second, url):
                    await all_done.wait()
    failed = {n for n, response in results.items()
              if not response.ok and code(response) == TransportCode.CONNECTION_FAILURE}
    assert failed, "no request was cut off by the drop"
    assert not failed & ran_on_second
    # Every call not failed was answered: by the first node (one of them cut off by its
    # shutdown), or by the second.
    answered = set(results) - failed
    assert set(range(30, 35)) <= answered
    for n in answered:
        response = results[n]
        assert not response.ok or response.payload["by"] == (2 if n in ran_on_second else 1)
        assert response.ok or code(response) is None  # AGENT_UNAVAILABLE: not a transport code
    assert ran_on_second == {n for n in answered if results[n].ok
                             and results[n].payload["by"] == 2}
