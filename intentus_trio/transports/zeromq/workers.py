"""Worker queues: a distributor PUSHes intents to worker processes that PULL them.

Delivery is **at least once**. The distributor keeps every accepted item until a worker
reports it done; an item handed to a worker is *leased* for ``lease_timeout`` seconds, and a
worker renews the leases of what it is still running every ``renew_interval``. When a lease
runs out (the worker died, hung, or lost its connection, taking whatever sat in its queues),
the item goes back to the front of the queue for another worker. After ``max_attempts``
deliveries it fails with AGENT_UNAVAILABLE instead of circulating forever. A redelivered item
can therefore run twice (once on a worker that was only slow): agents that must not repeat an
effect should deduplicate by ``metadata.requestId``. The first result to arrive from any
delivery is the item's result, even one that arrives while the item waits to be redelivered;
results that arrive for an item already finished are dropped and counted.

With a protector, an item is sealed each time it is handed to a worker, not when it is
queued: a seal made at queueing time would go stale while the item waits, and a redelivery
of the same sealed bytes would be refused as a replay by a worker that already opened them.
Each delivery is then a separate request to the protector, so a slow worker's reply to an
earlier delivery still opens.

Messages::

    distributor -> worker (PUSH/PULL)   [workId, b"R" | b"N", frame]   R: a result is awaited
    worker -> distributor (PUSH/PULL)   [b"R", workId, reply frame]     result
                                        [b"A", workId, ...]             done, no result wanted
                                        [b"L", workId, ...]             renew these leases

Work is acknowledged to whoever queued it when ``submit`` returns (the distributor holds it) or,
for ``request``, by its result. Nothing is persisted: a distributor that dies loses its queue.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from typing import Any

import attrs
import trio
import zmq

from ...protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec
from ...protocol.enums import TransportProtocol
from ...protocol.errors import AgentUnavailable, IntentusError
from ...protocol.models import AgentResponse, IntentEnvelope, TransportEnvelope
from ...protocol.versions import negotiate
from ...routing.router import Router
from ..framing import ClientFraming, FrameDispatcher, FrameProtector, request_frame
from ..zmq_trio import TrioSocket
from . import wire
from .endpoints import endpoint
from .pool import ServingPool

log = logging.getLogger("intentus_trio.zeromq.workers")

RESULT = b"R"
NO_RESULT = b"N"
ACK = b"A"
RENEW = b"L"

#: Leases are checked this often relative to ``lease_timeout``.
_REAP_FRACTION = 0.25
#: Acks are sent when the worker runs out of work, or after this many.
ACK_BATCH = 64
#: Worker-side receive queue per unit of concurrency: small, so a dying worker strands little.
_WORKER_PREFETCH = 2


@attrs.define
class DistributorStats:
    submitted: int = 0
    dispatched: int = 0
    completed: int = 0
    redelivered: int = 0
    failed: int = 0
    #: Results or acks for items that were already finished (redelivered duplicates).
    duplicates: int = 0
    #: Result messages that were not understood.
    dropped_malformed: int = 0


@attrs.define(eq=False)
class _Work:
    work_id: bytes
    kind: bytes
    #: The encoded frame, unless ``frame`` is set: then it is sealed anew for each delivery.
    data: bytes
    trace_id: str
    frame: TransportEnvelope | None = None
    attempts: int = 0
    deadline: float = 0.0
    done: trio.Event | None = None
    result: AgentResponse | None = None


class Distributor:
    """The queue between producers and worker processes (see the module docstring)."""

    def __init__(
        self,
        *,
        lease_timeout: float = 30.0,
        max_attempts: int = 5,
        max_queue: int = 10_000,
        protector: FrameProtector | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        hwm: int = 1000,
        prefetch: int = 100,
        heartbeat: float | None = 2.0,
    ) -> None:
        if lease_timeout <= 0 or max_attempts < 1 or max_queue < 1:
            raise ValueError("lease_timeout, max_attempts and max_queue must be positive")
        self.lease_timeout = lease_timeout
        self.max_attempts = max_attempts
        self.max_queue = max_queue
        self.framing = ClientFraming(
            TransportProtocol.ZEROMQ, codec=FrameCodec(max_frame_bytes), protector=protector
        )
        self.stats = DistributorStats()
        self._options = wire.common_options(
            hwm=hwm, max_message_bytes=max_frame_bytes * wire.MAXMSGSIZE_FACTOR,
            heartbeat=heartbeat,
        )
        #: Messages queued towards each worker on this side (``SNDHWM`` of the PUSH socket):
        #: small, so a dying worker strands little and a slow one hoards little.
        self.prefetch = prefetch
        self._ids = itertools.count(1)
        self._pending: deque[_Work] = deque()
        self._leased: dict[bytes, _Work] = {}
        self._work_ready = trio.lowlevel.ParkingLot()
        self._space = trio.lowlevel.ParkingLot()
        self._idle = trio.lowlevel.ParkingLot()
        self._push: TrioSocket | None = None
        self._pull: TrioSocket | None = None

    @property
    def backlog(self) -> int:
        """Items accepted and not finished (queued or leased)."""
        return len(self._pending) + len(self._leased)

    async def wait_idle(self) -> None:
        """Return once every accepted item is finished (the backlog is empty)."""
        while self.backlog:
            await self._idle.park()
        await trio.lowlevel.checkpoint()

    def attach(self, push: TrioSocket, pull: TrioSocket) -> None:
        """Use bound sockets (a node binds them next to its request/reply endpoint)."""
        push.socket.setsockopt(zmq.SNDHWM, self.prefetch)
        self._push, self._pull = push, pull

    async def serve(
        self, work_url: str, results_url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind the two endpoints and run until cancelled (a standalone distributor)."""
        with TrioSocket.open(zmq.PUSH, options=self._options) as push, \
                TrioSocket.open(zmq.PULL, options=self._options) as pull:
            self.attach(push, pull)
            push.socket.bind(work_url)
            pull.socket.bind(results_url)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.run)
                task_status.started((push.socket.getsockopt_string(zmq.LAST_ENDPOINT),
                                     pull.socket.getsockopt_string(zmq.LAST_ENDPOINT)))

    async def run(self) -> None:
        """Dispatch, collect results and expire leases until cancelled."""
        if self._push is None or self._pull is None:
            raise RuntimeError("attach sockets before running the distributor")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dispatch, self._push)
            nursery.start_soon(self._collect, self._pull)
            nursery.start_soon(self._reap)

    # ------------------------------------------------------------------ producers

    async def _enqueue(self, env: IntentEnvelope, kind: bytes) -> _Work:
        while self.backlog >= self.max_queue:
            await self._space.park()
        framing = self.framing
        trace_id = env.metadata.trace_id
        if framing.protector is None:
            work = _Work(b"%x" % next(self._ids), kind, framing.encode_intent(env), trace_id)
        else:
            work = _Work(b"%x" % next(self._ids), kind, b"", trace_id,
                         frame=request_frame(env, framing.protocol))
        self._pending.append(work)
        self.stats.submitted += 1
        self._work_ready.unpark()
        return work

    async def submit(self, env: IntentEnvelope) -> None:
        """Queue ``env`` one-way; on return the distributor holds it until a worker is done.

        Waits while ``max_queue`` items are outstanding (backpressure on producers).
        Raises an IntentusError if the intent cannot be encoded; with a protector, sealing
        happens at each delivery, and an item that cannot be sealed is counted as failed.
        """
        await self._enqueue(env, NO_RESULT)

    async def request(self, env: IntentEnvelope) -> AgentResponse:
        """Queue ``env`` and return a worker's response (an agent handler for the Router)."""
        try:
            work = await self._enqueue(env, RESULT)
        except IntentusError as exc:
            return exc.to_response(trace_id=env.metadata.trace_id)
        work.done = trio.Event()
        try:
            await work.done.wait()
        except BaseException:
            self._abandon(work)
            raise
        assert work.result is not None
        return work.result

    def _abandon(self, work: _Work) -> None:
        """The requester gave up: a queued item is withdrawn, a leased one runs unobserved."""
        try:
            self._pending.remove(work)
        except ValueError:
            work.done = None
            return
        self._released()

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, push: TrioSocket) -> None:
        pending, leased = self._pending, self._leased
        sealing = self.framing.protector is not None
        sent = 0
        while True:
            if not pending:
                await self._work_ready.park()
                continue
            work = pending[0]
            data = work.data
            if sealing:
                if not push.events() & zmq.POLLOUT:
                    # Seal only once the item can leave: a seal made now would age while
                    # waiting, and one dropped would leave its pending binding behind.
                    await push.wait(zmq.POLLOUT)
                    continue
                try:
                    data = self._seal(work)
                except Exception as exc:
                    pending.popleft()
                    self._fail(work, self._sealing_error(work, exc))
                    continue
            try:
                push.send_nowait([work.work_id, work.kind, data])
            except trio.WouldBlock:
                # No worker connected, or every worker's queue is full.
                await push.wait(zmq.POLLOUT)
                continue
            pending.popleft()
            work.attempts += 1
            work.deadline = trio.current_time() + self.lease_timeout
            leased[work.work_id] = work
            self.stats.dispatched += 1
            sent += 1
            if not sent & 255:
                await trio.lowlevel.checkpoint()

    def _seal(self, work: _Work) -> bytes:
        """One delivery's bytes: a fresh seal, so neither age nor redelivery makes a replay."""
        protector = self.framing.protector
        assert protector is not None and work.frame is not None
        # One-way work gets no result: nothing to wait for among the pending requests.
        return self.framing.codec.encode(
            protector.seal(work.frame, expect_reply=work.kind == RESULT))

    @staticmethod
    def _sealing_error(work: _Work, exc: Exception) -> IntentusError:
        """What an item that cannot be sealed fails with; the queue goes on without it."""
        if isinstance(exc, IntentusError):
            return exc
        log.error("sealing work %s failed", work.work_id, exc_info=exc)
        return IntentusError(f"the work could not be sealed: {exc}")

    def _fail(self, work: _Work, error: IntentusError) -> None:
        self.stats.failed += 1
        self.stats.completed += 1
        if work.done is not None:
            work.result = error.to_response(trace_id=work.trace_id)
            work.done.set()
        self._released()

    async def _collect(self, pull: TrioSocket) -> None:
        leased = self._leased
        while True:
            frames = await pull.receive()
            kind = frames[0]
            if kind == ACK and len(frames) > 1:
                for work_id in itertools.islice(frames, 1, None):
                    work = leased.pop(work_id, None) or self._take_requeued(work_id)
                    if work is None:
                        self.stats.duplicates += 1
                    else:
                        self._finish(work, None)
            elif kind == RESULT and len(frames) == 3:
                work = leased.pop(frames[1], None) or self._take_requeued(frames[1])
                if work is None:
                    self.stats.duplicates += 1
                else:
                    self._finish(work, self._decode_result(work, frames[2]))
            elif kind == RENEW:
                deadline = trio.current_time() + self.lease_timeout
                for work_id in itertools.islice(frames, 1, None):
                    work = leased.get(work_id)
                    if work is not None:
                        work.deadline = deadline
            else:
                self.stats.dropped_malformed += 1

    def _take_requeued(self, work_id: bytes) -> _Work | None:
        """An item whose lease ran out and that waits to be sent again, taken off the queue:
        the slow worker finished it after all. Such items sit at the front of the queue."""
        pending = self._pending
        for work in pending:
            if not work.attempts:
                break
            if work.work_id == work_id:
                pending.remove(work)
                return work
        return None

    def _decode_result(self, work: _Work, data: bytes) -> AgentResponse:
        try:
            item = self.framing.decode_reply(data)
        except IntentusError as exc:
            return exc.to_response(trace_id=work.trace_id)
        if isinstance(item, AgentResponse):
            return item
        return AgentResponse.success(item.payload, trace_id=work.trace_id)

    def _finish(self, work: _Work, result: AgentResponse | None) -> None:
        self.stats.completed += 1
        if work.done is not None:
            work.result = result or AgentResponse.success(None, trace_id=work.trace_id)
            work.done.set()
        self._released()

    def _released(self) -> None:
        self._space.unpark()
        if not self.backlog:
            self._idle.unpark_all()

    async def _reap(self) -> None:
        period = self.lease_timeout * _REAP_FRACTION
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            expired = [w for w in self._leased.values() if w.deadline <= now]
            for work in reversed(expired):
                del self._leased[work.work_id]
                if work.attempts >= self.max_attempts:
                    log.warning("work %s failed after %d deliveries", work.work_id,
                                work.attempts)
                    self._fail(work, AgentUnavailable(
                        f"no worker completed the intent in {work.attempts} deliveries",
                        details={"attempts": work.attempts},
                    ))
                    continue
                self.stats.redelivered += 1
                self._pending.appendleft(work)
            if expired:
                self._work_ready.unpark()


# ---------------------------------------------------------------------- worker


@attrs.define
class WorkerStats:
    received: int = 0
    completed: int = 0
    #: One-way intents that could not be decoded or whose agent returned an error (nobody
    #: awaits their response, so this count is where such failures show).
    failed: int = 0
    dropped_malformed: int = 0


class Worker:
    """Pulls intents from a distributor, runs them on ``router``, returns results."""

    def __init__(
        self,
        router: Router,
        *,
        concurrency: int = 16,
        renew_interval: float = 5.0,
        protector: FrameProtector | None = None,
        require_emcl: bool = False,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        heartbeat: float | None = 2.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.renew_interval = renew_interval
        self.dispatcher = FrameDispatcher(
            router, TransportProtocol.ZEROMQ, codec=FrameCodec(max_frame_bytes),
            protector=protector, require_emcl=require_emcl,
        )
        self.stats = WorkerStats()
        self._options = wire.common_options(
            hwm=_WORKER_PREFETCH * concurrency,
            max_message_bytes=max_frame_bytes * wire.MAXMSGSIZE_FACTOR, heartbeat=heartbeat,
        )
        self._running: set[bytes] = set()
        self._acks: list[bytes] = [ACK]
        self._push: TrioSocket | None = None

    async def run(
        self, work_url: str, results_url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        with TrioSocket.open(zmq.PULL, options=self._options) as pull, \
                TrioSocket.open(zmq.PUSH, options=self._options) as push:
            pull.socket.connect(work_url)
            push.socket.connect(results_url)
            self._push = push
            pool = ServingPool(pull, self._run_one, self.concurrency,
                               idle_hook=self._flush_acks)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.run)
                nursery.start_soon(self._renew, push)
                task_status.started()

    async def _run_one(self, frames: list[bytes]) -> None:
        self.stats.received += 1
        if len(frames) != 3:
            self.stats.dropped_malformed += 1
            return
        work_id, kind, data = frames
        dispatcher = self.dispatcher
        self._running.add(work_id)
        try:
            if kind == RESULT:
                reply = await dispatcher.handle_bytes(data)
            else:
                await self._route_one_way(data)
        finally:
            self._running.discard(work_id)
        self.stats.completed += 1
        if kind == RESULT:
            assert self._push is not None
            await self._push.send([RESULT, work_id, reply])
        else:
            self._acks.append(work_id)
            if len(self._acks) > ACK_BATCH:
                await self._flush_acks()

    async def _route_one_way(self, data: bytes) -> None:
        """Nobody awaits the result: route the intent and build no reply frame."""
        dispatcher = self.dispatcher
        try:
            frame, _ = dispatcher.open_request(dispatcher.decode(data))
            negotiate(frame.protocol_negotiation, dispatcher.supported)
        except IntentusError:
            self.stats.failed += 1
            return
        body = frame.body
        if not isinstance(body, IntentEnvelope):
            self.stats.failed += 1
            return
        response = await dispatcher.router.route_intent(body)
        if response.error is not None:
            self.stats.failed += 1

    async def _flush_acks(self) -> None:
        """One ack message for everything finished since the last one."""
        if len(self._acks) > 1 and self._push is not None:
            batch, self._acks = self._acks, [ACK]
            await self._push.send(batch)

    async def _renew(self, push: TrioSocket) -> None:
        while True:
            await trio.sleep(self.renew_interval)
            if self._running:
                await push.send([RENEW, *self._running])


async def run_worker(
    router: Router,
    distributor_url: str,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    work_url: str | None = None,
    results_url: str | None = None,
    **options: Any,
) -> None:
    """Run ``router``'s agents as a worker of the node at ``distributor_url`` until cancelled.

    ``distributor_url`` is the node's request/reply URL; the worker connects to its work and
    results endpoints (``endpoints.py``) unless ``work_url``/``results_url`` are given.
    Options: ``concurrency``, ``renew_interval``, ``protector``, ``require_emcl``,
    ``max_frame_bytes``, ``heartbeat`` (see ``Worker``).
    """
    worker = Worker(router, **options)
    await worker.run(
        work_url or endpoint(distributor_url, "work"),
        results_url or endpoint(distributor_url, "results"),
        task_status=task_status,
    )


__all__ = [
    "Distributor",
    "DistributorStats",
    "Worker",
    "WorkerStats",
    "run_worker",
]
