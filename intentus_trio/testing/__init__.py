"""Helpers for deterministic tests of systems built on intentus_trio.

* ``open_test_node`` / ``TestNode`` / ``collect_stream`` — a router with an in-process client.
* ``intentus_trio.testing.pytest_plugin`` — pytest fixtures (``intentus_router``,
  ``intentus_transport``, ``intentus_node``).
* ``MemoryNetwork`` / ``open_memory_network`` — an in-memory datagram network with seeded
  impairments that runs under trio's MockClock.
* ``open_udp_relay`` / ``serve_udp_relay`` — a UDP impairment relay on 127.0.0.1.
"""

from .netsim import LinkConditions, MemoryCarrier, MemoryNetwork, open_memory_network
from .node import TestNode, collect_stream, open_test_node
from .relay import UdpRelay, open_udp_relay, serve_udp_relay

__all__ = [
    "LinkConditions",
    "MemoryCarrier",
    "MemoryNetwork",
    "TestNode",
    "UdpRelay",
    "collect_stream",
    "open_memory_network",
    "open_test_node",
    "open_udp_relay",
    "serve_udp_relay",
]
