"""Worker queues: a distributing node, worker processes, leases and redelivery."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import zmq

from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.zeromq import WORKERS_AGENT, ZmqServer, open_client, run_worker
from intentus_trio.transports.zmq_trio import TrioSocket

from ..protectors import StandInProtector
from .zmq_helpers import URL, running_node

TIMEOUT = 20.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerProcess:
    def __init__(self, process: trio.Process, lines: trio.MemoryReceiveChannel[str]) -> None:
        self.process = process
        self.lines = lines

    async def expect(self, prefix: str) -> str:
        async for line in self.lines:
            if line.startswith(prefix):
                return line
        raise AssertionError(f"worker exited before printing {prefix!r}")


@asynccontextmanager
async def worker_process(url: str, mode: str) -> AsyncIterator[WorkerProcess]:
    send, receive = trio.open_memory_channel[str](1000)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.transports.zmq_worker_proc", url, mode],
        cwd=ROOT, stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    stdout = process.stdout

    async def pump() -> None:
        buffer = b""
        async with send:
            async for chunk in stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    await send.send(line.decode())

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            worker = WorkerProcess(process, receive)
            await worker.expect("ready")
            yield worker
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def node_router() -> Router:
    return Router(name="distributor")  # no local agents: every job goes to the workers


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
async def test_requests_run_on_an_in_process_worker(scheme: str) -> None:
    url = URL if scheme == "tcp" else f"ipc://{tempfile.mkdtemp()}/node"
    worker_router = Router(name="worker")

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        return {"n": env.payload["n"] * 2}

    async with running_node(node_router(), url, distribute="job") as server:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(run_worker, worker_router, server.urls["rpc"])
                async with open_client(server.urls["rpc"]) as client:
                    response = await client.send_intent(new_intent("job", {"n": 21}))
                    assert response.ok and response.payload == {"n": 42}
                    # A worker's error response comes back unchanged.
                    missing = await client.send_intent(new_intent("job", {}))
                    assert missing.error is not None
                    assert missing.error.code is ErrorCode.INTERNAL_AGENT_ERROR
                nursery.cancel_scope.cancel()
        assert server.distributor is not None
        assert server.distributor.stats.completed == 2
    assert server.router.registry.get(WORKERS_AGENT) is None


async def test_one_way_submissions_are_all_done_by_two_worker_processes() -> None:
    async with running_node(node_router(), distribute="job") as server:
        distributor = server.distributor
        assert distributor is not None
        with trio.fail_after(TIMEOUT):
            async with worker_process(server.urls["rpc"], "echo"), \
                    worker_process(server.urls["rpc"], "echo"):
                for n in range(500):
                    await distributor.submit(new_intent("job", {"n": n}))
                await distributor.wait_idle()
        assert distributor.stats.completed == 500
        assert distributor.stats.redelivered == 0


async def test_killed_worker_loses_no_acknowledged_work() -> None:
    async with running_node(node_router(), distribute="job", lease_timeout=1.0) as server:
        distributor = server.distributor
        assert distributor is not None
        url = server.urls["rpc"]
        results: dict[int, AgentResponse] = {}
        all_done = trio.Event()
        with trio.fail_after(TIMEOUT):
            async with open_client(url) as client, trio.open_nursery() as calls:

                async def call(n: int) -> None:
                    results[n] = await client.send_intent(new_intent("job", {"n": n}))
                    if len(results) == 6:
                        all_done.set()

                async with worker_process(url, "hold") as doomed:
                    for n in range(6):
                        calls.start_soon(call, n)
                    await doomed.expect("started")  # it holds work, then dies
                    doomed.process.kill()
                async with worker_process(url, "echo") as survivor:
                    pid = survivor.process.pid
                    await all_done.wait()
        assert sorted(results) == list(range(6))
        assert all(r.ok and r.payload == {"pid": pid, "n": n} for n, r in results.items())
        assert distributor.stats.redelivered >= 1


async def test_work_nobody_completes_fails_after_max_attempts() -> None:
    """A 'worker' that takes work and never answers nor renews: each lease runs out."""
    async with running_node(node_router(), distribute="job", lease_timeout=0.3,
                            max_attempts=2) as server:
        url = server.urls["rpc"]
        black_hole = TrioSocket.open(zmq.PULL, linger_ms=0)
        black_hole.socket.connect(server.urls["work"])
        with black_hole, trio.fail_after(TIMEOUT):
            async with open_client(url) as client:
                response = await client.send_intent(new_intent("job", {"n": 1}))
            taken = [await black_hole.receive(), await black_hole.receive()]
        assert taken[0] == taken[1]  # the same item, delivered twice
        assert response.error is not None
        assert response.error.code is ErrorCode.AGENT_UNAVAILABLE
        assert server.distributor is not None
        assert server.distributor.stats.failed == 1
        assert server.distributor.stats.redelivered == 1


def test_a_distributing_node_with_emcl_must_say_how_work_is_sealed() -> None:
    with pytest.raises(ValueError, match="work_protector"):
        ZmqServer(node_router(), distribute="job", protector=StandInProtector())
    ZmqServer(node_router(), distribute="job", protector=StandInProtector(),
              work_protector=StandInProtector())


async def test_a_worker_requiring_emcl_refuses_plaintext_work() -> None:
    worker_router = Router(name="worker")
    ran: list[int] = []

    @worker_router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        ran.append(env.payload["n"])
        return {}

    async with running_node(node_router(), distribute="job") as server:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(run_worker, worker_router, server.urls["rpc"],
                                            protector=StandInProtector(), require_emcl=True))
                async with open_client(server.urls["rpc"]) as client:
                    response = await client.send_intent(new_intent("job", {"n": 1}))
                nursery.cancel_scope.cancel()
    assert response.error is not None and response.error.code is ErrorCode.EMCL_FAILURE
    assert ran == []
