"""ZeroMQ graceful shutdown: every reply the node sent before closing reaches its caller.

The node runs in a thread with its own trio loop, so the client's loop can be blocked
(synchronously, as a busy event loop would be) while the node answers, closes its sockets and
the client's connection drops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
import zmq

from intentus_trio.protocol.enums import TransportCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.zeromq import ZmqClient, ZmqServer, open_client
from intentus_trio.transports.zmq_trio import Link

from .test_zeromq_reqrep import free_port_block, node_on_port
from .zmq_helpers import task_count

TIMEOUT = 10.0


class ThreadNode:
    """A node serving in its own thread and trio loop.

    ``setup(router, node)`` registers the agents; it runs in the node's loop, so they may
    create trio objects there. Agents talk to the test through ``node`` (thread-safe
    ``threading.Event``s and plain attributes read after ``join``).
    """

    def __init__(self, setup: Callable[[Router, ThreadNode], None], **options: Any) -> None:
        self.setup = setup
        self.options = options
        self.server: ZmqServer | None = None
        self.url = ""
        self.release: trio.Event | None = None
        self.entered = threading.Event()
        self.answered: set[str] = set()
        self.entries = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: Callable[[], object] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by join()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        router = Router(name="zmq-shutdown-test")
        self.release = trio.Event()
        self.setup(router, self)
        self.server = ZmqServer(router, **self.options)
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(self.server.run, "tcp://127.0.0.1:0")
            self._token = trio.lowlevel.current_trio_token()
            self._cancel = nursery.cancel_scope.cancel
            self._ready.set()

    def start(self) -> str:
        self._thread.start()
        assert self._ready.wait(TIMEOUT)
        if self._error is not None:
            raise self._error
        return self.url

    def shutdown(self) -> None:
        """Begin a graceful shutdown, then let held agents answer (from any thread)."""
        def begin() -> None:
            assert self._cancel is not None and self.release is not None
            self._cancel()
            self.release.set()

        assert self._token is not None
        self._token.run_sync_soon(begin)

    def join(self) -> None:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the node did not shut down"
        if self._error is not None:
            raise self._error


def held_until_shutdown(expected: int) -> Callable[[Router, ThreadNode], None]:
    """An agent ``hold`` that answers only once the node is shutting down."""
    def setup(router: Router, node: ThreadNode) -> None:
        async def hold(env: IntentEnvelope) -> JsonObject:
            node.entries += 1
            if node.entries == expected:
                node.entered.set()
            assert node.release is not None
            await node.release.wait()
            return env.payload

        router.register("hold", "hold", hold)

    return setup


def link_of(client: ZmqClient) -> Link:
    link = client._link
    assert link is not None
    return link


def block_until_disconnected(client: ZmqClient) -> None:
    """Block the whole trio loop until the client's libzmq has seen its connection drop.

    The link's monitor gets DISCONNECTED right after libzmq has queued every message that
    came over the connection. Polling it consumes the FD's edge, which is then handed back
    to the link's task.
    """
    monitor = link_of(client)._monitor.pair
    assert monitor.socket.poll(int(TIMEOUT * 1000), zmq.POLLIN), "no disconnect seen"
    monitor.events()


def code(response: AgentResponse) -> object:
    assert response.error is not None
    return response.error.details.get("transportCode")


async def test_a_blocked_client_gets_every_reply_sent_before_a_shutdown() -> None:
    calls = 40
    before = task_count()
    node = ThreadNode(held_until_shutdown(calls))
    url = node.start()
    results: dict[int, AgentResponse] = {}
    with trio.fail_after(TIMEOUT * 2):
        async with open_client(url) as client:
            async def call(i: int) -> None:
                results[i] = await client.send_intent(
                    new_intent("hold", {"i": i}), timeout=TIMEOUT)

            async with trio.open_nursery() as nursery:
                for i in range(calls):
                    nursery.start_soon(call, i)
                assert await trio.to_thread.run_sync(node.entered.wait, TIMEOUT)
                node.shutdown()
                # This loop stays blocked while the node answers every call, closes its
                # sockets and the connection drops: none of the replies is read before.
                node.join()
                block_until_disconnected(client)
            assert [results[i].payload for i in range(calls)] == [{"i": i} for i in range(calls)]
            assert client.stats.late_replies == 0
            # The node is gone: a call is not queued for it but fails as not connected.
            await link_of(client).wait_down()
            gone = await client.send_intent(new_intent("hold", {}), timeout=0.2)
            assert code(gone) == TransportCode.CONNECTION_FAILURE
    assert node.server is not None and node.server.stats.dropped_replies == 0
    assert task_count() == before


def answering(busy_after: int) -> Callable[[Router, ThreadNode], None]:
    """An agent ``work`` recording each id it answers; some answer inline, some suspend."""
    def setup(router: Router, node: ThreadNode) -> None:
        async def work(env: IntentEnvelope) -> JsonObject:
            key = str(env.payload["id"])
            if int(env.payload["i"]) % 3 == 0:
                await trio.lowlevel.checkpoint()  # suspends: another member takes over
            node.answered.add(key)
            if len(node.answered) == busy_after:
                node.entered.set()
            return env.payload

        router.register("work", "work", work)

    return setup


async def shutdown_under_load(round_: int, *, block: bool) -> None:
    node = ThreadNode(answering(busy_after=150 + 20 * round_), max_concurrency=8)
    url = node.start()
    received: set[str] = set()
    failures: list[AgentResponse] = []
    with trio.fail_after(TIMEOUT * 2):
        async with open_client(url) as client:
            async def caller(k: int) -> None:
                for i in range(1_000_000):
                    key = f"{k}-{i}"
                    response = await client.send_intent(
                        new_intent("work", {"id": key, "i": i}), timeout=None)
                    if response.ok:
                        received.add(key)
                    else:
                        failures.append(response)

            async with trio.open_nursery() as callers:
                for k in range(16):
                    callers.start_soon(caller, k)
                assert await trio.to_thread.run_sync(node.entered.wait, TIMEOUT)
                node.shutdown()
                if block:  # the client's loop is blocked throughout the shutdown
                    node.join()
                    block_until_disconnected(client)
                else:  # the client keeps reading while the node shuts down
                    await trio.to_thread.run_sync(node.join)
                await link_of(client).wait_down()
                # Every caller has read what reached the socket and now waits for a reply
                # the node never owed (it had not taken the request) or for a node.
                await trio.testing.wait_all_tasks_blocked()
                callers.cancel_scope.cancel()
    assert not failures
    assert node.answered == received, f"round {round_}: lost {node.answered - received}"
    assert node.server is not None and node.server.stats.dropped_replies == 0


async def test_repeated_shutdowns_under_load_lose_no_reply() -> None:
    before = task_count()
    for round_ in range(8):
        await shutdown_under_load(round_, block=round_ % 2 == 1)
    assert task_count() == before


async def test_a_call_while_the_node_is_down_is_not_queued_for_its_return() -> None:
    """Without ZMQ_IMMEDIATE the socket would queue it; the link keeps that from happening."""
    port = free_port_block(4)
    url = f"tcp://127.0.0.1:{port}"
    seen: list[JsonObject] = []
    router = Router(name="zmq-down-test")

    @router.agent("record", "record")
    async def record(env: IntentEnvelope) -> JsonObject:
        seen.append(env.payload)
        return env.payload

    async with open_client(url) as client:
        with trio.fail_after(TIMEOUT):
            down = await client.send_intent(new_intent("record", {"n": 1}), timeout=0.2)
            assert code(down) == TransportCode.CONNECTION_FAILURE
            async with node_on_port(router, url):
                up = await client.send_intent(new_intent("record", {"n": 2}))
                assert up.ok and up.payload == {"n": 2}
            assert seen == [{"n": 2}]


async def test_closing_the_client_ends_a_call_waiting_for_a_connection() -> None:
    port = free_port_block(4)
    outcome: list[str] = []
    client = ZmqClient(f"tcp://127.0.0.1:{port}")
    before = task_count()

    async def call() -> None:
        try:
            await client.send_intent(new_intent("echo", {}), timeout=None)
        except trio.ClosedResourceError:
            outcome.append("closed")

    with trio.fail_after(TIMEOUT):
        # Leaving the block closes the client first; the waiting call must end at once.
        async with trio.open_nursery() as nursery, client:
            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
    assert outcome == ["closed"]
    assert task_count() == before
