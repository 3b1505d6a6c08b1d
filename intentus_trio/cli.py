"""The ``intentus-trio`` command: ``demo``, ``serve``, ``send`` (and ``keygen`` with EMCL).

Each subcommand is a small function over the public API, so new transports appear in
``demo``, ``serve`` and ``send`` as soon as their URL scheme is in the transport registry.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio
from attrs import define, field

from . import __version__
from .config import MAX_TIMEOUT, ConfigError, NodeConfig, build_router, load_config
from .node import serve_node
from .protocol.codec import response_to_json
from .protocol.errors import IntentusError
from .protocol.factory import new_event, new_intent
from .protocol.models import AgentResponse, StreamChunk
from .routing.router import Router
from .samples import register_samples
from .transports.base import Transport
from .transports.inprocess import InProcessTransport
from .transports.registry import UnknownScheme, open_transport, server_for

#: (row name, listen URL) of every transport the demo tries; None means in-process.
DEMO_TARGETS: tuple[tuple[str, str | None], ...] = (
    ("in-process", None),
    ("http", "http://127.0.0.1:0"),
    ("websocket", "ws://127.0.0.1:0"),
    ("zeromq", "tcp://127.0.0.1:0"),
    ("mxp", "mxp://127.0.0.1:0"),
)


# --------------------------------------------------------------------------- demo


@define
class DemoRow:
    name: str
    status: str = "ok"
    latencies: list[float] = field(factory=list)
    stream: str = "-"
    events: str = "-"

    def cells(self) -> list[str]:
        if not self.latencies:
            return [self.name, "-", "-", "-", self.stream, self.events, self.status]
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return [self.name, f"{statistics.median(ordered) * 1e6:,.1f}", f"{p99 * 1e6:,.1f}",
                str(len(ordered)), self.stream, self.events, self.status]


async def _exercise(transport: Transport, row: DemoRow, calls: int) -> None:
    env = new_intent("echo", {"text": "x" * 64})
    for _ in range(calls):
        start = time.perf_counter()
        response = await transport.send_intent(env)
        row.latencies.append(time.perf_counter() - start)
        if not response.ok:
            row.status = f"error: {response.error.code if response.error else '?'}"
            return
    chunks = 0
    final: AgentResponse | None = None
    async with aclosing(transport.send_stream(new_intent("count", {"n": 5}))) as items:
        async for item in items:
            if isinstance(item, StreamChunk):
                chunks += 1
            else:
                final = item
    row.stream = f"{chunks} chunks" if final is not None and final.ok else "failed"
    async with transport.subscribe("demo.tick") as events:
        with trio.move_on_after(5):
            # Publish until the subscription (which may travel over the network) sees one.
            async with trio.open_nursery() as nursery:
                async def publish_until_seen() -> None:
                    while True:
                        await transport.publish(new_event("demo.tick", {"n": 1}))
                        await trio.sleep(0.05)

                nursery.start_soon(publish_until_seen)
                async for _event in events:
                    row.events = "delivered"
                    nursery.cancel_scope.cancel()
                    break
        if row.events == "-":
            row.events = "not delivered"


async def _demo_row(router: Router, nursery: trio.Nursery, name: str, url: str | None,
                    calls: int) -> DemoRow:
    row = DemoRow(name)
    try:
        if url is None:
            client: AbstractAsyncContextManager[Any] = InProcessTransport(router)
        else:
            bound = await nursery.start(server_for(url), router, url)
            row.name = f"{name} ({bound})"
            client = open_transport(bound)
        with trio.fail_after(60):
            async with client as transport:
                await _exercise(transport, row, calls)
    except UnknownScheme as exc:
        row.status = f"unavailable: {exc}"
    except (IntentusError, OSError, trio.TooSlowError) as exc:
        row.status = f"failed: {type(exc).__name__}: {exc}"
    return row


async def run_demo(calls: int, only: Sequence[str] | None = None) -> list[DemoRow]:
    router = register_samples(Router(name="demo"))
    rows = []
    async with trio.open_nursery() as nursery:
        for name, url in DEMO_TARGETS:
            if only and name not in only:
                continue
            rows.append(await _demo_row(router, nursery, name, url, calls))
        nursery.cancel_scope.cancel()
    return rows


def _print_table(rows: list[DemoRow]) -> None:
    header = ["transport", "median µs", "p99 µs", "calls", "stream", "events", "status"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(r)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cmd_demo(args: argparse.Namespace) -> int:
    only = args.only.split(",") if args.only else None
    names = [name for name, _ in DEMO_TARGETS]
    unknown = [name for name in only or () if name not in names]
    if unknown:
        print(f"error: --only: no transport named {', '.join(map(repr, unknown))} "
              f"(known: {', '.join(names)})", file=sys.stderr)
        return 2
    rows = trio.run(run_demo, args.calls, only)
    print(f"intentus-trio {__version__} demo: echo round trips, a 5-chunk stream and one event"
          " per transport\n")
    _print_table(rows)
    return 0 if all(r.status == "ok" or r.status.startswith("unavailable") for r in rows) else 1


# --------------------------------------------------------------------------- errors


def _errors(*classes: type[BaseException], optional: Sequence[str] = ()
            ) -> tuple[type[BaseException], ...]:
    """``classes`` and those ``optional`` (``module:Class``) of optional dependencies that are
    imported, so the CLI catches them without importing an extra the command does not use.
    Evaluated in the ``except`` clause: the transport imports its dependency as it opens."""
    found = list(classes)
    for name in optional:
        module, _, attribute = name.partition(":")
        cls = getattr(sys.modules.get(module), attribute, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line, after its notes (the node file entry that failed to start)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return "".join(f"{note}: " for note in getattr(exc, "__notes__", ())) + text


# --------------------------------------------------------------------------- serve


async def _serve(config: NodeConfig, router: Router, source: str) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                node = await nursery.start(partial(serve_node, config, router=router))
            except _errors(ConfigError, UnknownScheme, OSError, IntentusError, ValueError,
                           optional=("zmq:ZMQError",)) as exc:
                # Which entry of which file could not start (a taken port, a key file).
                print(f"error: {source}: {_one_line(exc)}", file=sys.stderr)
                nursery.cancel_scope.cancel()
                return 2
            agents = ", ".join(r.agent for r in node.router.registry.agents()) or "none"
            print(f"node {config.node.name!r} serving agents: {agents}", flush=True)
            for url in node.urls:
                print(f"listening on {url}", flush=True)
            for url in node.distributors:
                print(f"working for {url}", flush=True)
            async for signum in signals:
                print(f"received {signal.Signals(signum).name}, shutting down", flush=True)
                nursery.cancel_scope.cancel()
                break
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # Reading the file and importing the agents block, so both happen before trio starts.
    try:
        config = load_config(args.config)  # its errors name the file
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        router = build_router(config)
    except ConfigError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    return trio.run(_serve, config, router, args.config)


# --------------------------------------------------------------------------- send


async def _send(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(payload, dict):
        print("error: --payload must be a JSON object", file=sys.stderr)
        return 2
    env = new_intent(args.intent, payload, target_agent=args.target, source="intentus-trio-cli")
    async with AsyncExitStack() as stack:
        try:
            urlsplit(args.url).port  # noqa: B018 -- a malformed port, whatever the transport
            transport = await stack.enter_async_context(open_transport(args.url))
        except _errors(ValueError, OSError, optional=("httpx:InvalidURL", "zmq:ZMQError")
                       ) as exc:
            # A transport checks its URL as it opens (UnknownScheme is a ValueError too);
            # failures to reach the node come later, as error responses.
            print(f"error: {args.url}: {_one_line(exc)}", file=sys.stderr)
            return 2
        if args.stream:
            final: AgentResponse | None = None
            async with aclosing(transport.send_stream(env, timeout=args.timeout)) as items:
                async for item in items:
                    if isinstance(item, StreamChunk):
                        print(json.dumps({"chunk": item.seq, "payload": item.payload}))
                    else:
                        final = item
            response = final
        else:
            response = await transport.send_intent(env, timeout=args.timeout)
    if response is None:
        print("error: the stream ended without a response", file=sys.stderr)
        return 1
    print(json.dumps(response_to_json(response), indent=2))
    return 0 if response.ok else 1


def cmd_send(args: argparse.Namespace) -> int:
    return trio.run(_send, args)


# --------------------------------------------------------------------------- main


def _seconds(text: str) -> float:
    """A deadline: positive seconds up to a year, or inf for none. NaN or <= 0 cannot be
    waited for, and a finite deadline beyond ``MAX_TIMEOUT`` is surely a typo."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text!r}")
    if MAX_TIMEOUT < value < math.inf:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_TIMEOUT:.0f} seconds (a year; inf for none), not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intentus-trio",
                                     description="Trio transport fabric for AI agents.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run sample agents over every available transport")
    demo.add_argument("--calls", type=int, default=500, help="echo calls per transport")
    demo.add_argument("--only", help="comma-separated transport names, e.g. in-process,http")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="run a node described by a TOML file")
    serve.add_argument("--config", required=True, help="path of the node's TOML file")
    serve.set_defaults(func=cmd_serve)

    send = sub.add_parser("send", help="send one intent to a node and print the response")
    send.add_argument("url", help="the node's URL, e.g. http://127.0.0.1:8080")
    send.add_argument("intent", help="intent name")
    send.add_argument("--payload", default="{}", help="JSON object (default {})")
    send.add_argument("--target", help="routing.targetAgent")
    send.add_argument("--stream", action="store_true", help="request a streamed reply")
    send.add_argument("--timeout", type=_seconds, default=30.0,
                      help="seconds, at most a year; inf for none (default 30)")
    send.set_defaults(func=cmd_send)

    try:
        from .emcl.cli import add_keygen_parser  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        add_keygen_parser(sub)
    # The mcp subcommand module imports the SDK only when the command runs.
    from .mcp.cli import add_mcp_parser

    add_mcp_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
