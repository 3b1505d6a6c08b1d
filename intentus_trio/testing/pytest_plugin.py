"""pytest fixtures for testing agents built on intentus_trio.

Enable with ``pytest_plugins = ["intentus_trio.testing.pytest_plugin"]`` in a conftest.py,
together with pytest-trio (``trio_mode = true``). Combine with pytest-trio's
``autojump_clock`` fixture so agent timeouts and sleeps run instantly and deterministically.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ..routing.router import Router
from ..transports.inprocess import InProcessTransport
from .node import TestNode, open_test_node


@pytest.fixture
def intentus_router() -> Router:
    """An empty Router."""
    return Router(name="test-router")


@pytest.fixture
async def intentus_transport(intentus_router: Router) -> AsyncIterator[InProcessTransport]:
    """An InProcessTransport in front of ``intentus_router``."""
    async with InProcessTransport(intentus_router) as transport:
        yield transport


@pytest.fixture
async def intentus_node() -> AsyncIterator[TestNode]:
    """A TestNode with the sample agents registered."""
    async with open_test_node() as node:
        yield node
