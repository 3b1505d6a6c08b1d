"""Worker queues with real EMCL: every delivery of an item is sealed afresh.

A seal made when the item was queued went stale while the item waited for a worker, and a
redelivery of the same sealed bytes was refused as a replay by the worker that had opened
them, that refusal becoming the item's result.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import zmq

from intentus_trio.emcl import EmclProtector, Keyring, Role
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import FrameDispatcher
from intentus_trio.transports.zeromq import ZmqServer, open_client, run_worker
from intentus_trio.transports.zeromq.workers import RESULT
from intentus_trio.transports.zmq_trio import TrioSocket

from .zmq_helpers import running_node

TIMEOUT = 20.0


class Group:
    """EMCL endpoints sharing one group key and one wall clock the test can move."""

    def __init__(self) -> None:
        self.now = time.time()
        self.ring = Keyring(clock=self.clock)
        self.ring.add_group_key("g1", generate_master_key())

    def clock(self) -> float:
        return self.now

    def protector(self, agent_id: str, role: Role) -> EmclProtector:
        return EmclProtector(self.ring, agent_id, role=role, clock=self.clock)


@asynccontextmanager
async def sealed_node(group: Group, **options: Any) -> AsyncIterator[ZmqServer]:
    async with running_node(
        Router(name="distributor"), distribute="job", require_emcl=True,
        protector=group.protector("node", Role.SERVER),
        **{"work_protector": group.protector("node", Role.CLIENT), **options},
    ) as server:
        yield server


async def until(predicate: Callable[[], object]) -> None:
    """Poll ``predicate``, which reads counters that other tasks' I/O moves."""
    while not predicate():  # noqa: ASYNC110 (bounded by the caller's fail_after)
        await trio.sleep(0.01)


def start_worker(group: Group, router: Router, url: str, **options: Any) -> Any:
    return partial(run_worker, router, url, require_emcl=True,
                   protector=group.protector("worker", Role.SERVER), **options)


async def test_work_that_waited_longer_than_the_replay_window_still_opens() -> None:
    group = Group()
    worker_router = Router(name="worker")

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        return {"n": env.payload["n"] * 2}

    async with sealed_node(group) as server:
        distributor = server.distributor
        assert distributor is not None
        url = server.urls["rpc"]
        with trio.fail_after(TIMEOUT):
            async with open_client(url, protector=group.protector("c1", Role.CLIENT)) as client, \
                    trio.open_nursery() as nursery:
                responses: list[AgentResponse] = []

                async def call() -> None:
                    responses.append(await client.send_intent(new_intent("job", {"n": 21})))

                nursery.start_soon(call)
                # Queued, with no worker to take it.
                await until(lambda: distributor.stats.submitted)
                group.now += 600  # well past the worker's replay window (120 s)
                await nursery.start(start_worker(group, worker_router, url))
                await until(lambda: responses)
                nursery.cancel_scope.cancel()
    [response] = responses
    assert response.ok, response.error
    assert response.payload == {"n": 42}


async def test_a_slow_workers_result_during_the_redelivery_is_the_result() -> None:
    """The first delivery's reply arrives while the second is leased: it opens and wins."""
    group = Group()
    worker_router = Router(name="worker")
    runs: list[int] = []
    redelivered = trio.Event()

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        runs.append(len(runs) + 1)
        run = len(runs)
        if run == 1:
            await redelivered.wait()
            return {"run": run}
        redelivered.set()
        await trio.sleep_forever()

    async with sealed_node(group, lease_timeout=0.3, max_attempts=20) as server:
        distributor = server.distributor
        assert distributor is not None
        url = server.urls["rpc"]
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                # One worker, renewing no lease: the item comes back to it while it runs.
                await nursery.start(start_worker(group, worker_router, url, renew_interval=60))
                async with open_client(url, protector=group.protector("c1", Role.CLIENT)) \
                        as client:
                    response = await client.send_intent(new_intent("job", {}))
                nursery.cancel_scope.cancel()
    assert response.ok, response.error
    assert response.payload == {"run": 1}
    assert len(runs) >= 2
    assert distributor.stats.redelivered >= 1
    assert distributor.stats.dropped_malformed == 0


async def test_a_slow_workers_result_after_the_redelivery_finished_is_a_duplicate() -> None:
    group = Group()
    worker_router = Router(name="worker")
    runs: list[int] = []
    release_first = trio.Event()

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        runs.append(len(runs) + 1)
        run = len(runs)
        if run == 1:
            await release_first.wait()
        return {"run": run, "n": env.payload["n"]}

    async with sealed_node(group, lease_timeout=0.3, max_attempts=20) as server:
        distributor = server.distributor
        assert distributor is not None
        url = server.urls["rpc"]
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(start_worker(group, worker_router, url, renew_interval=60))
                async with open_client(url, protector=group.protector("c1", Role.CLIENT)) \
                        as client:
                    first = await client.send_intent(new_intent("job", {"n": 1}))
                    release_first.set()
                    await until(lambda: distributor.stats.duplicates)
                    # The late reply harmed nothing: the queue and its bindings still work.
                    after = await client.send_intent(new_intent("job", {"n": 2}))
                nursery.cancel_scope.cancel()
    assert first.ok, first.error
    assert first.payload == {"run": 2, "n": 1}
    assert after.ok, after.error
    assert after.payload is not None and after.payload["n"] == 2
    assert distributor.stats.duplicates >= 1
    assert distributor.stats.dropped_malformed == 0
    assert distributor.backlog == 0


async def test_one_way_work_redelivered_to_the_same_worker_runs_again() -> None:
    group = Group()
    worker_router = Router(name="worker")
    runs: list[int] = []
    done = trio.Event()

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            await done.wait()  # outlives its lease
        else:
            done.set()
        return {}

    async with sealed_node(group, lease_timeout=0.3, max_attempts=20) as server:
        distributor = server.distributor
        assert distributor is not None
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(start_worker(group, worker_router, server.urls["rpc"],
                                                 renew_interval=60))
                await distributor.submit(new_intent("job", {}))
                await distributor.wait_idle()
                nursery.cancel_scope.cancel()
    assert len(runs) >= 2  # a replay refusal does not count as the item done
    assert distributor.stats.failed == 0


async def test_a_result_for_an_item_waiting_to_be_redelivered_is_its_result() -> None:
    """The worker's lease ran out and no worker can take the item again yet; its reply to
    the first delivery, when it comes, finishes the item instead of being dropped."""
    group = Group()
    worker_router = Router(name="worker")

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        return {"n": env.payload["n"] * 2}

    worker = FrameDispatcher(worker_router, TransportProtocol.ZEROMQ, require_emcl=True,
                             protector=group.protector("worker", Role.SERVER))
    async with sealed_node(group, lease_timeout=0.3, max_attempts=20) as server:
        distributor = server.distributor
        assert distributor is not None
        url = server.urls["rpc"]
        with trio.fail_after(TIMEOUT):
            async with open_client(url, protector=group.protector("c1", Role.CLIENT)) as client, \
                    trio.open_nursery() as nursery:
                responses: list[AgentResponse] = []

                async def call() -> None:
                    responses.append(await client.send_intent(new_intent("job", {"n": 21})))

                nursery.start_soon(call)
                with TrioSocket.open(zmq.PULL, linger_ms=0) as pull:
                    pull.socket.connect(server.urls["work"])
                    work_id, _, data = await pull.receive()
                # The only worker is gone: the item goes back to the queue and stays there.
                await until(lambda: distributor.stats.redelivered)
                reply = await worker.handle_bytes(data)
                with TrioSocket.open(zmq.PUSH, linger_ms=1000) as push:
                    push.socket.connect(server.urls["results"])
                    await push.send([RESULT, work_id, reply])
                    await until(lambda: responses or distributor.stats.duplicates)
                nursery.cancel_scope.cancel()
    assert distributor.stats.duplicates == 0
    [response] = responses
    assert response.ok, response.error
    assert response.payload == {"n": 42}
    assert distributor.stats.dispatched == 1
    assert distributor.backlog == 0


async def test_sealed_one_way_work_is_not_held_as_a_pending_request() -> None:
    """No result answers it: held as pending, it would push out the work awaiting results."""
    group = Group()
    worker_router = Router(name="worker")

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        return {}

    work_protector = group.protector("node", Role.CLIENT)
    async with sealed_node(group, work_protector=work_protector) as server:
        distributor = server.distributor
        assert distributor is not None
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(start_worker(group, worker_router, server.urls["rpc"]))
                for _ in range(5):
                    await distributor.submit(new_intent("job", {}))
                await distributor.wait_idle()
                nursery.cancel_scope.cancel()
    assert distributor.stats.completed == 5
    assert len(work_protector.pending) == 0
