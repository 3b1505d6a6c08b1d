"""Numbered, self-describing messages for checking stream delivery: every byte exactly once,
in order, per stream."""

from __future__ import annotations

import hashlib
import random
import struct

import trio

from intentus_trio.mxp.stream import MxpStream

HEADER = struct.Struct(">IIH")  # stream index, sequence number, payload size


def payload(index: int, seq: int, size: int) -> bytes:
    seed = hashlib.sha256(f"{index}:{seq}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def message(index: int, seq: int, size: int) -> bytes:
    return HEADER.pack(index, seq, size) + payload(index, seq, size)


def messages(index: int, count: int, rng: random.Random, max_size: int = 300) -> list[bytes]:
    return [message(index, seq, rng.randint(0, max_size)) for seq in range(count)]


class MessageChecker:
    """Parses a byte stream of messages as it arrives and checks each one: the next sequence
    number of the expected stream, with the expected payload."""

    def __init__(self, index: int | None = None) -> None:
        self.index = index
        self.next_seq = 0
        self.bytes = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= HEADER.size:
            index, seq, size = HEADER.unpack_from(buf, pos)
            end = pos + HEADER.size + size
            if len(buf) < end:
                break
            if self.index is None:
                self.index = index
            assert index == self.index, f"message of stream {index} on stream {self.index}"
            assert seq == self.next_seq, (
                f"stream {index}: got message {seq}, expected {self.next_seq}"
            )
            assert buf[pos + HEADER.size : end] == payload(index, seq, size), "corrupted payload"
            self.next_seq += 1
            pos = end
        del buf[:pos]

    def finish(self, expected: int) -> None:
        assert not self._buf, "trailing partial message"
        assert self.next_seq == expected, f"{self.next_seq} of {expected} messages"


async def read_all(stream: MxpStream, checker: MessageChecker, max_bytes: int = 65536) -> None:
    while data := await stream.receive_some(max_bytes):
        checker.feed(data)


async def echo_stream(stream: MxpStream) -> None:
    """Send back everything, then finish."""
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


async def serve_echo(conn: object) -> None:
    from intentus_trio.mxp.driver import MxpConnection

    assert isinstance(conn, MxpConnection)
    async with trio.open_nursery() as nursery:
        async for stream in conn.streams():
            nursery.start_soon(echo_stream, stream)
