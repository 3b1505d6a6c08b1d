"""Node files can start a node as a ZeroMQ worker of a distributing node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from intentus_trio import ErrorCode
from intentus_trio.config import ConfigError, parse_config
from intentus_trio.keys import generate_master_key, write_key_file
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


async def test_sealed_work_needs_emcl_on_both_sides(tmp_path: Path) -> None:
    key = tmp_path / "g1.key"
    write_key_file(key, generate_master_key(), "symmetric")
    keys = {"group_keys": {"g1": str(key)}}
    distributor = parse_config({
        "node": {"name": "distributor"}, "emcl": keys,
        "listeners": [{"url": "tcp://127.0.0.1:0", "emcl": "on",
                       "options": {"distribute": "job.*"}}],
    })

    def worker(**extra: Any) -> dict[str, Any]:
        return {"node": {"name": "worker"},
                "agents": [{"name": "jobber", "intents": ["job.*"],
                            "handler": "intentus_trio.samples:echo"}],
                "workers": [{"distributor": url, **extra}]}

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            front = await nursery.start(serve_node, distributor)
            url = front.urls[0]
            async with trio.open_nursery() as inner:  # a worker without EMCL cannot open it
                await inner.start(serve_node, parse_config(worker()))
                async with open_transport(url) as client:
                    refused = await client.send_intent(new_intent("job.echo", {"n": 1}))
                assert refused.error is not None
                assert refused.error.code is ErrorCode.EMCL_FAILURE
                inner.cancel_scope.cancel()
            await nursery.start(serve_node, parse_config({**worker(emcl="required"),
                                                          "emcl": keys}))
            async with open_transport(url) as client:
                response = await client.send_intent(new_intent("job.echo", {"n": 7}))
            assert response.ok, response.error
            assert response.payload == {"n": 7}
            nursery.cancel_scope.cancel()


def test_a_worker_with_emcl_needs_keys() -> None:
    with pytest.raises(ConfigError, match=r"config.workers\[0\]: emcl needs an \[emcl\]"):
        parse_config({"workers": [{"distributor": "tcp://127.0.0.1:5555", "emcl": "on"}]})
