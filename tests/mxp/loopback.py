"""Two sans-IO MXP peers wired back to back: a client Connection and a ServerEndpoint.

Time only moves when :meth:`Loopback.step` advances it, to the next delivery or timer. Loss,
duplication and reordering (by random extra delay) come from a seeded RNG.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import attrs

from intentus_trio.mxp.config import Configuration, ServerConfiguration, allow_keys
from intentus_trio.mxp.connection import Connection
from intentus_trio.mxp.endpoint import ServerEndpoint
from intentus_trio.mxp.events import Event
from intentus_trio.mxp.noise import KeyPair

CLIENT_ADDR = ("10.0.0.1", 40000)
SERVER_ADDR = ("10.0.0.2", 4433)

Filter = Callable[[bytes, str], bytes | None]


@attrs.define
class Impairment:
    loss: float = 0.0
    duplicate: float = 0.0
    jitter: float = 0.0
    latency: float = 0.01


class Loopback:
    def __init__(
        self,
        *,
        seed: int = 1,
        impairment: Impairment | None = None,
        client_config: dict[str, object] | None = None,
        server_config: dict[str, object] | None = None,
        server_options: dict[str, object] | None = None,
        client_key: KeyPair | None = None,
        server_key: KeyPair | None = None,
        expected_server_key: bytes | None = None,
        allowed: list[bytes] | None = None,
        client_addr: tuple[str, int] = CLIENT_ADDR,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.impairment = impairment or Impairment()
        self.client_key = client_key or KeyPair.generate()
        self.server_key = server_key or KeyPair.generate()
        self.client_addr = client_addr
        server_conn_cfg = Configuration(self.server_key, **(server_config or {}))  # type: ignore[arg-type]
        policy = allow_keys(allowed if allowed is not None else [self.client_key.public])
        self.server = ServerEndpoint(
            ServerConfiguration(server_conn_cfg, policy, **(server_options or {})),  # type: ignore[arg-type]
            random=self.rng.randbytes,
        )
        self.client = Connection.connect(
            Configuration(self.client_key, **(client_config or {})),  # type: ignore[arg-type]
            expected_server_key or self.server_key.public,
            SERVER_ADDR,
            self.now,
            random=self.rng.randbytes,
        )
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._seq = 0
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.filter: Filter | None = None

    def _transmit(self, data: bytes, dest: str) -> None:
        (self.to_server if dest == "server" else self.to_client).append(data)
        if self.filter is not None:
            filtered = self.filter(data, dest)
            if filtered is None:
                return
            data = filtered
        imp = self.impairment
        copies = 1
        if self.rng.random() < imp.loss:
            copies = 0
        elif self.rng.random() < imp.duplicate:
            copies = 2
        for _ in range(copies):
            at = self.now + imp.latency + self.rng.random() * imp.jitter
            self._seq += 1
            heapq.heappush(self._queue, (at, self._seq, dest, data))

    def flush(self) -> None:
        for data, _ in self.client.datagrams_to_send(self.now):
            self._transmit(data, "server")
        for data, addr in self.server.datagrams_to_send(self.now):
            assert addr == self.client_addr
            self._transmit(data, "client")
        self._drain_events()

    def _drain_events(self) -> None:
        while (e := self.client.next_event()) is not None:
            self.client_events.append(e)
        while (e := self.server.next_event()) is not None:
            self.server_events.append(e)

    def deliver(self, data: bytes, dest: str) -> None:
        if dest == "server":
            self.server.receive_datagram(data, self.client_addr, self.now)
        else:
            self.client.receive_datagram(data, SERVER_ADDR, self.now)
        self._drain_events()

    def step(self, max_time: float) -> bool:
        """Send, then advance to the next event; False once nothing is left before max_time."""
        self.flush()
        candidates = [t for t in (self.client.get_timer(), self.server.get_timer()) if t]
        if self._queue:
            candidates.append(self._queue[0][0])
        if not candidates:
            return False
        at = max(min(candidates), self.now)
        if at > max_time:
            self.now = max_time
            return False
        self.now = at
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dest, data = heapq.heappop(self._queue)
            self.deliver(data, dest)
        timer = self.client.get_timer()
        if timer is not None and timer <= self.now:
            self.client.handle_timer(self.now)
        timer = self.server.get_timer()
        if timer is not None and timer <= self.now:
            self.server.handle_timer(self.now)
        self._drain_events()
        return True

    def run(self, until: Callable[[], bool], max_time: float = 30.0) -> bool:
        for _ in range(100_000):
            if until():
                return True
            if not self.step(max_time):
                return until()
        raise AssertionError("simulation did not settle")

    def run_for(self, duration: float) -> None:
        end = self.now + duration
        while self.step(end):
            pass
        self.flush()

    def server_connection(self) -> Connection:
        (conn,) = list(self.server)
        return conn
