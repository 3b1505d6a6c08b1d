"""ZeroMQ graceful shutdown: every reply the node sent before closing reaches its caller.

The node runs in a thread with its own trio loop, so the client's loop can be blocked
(synchronously, as a busy event loop would be) while the node answers, closes its sockets and
the client's connection drops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
import zmq

from intentus_trio.protocol.enums import ErrorCode, TransportCode
from intentus_trio.protocol.errors import ConnectionFailure
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, JsonObject, StreamChunk
from intentus_trio.routing.router import Router
from intentus_trio.transports.base import StreamItem
from intentus_trio.transports.zeromq import ZmqClient, ZmqServer, open_client
from intentus_trio.transports.zmq_trio import Link

from .test_zeromq_reqrep import free_port_block, node_on_port
from .zmq_helpers import Gate, make_router, running_node, task_count

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
    failures: dict[str, AgentResponse] = {}
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
                        failures[key] = response

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
                # Every caller has read what reached the socket; a call the node had not
                # taken has failed with the connection, and its caller now waits for a node.
                await trio.testing.wait_all_tasks_blocked()
                callers.cancel_scope.cancel()
    assert node.answered == received, f"round {round_}: lost {node.answered - received}"
    assert not node.answered & failures.keys()
    assert {code(response) for response in failures.values()} <= {
        TransportCode.CONNECTION_FAILURE}
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


async def test_closing_the_client_ends_calls_waiting_for_a_connection() -> None:
    """They end as calls cut off by the close do, with CONNECTION_FAILURE; only calling a
    transport already closed raises."""
    port = free_port_block(4)
    client = ZmqClient(f"tcp://127.0.0.1:{port}")
    before = task_count()
    replies: list[AgentResponse] = []
    streamed: list[StreamItem] = []
    published: list[str] = []

    async def call() -> None:
        replies.append(await client.send_intent(new_intent("echo", {}), timeout=None))

    async def stream() -> None:
        streamed.extend([item async for item in client.send_stream(
            new_intent("count", {}), timeout=None)])

    async def publish() -> None:
        try:
            await client.publish(new_event("x"), timeout=None)
        except ConnectionFailure as exc:
            published.append(exc.message)

    with trio.fail_after(TIMEOUT):
        # Leaving the block closes the client first; the waiting calls must end at once.
        async with trio.open_nursery() as nursery, client:
            nursery.start_soon(call)
            nursery.start_soon(stream)
            nursery.start_soon(publish)
            await trio.testing.wait_all_tasks_blocked()
    assert len(replies) == 1 and code(replies[0]) == TransportCode.CONNECTION_FAILURE
    assert len(streamed) == 1 and isinstance(streamed[0], AgentResponse)
    assert code(streamed[0]) == TransportCode.CONNECTION_FAILURE
    assert published == ["the transport was closed"]
    assert task_count() == before
    with pytest.raises(trio.ClosedResourceError):
        await client.send_intent(new_intent("echo", {}))


async def test_aclose_inside_the_block_is_safe_and_idempotent() -> None:
    gate = Gate()
    async with running_node(make_router(gate)) as server:
        await trio.testing.wait_all_tasks_blocked()  # the node's tasks have all started
        before = task_count()
        outcome: list[AgentResponse] = []
        reached: list[str] = []
        with trio.fail_after(TIMEOUT):
            async with open_client(server.urls["rpc"]) as client:
                async def call() -> None:
                    outcome.append(await client.send_intent(new_intent("gate", {})))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call)
                    await gate.wait_entered(1)
                    # From a scope of the caller's own inside the block, then from another
                    # task, then again.
                    with trio.move_on_after(TIMEOUT):
                        await client.aclose()
                    nursery.start_soon(client.aclose)
                await client.aclose()
                reached.append("after close")
                with pytest.raises(trio.ClosedResourceError):
                    await client.send_intent(new_intent("echo", {}))
            reached.append("after exit")
        assert reached == ["after close", "after exit"]
        assert len(outcome) == 1 and code(outcome[0]) == TransportCode.CONNECTION_FAILURE
        assert task_count() == before
        gate.open.set()


async def test_a_client_opened_by_hand_closes_with_aclose() -> None:
    """``__aenter__`` then ``aclose``, as for any resource: from the task that opened it,
    inside a cancel scope of its own, or from another task."""
    url = f"tcp://127.0.0.1:{free_port_block(4)}"
    before = task_count()
    clients: list[ZmqClient] = []

    async def open_by_hand() -> None:
        client = ZmqClient(url)
        await client.__aenter__()
        clients.append(client)

    async def open_and_close(scoped: bool) -> None:
        await open_by_hand()
        if scoped:
            with trio.move_on_after(TIMEOUT):
                await clients[-1].aclose()
        else:
            await clients[-1].aclose()

    with trio.fail_after(TIMEOUT):
        # Each task ends after the client's aclose, or while it is still open: neither may
        # leave trio's nursery stack unbalanced.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_and_close, False)
            nursery.start_soon(open_and_close, True)
            nursery.start_soon(open_by_hand)
        assert len(clients) == 3
        for client in clients:
            await client.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await client.send_intent(new_intent("echo", {}))
    assert task_count() == before


async def test_a_client_entered_under_a_cancelled_scope_unwinds_cleanly() -> None:
    """A pending cancellation hits the block, and leaving it still stops the client's
    tasks."""
    before = task_count()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with open_client(f"tcp://127.0.0.1:{free_port_block(4)}"):
            await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert task_count() == before


async def test_calls_cut_off_by_a_shutdown_are_answered_agent_unavailable() -> None:
    """Past ``shutdown_timeout`` the node cancels what still runs and answers it, so its
    callers learn at once that the call did not finish (and another node may take it)."""
    gate = Gate()
    server = ZmqServer(make_router(gate), shutdown_timeout=0.2)
    replies: list[AgentResponse] = []
    streamed: list[StreamItem] = []
    chunk = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            node = trio.CancelScope()

            async def run_node(task_status: trio.TaskStatus[str]) -> None:
                with node:
                    await server.run("tcp://127.0.0.1:0", task_status=task_status)

            url = await outer.start(run_node)
            async with open_client(url) as client:
                async def call() -> None:
                    replies.append(await client.send_intent(new_intent("gate", {}),
                                                            timeout=None))

                async def stream() -> None:
                    async for item in client.send_stream(
                            new_intent("count", {"n": 2, "pause": 60}), timeout=None):
                        streamed.append(item)
                        chunk.set()

                async with trio.open_nursery() as calls:
                    calls.start_soon(call)
                    calls.start_soon(stream)
                    await gate.wait_entered(1)
                    await chunk.wait()
                    node.cancel()
    assert len(replies) == 1 and replies[0].error is not None
    assert replies[0].error.code is ErrorCode.AGENT_UNAVAILABLE and replies[0].error.retryable
    assert [type(item) for item in streamed] == [StreamChunk, AgentResponse]
    final = streamed[-1]
    assert isinstance(final, AgentResponse) and final.error is not None
    assert final.error.code is ErrorCode.AGENT_UNAVAILABLE
    assert gate.cancelled == 1
    assert server.stats.error_replies == 2 and server.stats.dropped_replies == 0


async def _client_whose_replacement_socket_fails(client: ZmqClient) -> None:
    """Drop the client's connection with no way to open a new socket (EMFILE): its tasks
    fail, which closes it."""
    import errno

    from intentus_trio.transports.zmq_trio import TrioSocket

    def no_more_sockets() -> Any:
        raise zmq.ZMQError(errno.EMFILE)

    node = TrioSocket.open(zmq.ROUTER)
    try:
        node.socket.bind(client.url)
        assert client._link is not None
        with trio.fail_after(10):
            await client._link.wait_up()
        client._open = no_more_sockets  # type: ignore[method-assign]
    finally:
        node.close(0)
    with trio.fail_after(10):
        await client._stopped.wait()


@pytest.mark.parametrize("ending", ["normal", "error", "cancelled"])
async def test_a_failure_of_the_clients_tasks_never_replaces_the_blocks_own_ending(
    ending: str,
) -> None:
    url = f"tcp://127.0.0.1:{free_port_block(1)}"
    if ending == "normal":
        with pytest.raises(zmq.ZMQError):  # the failure itself, not a group around it
            async with open_client(url, timeout=None) as client:
                await _client_whose_replacement_socket_fails(client)
    elif ending == "error":
        with pytest.raises(ValueError, match="the block's own") as info:
            async with open_client(url, timeout=None) as client:
                await _client_whose_replacement_socket_fails(client)
                raise ValueError("the block's own error")
        assert any("also failed" in note for note in info.value.__notes__)
    else:
        with trio.CancelScope() as scope:
            async with open_client(url, timeout=None) as client:
                await _client_whose_replacement_socket_fails(client)
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught  # the cancellation reached its scope
