from __future__ import annotations

import pytest

from intentus_trio.emcl import Emcl, EmclProtector, Keyring, Role
from intentus_trio.keys import generate_master_key

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    """A settable Unix clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def group_keyring(clock: FakeClock) -> Keyring:
    ring = Keyring(clock=clock)
    ring.add_group_key("g1", generate_master_key())
    return ring


@pytest.fixture
def pair(group_keyring: Keyring) -> tuple[Emcl, Emcl]:
    """Two engines sharing one group key."""
    return Emcl(group_keyring, "alice"), Emcl(group_keyring, "bob")


@pytest.fixture
def protectors(group_keyring: Keyring) -> tuple[EmclProtector, EmclProtector]:
    """A client and a server protector sharing one group key."""
    return (EmclProtector(group_keyring, "client", role=Role.CLIENT),
            EmclProtector(group_keyring, "server", role=Role.SERVER))
