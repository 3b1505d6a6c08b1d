"""WebSocket transport benchmark, against bare trio-websocket measured in the same run.

* sequential round trip of a ~1 KB frame: ours (intent -> router -> echo agent -> response
  on a persistent connection) vs a bare trio-websocket echo of the same text; blocks of the
  two alternate so machine noise hits both alike. Also measured in the same blocks: a bare
  trio-websocket echo whose two ends do the shared frame work (client encode and decode,
  server decode, route, encode) inline, i.e. the least any transport built on
  trio-websocket and this package's codec pays;
* 1,000 concurrent calls in flight on one connection: all must succeed; throughput;
* event fan-out: one publisher, 100 subscriber connections; events/s delivered.

Server and clients share one trio run on 127.0.0.1. Usage:
``python benchmarks/bench_websocket.py [--quick]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from trio_websocket import WebSocketRequest, open_websocket_url, serve_websocket
from wsproto.frame_protocol import FrameProtocol

from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import ClientFraming, FrameDispatcher
from intentus_trio.transports.websocket import WebSocketServer, open_client


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


def one_kb_intent() -> IntentEnvelope:
    env = new_intent("echo", {"data": ""})
    size = len(ClientFraming(TransportProtocol.WEBSOCKET).encode_intent(env, request_id="1"))
    return new_intent("echo", {"data": "x" * max(0, 1024 - size)})


async def echo_handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        try:
            await ws.send_message(await ws.get_message())
        except Exception:
            return


def framed_echo_handler(router: Router) -> Callable[[WebSocketRequest], Awaitable[None]]:
    """A bare trio-websocket server doing the shared frame work inline."""
    dispatcher = FrameDispatcher(router, TransportProtocol.WEBSOCKET)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        while True:
            try:
                frame = dispatcher.decode(await ws.get_message())
                reply = await dispatcher.handle_frame(frame)
                await ws.send_message(dispatcher.codec.encode(reply).decode())
            except Exception:
                return

    return handler


async def sequential(
    router: Router, url: str, base_url: str, framed_url: str, rounds: int, per_round: int
) -> dict[str, float]:
    env = one_kb_intent()
    client_framing = ClientFraming(TransportProtocol.WEBSOCKET)
    text = client_framing.encode_intent(env, request_id="1").decode()
    dispatcher = FrameDispatcher(router, TransportProtocol.WEBSOCKET)
    ours: list[float] = []
    bare: list[float] = []
    # The shared frame work alone, no I/O: client encode, server decode + route + encode,
    # client decode. Any transport of this package pays it.
    framing: list[float] = []
    # The WebSocket protocol work of one echo, no I/O (both sides pay it): the client
    # frames (masks) the text, the server parses it, frames the reply, the client parses.
    protocol: list[float] = []
    client_ws, server_ws = FrameProtocol(True, []), FrameProtocol(False, [])
    clock = time.perf_counter
    # Process CPU time (user + system) per block: less sensitive than wall time to other
    # programs taking the CPU away, which a shared machine does all the time.
    cpu = {"bare": 0.0, "ours": 0.0}

    def cpu_now() -> float:
        t = os.times()
        return t.user + t.system

    framed: list[float] = []
    async with open_client(url) as client, open_websocket_url(base_url) as ws, \
            open_websocket_url(framed_url) as framed_ws:
        for _ in range(100):  # warm-up
            await client.send_intent(env)
            await ws.send_message(text)
            await ws.get_message()
        for _ in range(rounds):
            c = cpu_now()
            for _ in range(per_round):
                t = clock()
                await ws.send_message(text)
                await ws.get_message()
                bare.append(clock() - t)
            c, cpu["bare"] = cpu_now(), cpu["bare"] + cpu_now() - c
            for _ in range(per_round):
                t = clock()
                response = await client.send_intent(env)
                ours.append(clock() - t)
                assert response.ok
            cpu["ours"] += cpu_now() - c
            for i in range(per_round):
                t = clock()
                request = client_framing.encode_intent(env, request_id=str(i),
                                                       headers={"timeoutMs": "30000"})
                await framed_ws.send_message(request.decode())
                client_framing.decode_reply(await framed_ws.get_message())
                framed.append(clock() - t)
            for i in range(per_round):
                t = clock()
                request = client_framing.encode_intent(env, request_id=str(i),
                                                       headers={"timeoutMs": "30000"})
                reply = await dispatcher.handle_frame(dispatcher.decode(request.decode()))
                client_framing.decode_reply(dispatcher.codec.encode(reply))
                framing.append(clock() - t)
            for _ in range(per_round):
                t = clock()
                server_ws.receive_bytes(client_ws.send_data(text, True))
                list(server_ws.received_frames())
                client_ws.receive_bytes(server_ws.send_data(text, True))
                list(client_ws.received_frames())
                protocol.append(clock() - t)
    b, o, f = statistics.median(bare), statistics.median(ours), statistics.median(framing)
    p = statistics.median(protocol)
    fb = statistics.median(framed)
    return {
        "frame_bytes": len(text),
        "baseline_median_us": round(b * 1e6, 1),
        "ours_median_us": round(o * 1e6, 1),
        "ours_p99_us": round(sorted(ours)[int(len(ours) * 0.99)] * 1e6, 1),
        "ratio": round(o / b, 3),
        "baseline_cpu_us": round(cpu["bare"] / len(bare) * 1e6, 1),
        "ours_cpu_us": round(cpu["ours"] / len(ours) * 1e6, 1),
        "cpu_ratio": round(cpu["ours"] / cpu["bare"], 3),
        "framing_us": round(f * 1e6, 1),
        "floor_ratio": round((b + f) / b, 3),
        # What this transport costs beyond the shared frame work, against the bare echo.
        "ratio_without_framing": round((o - f) / b, 3),
        "framed_baseline_median_us": round(fb * 1e6, 1),
        "framed_baseline_ratio": round(fb / b, 3),
        "ratio_vs_framed_baseline": round(o / fb, 3),
        "protocol_us": round(p * 1e6, 1),
    }


async def concurrent(url: str, calls: int, repeats: int) -> dict[str, float]:
    env = one_kb_intent()
    rates = []
    async with open_client(url) as client:
        for _ in range(repeats):
            ok = 0

            async def one() -> None:
                nonlocal ok
                if (await client.send_intent(env)).ok:
                    ok += 1

            t = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(calls):
                    nursery.start_soon(one)
            elapsed = time.perf_counter() - t
            if ok != calls:
                raise SystemExit(f"lost calls: {calls - ok} of {calls}")
            rates.append(calls / elapsed)
    return {"concurrent_calls": calls, "lost": 0,
            "calls_per_s": round(statistics.median(rates))}


async def fan_out(url: str, subscribers: int, events: int) -> dict[str, float]:
    received = 0
    dropped = 0
    all_subscribed = trio.Event()
    done = trio.Event()
    ready = 0

    async def subscriber() -> None:
        nonlocal received, ready, dropped
        async with open_client(url, subscription_buffer=events) as client, \
                client.subscribe("bench.tick") as sub:
            ready += 1
            if ready == subscribers:
                all_subscribed.set()
            count = 0
            async for _ in sub:
                count += 1
                received += 1
                if count + sub.dropped >= events:
                    break
            dropped += sub.dropped
            if received + dropped >= subscribers * events:
                done.set()

    async with trio.open_nursery() as nursery:
        for _ in range(subscribers):
            nursery.start_soon(subscriber)
        await all_subscribed.wait()
        async with open_client(url) as publisher:
            t = time.perf_counter()
            for i in range(events):
                await publisher.publish(new_event("bench.tick", {"i": i}))
            await done.wait()
            elapsed = time.perf_counter() - t
    return {"subscribers": subscribers, "events": events, "delivered": received,
            "dropped": dropped, "events_delivered_per_s": round(received / elapsed)}


async def main(quick: bool) -> None:
    router = Router(name="bench")
    router.register("echo", "echo", echo)
    events = 200 if quick else 1000
    server = WebSocketServer(router, "ws://127.0.0.1:0/", subscription_buffer=events)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        base = await nursery.start(partial(serve_websocket, echo_handler, "127.0.0.1", 0, None))
        base_url = f"ws://127.0.0.1:{base.port}/"
        framed = await nursery.start(partial(
            serve_websocket, framed_echo_handler(router), "127.0.0.1", 0, None))
        framed_url = f"ws://127.0.0.1:{framed.port}/"
        seq = await sequential(router, url, base_url, framed_url,
                               6 if quick else 20, 100 if quick else 250)
        print(f"sequential 1 KB round trip: bare trio-websocket {seq['baseline_median_us']} us, "
              f"ours {seq['ours_median_us']} us (p99 {seq['ours_p99_us']} us), "
              f"ratio {seq['ratio']} (target <= 1.2); CPU per round trip "
              f"{seq['baseline_cpu_us']} vs {seq['ours_cpu_us']} us, ratio {seq['cpu_ratio']}")
        print(f"shared frame work alone (encode, decode, route; no I/O): {seq['framing_us']} us "
              f"per call = ratio floor {seq['floor_ratio']} over the bare echo; without it "
              f"the ratio would be {seq['ratio_without_framing']}")
        print(f"bare trio-websocket echo doing the shared frame work inline: "
              f"{seq['framed_baseline_median_us']} us = ratio {seq['framed_baseline_ratio']}; "
              f"ours against it: {seq['ratio_vs_framed_baseline']}")
        print(f"WebSocket protocol work of one echo (wsproto, both sides; no I/O): "
              f"{seq['protocol_us']} us, inside both figures")
        conc = await concurrent(url, 1000, 1 if quick else 5)
        print(f"1000 concurrent calls on one connection: {conc['calls_per_s']} calls/s, "
              "none lost")
        fan = await fan_out(url, 100, events)
        print(f"fan-out to 100 subscribers: {fan['events_delivered_per_s']} events/s delivered "
              f"({fan['delivered']} delivered, {fan['dropped']} dropped)")
        nursery.cancel_scope.cancel()
    print(json.dumps({"benchmark": "websocket", "quick": quick, **seq, **conc, **fan}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    trio.run(main, parser.parse_args().quick)
