"""TrioSocket: the trio adapter for pyzmq sockets, over real loopback sockets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import zmq

from intentus_trio.transports.zmq_trio import POLLOUT, CloseWatch, Link, TrioSocket

TIMEOUT = 10.0


@pytest.fixture
def pair() -> Iterator[tuple[TrioSocket, TrioSocket]]:
    a = TrioSocket.open(zmq.PAIR, linger_ms=0)
    b = TrioSocket.open(zmq.PAIR, linger_ms=0)
    a.socket.bind("tcp://127.0.0.1:0")
    b.socket.connect(a.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    yield a, b
    a.close()
    b.close()


async def test_round_trip_multipart(pair: tuple[TrioSocket, TrioSocket]) -> None:
    a, b = pair
    with trio.fail_after(TIMEOUT):
        await a.send([b"one", b"", b"three"])
        assert await b.receive() == [b"one", b"", b"three"]
        await b.send([b"back"])
        assert await a.receive() == [b"back"]


async def test_ping_pong_with_concurrent_sender_keeps_every_wakeup(
    pair: tuple[TrioSocket, TrioSocket],
) -> None:
    """A receiver sleeping on the FD while another task sends must still wake (edge rule)."""
    a, b = pair
    n = 2000
    got: list[bytes] = []

    async def echo() -> None:
        for _ in range(n):
            await b.send(await b.receive())

    async def receive_all() -> None:
        for _ in range(n):
            frames = await a.receive()
            got.append(frames[0])

    with trio.fail_after(TIMEOUT * 3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            nursery.start_soon(receive_all)
            for i in range(n):
                await a.send([b"%d" % i])
                if i % 7 == 0:
                    await trio.lowlevel.checkpoint()
    assert got == [b"%d" % i for i in range(n)]


async def test_many_receivers_each_message_once(pair: tuple[TrioSocket, TrioSocket]) -> None:
    a, b = pair
    seen: list[bytes] = []

    async def reader() -> None:
        while True:
            frames = await b.receive()
            if frames == [b"stop"]:
                return
            seen.append(frames[0])
            await trio.lowlevel.checkpoint()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(reader)
            for i in range(500):
                await a.send([b"%d" % i])
            for _ in range(5):
                await a.send([b"stop"])
    assert sorted(seen, key=int) == [b"%d" % i for i in range(500)]


async def test_send_waits_at_the_high_water_mark_and_cancel_is_clean() -> None:
    push = TrioSocket.open(zmq.PUSH, linger_ms=0, options={zmq.SNDHWM: 4})
    pull = TrioSocket.open(zmq.PULL, linger_ms=0, options={zmq.RCVHWM: 4})
    with push, pull:
        # inproc: no kernel buffers, so the high-water marks alone bound the queue.
        push.socket.bind("inproc://hwm-test")
        pull.socket.connect("inproc://hwm-test")
        sent = 0
        with trio.move_on_after(1.0) as scope:
            while True:
                await push.send([b"m", b"%d" % sent])
                sent += 1
        assert scope.cancelled_caught
        assert 4 <= sent <= 64
        with pytest.raises(trio.WouldBlock):
            push.send_nowait([b"m", b"x"])
        # Whole messages only, in order, and the socket still works after the cancel.
        with trio.fail_after(TIMEOUT):
            for i in range(sent):
                assert await pull.receive() == [b"m", b"%d" % i]
            await push.wait(POLLOUT)
            await push.send([b"m", b"after"])
            assert await pull.receive() == [b"m", b"after"]


async def test_cancelled_receive_leaves_socket_usable(pair: tuple[TrioSocket, TrioSocket]) -> None:
    a, b = pair
    with trio.move_on_after(0.05):
        await b.receive()
    with trio.fail_after(TIMEOUT):
        await a.send([b"x"])
        assert await b.receive() == [b"x"]


async def test_wakeup_without_a_message_keeps_the_receiver_waiting() -> None:
    """The FD also fires for socket commands (here: peers connecting); the receiver that
    tries to receive at once on such a wakeup must go back to sleep, and still wake for
    the message that follows."""
    server = TrioSocket.open(zmq.ROUTER, linger_ms=0)
    server.socket.bind("tcp://127.0.0.1:0")
    url = server.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    handshakes = server.socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    monitor = TrioSocket(handshakes, linger_ms=0)
    peers = [TrioSocket.open(zmq.DEALER, linger_ms=0) for _ in range(3)]
    got: list[list[bytes]] = []

    async def receive_one() -> None:
        got.append(await server.receive())

    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_one)
                await trio.testing.wait_all_tasks_blocked()
                for peer in peers:
                    peer.socket.connect(url)
                    await monitor.receive()  # this peer's handshake is done
                await trio.testing.wait_all_tasks_blocked()
                assert not got
                await peers[-1].send([b"hello"])
            assert got[0][1:] == [b"hello"]
    finally:
        for sock in (server, monitor, *peers):
            sock.close()


async def test_interrupt_wakes_the_receiver_once(pair: tuple[TrioSocket, TrioSocket]) -> None:
    a, b = pair
    outcomes: list[str] = []

    async def wait_for_message() -> None:
        try:
            outcomes.append((await b.receive())[0].decode())
        except trio.WouldBlock:
            outcomes.append("interrupted")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_message)
            await trio.testing.wait_all_tasks_blocked()
            b.interrupt_receive()
        assert outcomes == ["interrupted"]
        await a.send([b"next"])
        await wait_for_message()  # the interrupt was used up
        assert outcomes == ["interrupted", "next"]


async def test_close_wakes_waiters_and_shutdown_receive(
    pair: tuple[TrioSocket, TrioSocket],
) -> None:
    a, b = pair
    outcomes: list[str] = []

    async def wait_for_message() -> None:
        try:
            await b.receive()
        except trio.ClosedResourceError:
            outcomes.append("closed")
        except trio.EndOfChannel:
            outcomes.append("eof")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_message)
            nursery.start_soon(wait_for_message)
            await trio.testing.wait_all_tasks_blocked()
            b.shutdown_receive()
        assert outcomes == ["eof", "eof"]
        await b.send([b"still sends"])
        assert await a.receive() == [b"still sends"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_message)
            await trio.testing.wait_all_tasks_blocked()
            b.close()
    assert outcomes[-1] == "eof"  # shut already
    c = TrioSocket.open(zmq.PAIR, linger_ms=0)
    c.socket.connect("tcp://127.0.0.1:1")
    async with trio.open_nursery() as nursery:

        async def on_c() -> None:
            try:
                await c.receive()
            except trio.ClosedResourceError:
                outcomes.append("closed")

        nursery.start_soon(on_c)
        await trio.testing.wait_all_tasks_blocked()
        c.close()
    assert outcomes[-1] == "closed"
    with pytest.raises(trio.ClosedResourceError):
        await c.send([b"x"])
    c.close()  # idempotent


async def test_link_follows_the_connection_and_replies_outlive_it() -> None:
    """What the client relies on instead of ZMQ_IMMEDIATE: ``up`` follows the handshake and
    the drop, and messages received before a drop stay readable after it."""
    server = TrioSocket.open(zmq.ROUTER)
    server.socket.bind("tcp://127.0.0.1:0")
    url = server.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    watch = CloseWatch(server)
    client = TrioSocket.open(zmq.DEALER, linger_ms=0)
    #: What ``up`` said, and what the socket held, each time ``on_lost`` was called.
    lost: list[tuple[bool, int]] = []
    link = Link(client, on_lost=lambda: lost.append((link.up, client.events() & zmq.POLLIN)))
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run)
                await trio.testing.wait_all_tasks_blocked()
                assert not link.up
                client.socket.connect(url)
                await link.wait_up()
                await client.send([b"hello"])
                peer = (await server.receive())[0]
                for i in range(100):
                    server.send_nowait([peer, b"%d" % i])
                assert await watch.close()
                await link.wait_down()
                assert not link.up
                assert lost == [(False, zmq.POLLIN)]  # the drop came after the messages
                # Nothing was read before the connection dropped; all of it is still there.
                for i in range(100):
                    assert await client.receive() == [b"%d" % i]
                link.close()  # run returns
                assert len(lost) == 1
    finally:
        watch.discard()
        link.close()
        client.close()
        server.close()


async def test_close_watch_waits_for_libzmq_up_to_the_linger() -> None:
    """A peer that takes nothing holds the queue: ``close`` returns once the linger ran out."""
    linger = 0.3
    server = TrioSocket.open(zmq.ROUTER, linger_ms=int(linger * 1000),
                             options={zmq.SNDBUF: 4096})
    server.socket.bind("tcp://127.0.0.1:0")
    url = server.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    stuck = TrioSocket.open(zmq.DEALER, linger_ms=0, options={zmq.RCVHWM: 1, zmq.RCVBUF: 4096})
    watch = CloseWatch(server)
    try:
        with trio.fail_after(TIMEOUT):
            stuck.socket.connect(url)
            await stuck.send([b"hello"])
            peer = (await server.receive())[0]
            for _ in range(16):
                server.send_nowait([peer, bytes(1 << 20)])
            start = trio.current_time()
            assert await watch.close()
            assert trio.current_time() - start >= linger * 0.9
    finally:
        watch.discard()
        stuck.close()
        server.close()


async def test_a_discarded_close_watch_returns_false() -> None:
    sock = TrioSocket.open(zmq.DEALER, linger_ms=0)
    watch = CloseWatch(sock)
    watch.discard()
    with trio.fail_after(TIMEOUT):
        assert not await watch.close()
    assert sock.closed


async def test_a_watch_given_up_early_leaves_libzmq_working() -> None:
    """libzmq reports a socket's end with a blocking send: a watch that stops waiting must
    not close its end before that report, or libzmq's reaper thread would hang for good
    (and no socket of the process would finish closing after it)."""
    for _ in range(3):
        sock = TrioSocket.open(zmq.ROUTER)
        sock.socket.bind("tcp://127.0.0.1:0")
        watch = CloseWatch(sock)
        with trio.CancelScope() as scope:
            scope.cancel()
            await watch.close()
        assert sock.closed
    later = TrioSocket.open(zmq.ROUTER)
    later.socket.bind("tcp://127.0.0.1:0")
    with trio.fail_after(TIMEOUT):
        assert await CloseWatch(later).close()
