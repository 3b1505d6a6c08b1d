"""``intentus-trio mcp --config FILE``: a node's agents as an MCP server.

Over stdio by default (an MCP client such as a desktop assistant starts this command and
speaks MCP on its stdin/stdout), or over Streamable HTTP with ``--http URL``. The node file is
the usual TOML of ``intentus_trio.config``: its local agents and remotes become tools, and
its listeners serve IntentusNet clients as usual. Nothing but MCP is ever written to stdout;
diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from ..config import ConfigError, build_router, load_config
from ..node import serve_node
from ..protocol.errors import IntentusError
from ..transports.registry import UnknownScheme


def add_mcp_parser(subparsers: Any) -> None:
    """Add the ``mcp`` subcommand to the ``intentus-trio`` parser's subparsers."""
    parser = subparsers.add_parser(
        "mcp", help="serve a node's agents as MCP tools (stdio, or Streamable HTTP)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    _arguments(parser)
    parser.set_defaults(func=cmd_mcp)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="path of the node's TOML file")
    parser.add_argument("--http", metavar="URL",
                        help="serve Streamable HTTP at URL (e.g. http://127.0.0.1:8000/mcp) "
                             "instead of stdio")
    parser.add_argument("--no-validate", action="store_true",
                        help="do not check arguments against the agents' input schemas")
    parser.add_argument("--listed-only", action="store_true",
                        help="refuse calls to names that only wildcard registrations match")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")


async def run_mcp(args: argparse.Namespace) -> int:
    """Run the MCP server described by ``args`` (see ``add_mcp_parser``)."""
    from .server import serve_http, serve_stdio

    try:
        # Reading the file and importing the agents block: done in a worker thread.
        config = await trio.to_thread.run_sync(load_config, args.config)
        router = await trio.to_thread.run_sync(build_router, config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {"validate_input": not args.no_validate,
                               "route_unlisted": not args.listed_only}
    async with trio.open_nursery() as nursery:
        try:
            node = await nursery.start(partial(serve_node, config, router=router))
            if args.http:
                url = await nursery.start(_serve_http, serve_http, node.router, args.http, options)
        except (ConfigError, UnknownScheme, OSError, ValueError, IntentusError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            nursery.cancel_scope.cancel()
            return 2
        if not args.http:
            await serve_stdio(node.router, **options)
            nursery.cancel_scope.cancel()
            return 0
        print(f"MCP over Streamable HTTP at {url}", file=sys.stderr, flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()
    return 0


async def _serve_http(
    serve: Any, router: Any, url: str, options: dict[str, Any],
    *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(router, url, task_status=task_status, **options)


def cmd_mcp(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    return trio.run(run_mcp, args)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m intentus_trio.mcp --config FILE [--http URL]``."""
    parser = argparse.ArgumentParser(prog="python -m intentus_trio.mcp",
                                     description="Serve a node's agents as MCP tools.")
    _arguments(parser)
    return cmd_mcp(parser.parse_args(argv))
