"""The MXP transport's stream interface over plain TCP, for tests and debugging.

One TCP connection stands for the connection (a control socket: when it ends, the
connection has ended) and one more for each stream. Each TCP connection opens with a
preface: a kind byte, the server key the client expects and the client's public key (a
control socket), or a kind byte and the connection's token (a stream). A server whose key
differs, or whose policy refuses the client's key, closes the control socket, so keys are
checked as MXP checks them — but nothing is authenticated or encrypted: never use this
backend across a network you do not control.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ...mxp.noise import KeyPair
from .backend import Address, ClientPolicy

_CONNECT = 0
_STREAM = 1
_TOKEN = 16
#: Seconds a new TCP connection has to send its preface.
PREFACE_TIMEOUT = 10.0
_ACCEPTED = b"\x01"


class TcpHandshakeError(ConnectionError):
    """The server refused the connection (another key, or its policy said no)."""


async def _read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise trio.BrokenResourceError("the peer closed during the preface")
        data += chunk
    return bytes(data)


class TcpStream(trio.abc.HalfCloseableStream):
    """A TCP stream that can be reset (the peer then sees an error, not an end)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.closed = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self.closed.set()
        await self._stream.aclose()

    def reset(self, code: int = 0) -> None:
        """Abort the TCP connection (RST): the peer's next operation fails."""
        self.closed.set()
        sock = self._stream.socket
        if sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close_now(self) -> None:
        self.closed.set()
        self._stream.socket.close()

    def stop_sending(self, code: int = 0) -> None:
        """Nothing to tell a TCP peer; ``reset`` does it all."""


class TcpConnection:
    """A ``StreamConnection`` over TCP: a control socket and one socket per stream."""

    def __init__(self, control: trio.SocketStream, address: Address, token: bytes,
                 queue: int = 64) -> None:
        self.control = control
        self.address = address
        self.token = token
        self._closed = trio.Event()
        self._streams: set[TcpStream] = set()
        self._send, self._receive = trio.open_memory_channel[TcpStream](queue)

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> object:
        await self._closed.wait()
        return None

    def close(self, error_code: int = 0, reason: str = "") -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._send.close()
        self.control.socket.close()
        for stream in self._streams:
            stream.close_now()
        self._streams.clear()

    async def open_stream(self, *, bidirectional: bool = True, urgency: int = 3) -> TcpStream:
        if self.is_closed:
            raise trio.ClosedResourceError("the connection is closed")
        tcp = await trio.open_tcp_stream(*self.address)
        stream = TcpStream(tcp)
        self._streams.add(stream)
        await tcp.send_all(bytes([_STREAM]) + self.token)
        return stream

    async def accept_stream(self) -> TcpStream:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("the connection is closed") from None

    def offer(self, tcp: trio.SocketStream) -> TcpStream | None:
        if self.is_closed:
            return None
        stream = TcpStream(tcp)
        try:
            self._send.send_nowait(stream)
        except trio.WouldBlock:
            return None
        self._streams.add(stream)
        return stream

    async def watch(self) -> None:
        """Return when the control socket ends, closing the connection."""
        try:
            while await self.control.receive_some(1024):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.close()


class _Listener:
    def __init__(self, key: KeyPair, policy: ClientPolicy, nursery: trio.Nursery) -> None:
        self.key = key
        self.policy = policy
        self.nursery = nursery
        self.local_address: Address = ("", 0)
        self.connections: dict[bytes, TcpConnection] = {}
        self._send, self._receive = trio.open_memory_channel[TcpConnection](64)

    async def accept(self) -> TcpConnection:
        return await self._receive.receive()

    def close(self) -> None:
        for conn in list(self.connections.values()):
            conn.close()

    async def handle(self, tcp: trio.SocketStream) -> None:
        try:
            preface: bytes | None = None
            with trio.move_on_after(PREFACE_TIMEOUT):  # a silent socket does not stay
                kind = (await _read_exactly(tcp, 1))[0]
                preface = await _read_exactly(tcp, _TOKEN if kind == _STREAM else 64)
            if preface is None:
                await trio.aclose_forcefully(tcp)
                return
            if kind == _STREAM:
                conn = self.connections.get(preface)
                stream = conn.offer(tcp) if conn is not None else None
                if stream is not None:
                    # The socket is closed when this handler returns: wait for its user.
                    await stream.closed.wait()
                return
            raw = preface
            client_key = raw[32:]
            peer = tcp.socket.getpeername()
            if raw[:32] != self.key.public or not self.policy(client_key, (peer[0], peer[1])):
                await tcp.aclose()
                return
            token = os.urandom(_TOKEN)
            conn = TcpConnection(tcp, self.local_address, token)
            await tcp.send_all(_ACCEPTED + token)
            self.connections[token] = conn
            try:
                self._send.send_nowait(conn)
            except trio.WouldBlock:
                conn.close()
            await conn.watch()
            del self.connections[token]
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await trio.aclose_forcefully(tcp)


class TcpStreamBackend:
    """A ``Backend`` over TCP (see the module docstring). ``options`` are ignored."""

    @asynccontextmanager
    async def connect(
        self, address: Address, server_key: bytes, *, static_key: KeyPair | None,
        connect_timeout: float, options: dict[str, Any],
    ) -> AsyncIterator[TcpConnection]:
        key = static_key or KeyPair.generate()
        with trio.fail_after(connect_timeout):
            control = await trio.open_tcp_stream(*address)
            try:
                await control.send_all(bytes([_CONNECT]) + server_key + key.public)
                answer = await control.receive_some(1 + _TOKEN)
                while answer and len(answer) < 1 + _TOKEN:
                    more = await control.receive_some(1 + _TOKEN - len(answer))
                    if not more:
                        break
                    answer += more
            except BaseException:
                await trio.aclose_forcefully(control)
                raise
        if len(answer) != 1 + _TOKEN or answer[:1] != _ACCEPTED:
            await trio.aclose_forcefully(control)
            raise TcpHandshakeError("the server refused the connection "
                                    "(it does not hold this key, or refused ours)")
        conn = TcpConnection(control, address, bytes(answer[1:]))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.watch)
            try:
                yield conn
            finally:
                conn.close()
                nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def listen(
        self, bind: Address, static_key: KeyPair, client_policy: ClientPolicy,
        options: dict[str, Any],
    ) -> AsyncIterator[_Listener]:
        async with trio.open_nursery() as nursery:
            listener = _Listener(static_key, client_policy, nursery)
            tcp = await trio.open_tcp_listeners(bind[1], host=bind[0])
            sockname = tcp[0].socket.getsockname()
            listener.local_address = (sockname[0], sockname[1])
            nursery.start_soon(trio.serve_listeners, listener.handle, tcp)
            try:
                yield listener
            finally:
                listener.close()
                nursery.cancel_scope.cancel()
