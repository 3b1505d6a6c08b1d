"""Node files can start a node as a ZeroMQ worker of a distributing node."""

from __future__ import annotations

import pytest
import trio

from intentus_trio.config import parse_config
from intentus_trio.node import serve_node
from intentus_trio.protocol.factory import new_intent
from intentus_trio.transports.registry import open_transport

pytest.importorskip("zmq")


async def test_worker_node_serves_a_distributor() -> None:
    distributor = parse_config({
        "node": {"name": "distributor"},
        "listeners": [{"url": "tcp://127.0.0.1:0", "options": {"distribute": "job.*"}}],
    })
    async with trio.open_nursery() as nursery:
        front = await nursery.start(serve_node, distributor)
        url = front.urls[0]
        worker = parse_config({
            "node": {"name": "worker"},
            "agents": [{"name": "jobber", "intents": ["job.*"],
                        "handler": "intentus_trio.samples:echo"}],
            "workers": [{"distributor": url}],
        })
        back = await nursery.start(serve_node, worker)
        assert back.distributors == (url,)
        with trio.fail_after(20):
            async with open_transport(url) as client:
                response = await client.send_intent(new_intent("job.echo", {"n": 7}))
        assert response.ok, response.error
        assert response.payload == {"n": 7}
        assert response.metadata["agent"] == "jobber"
        nursery.cancel_scope.cancel()
