"""Which agents handle which intents.

An agent registers intent patterns (``"echo"``, ``"math.*"``, ``"*"``) with an optional
version pattern. Exact names win over patterns, and a more specific pattern (longer literal
prefix) over a vaguer one; ties keep registration order. Lookups are cached per
``(name, version)`` and the cache is dropped whenever the registry changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from fnmatch import fnmatchcase
from typing import Any, TypeAlias

from attrs import frozen

from ..protocol.models import AgentResponse, IntentEnvelope, IntentRef, JsonObject

#: What an ordinary agent returns: a payload, a full response, or nothing.
AgentResult: TypeAlias = JsonObject | AgentResponse | None
AgentHandler: TypeAlias = Callable[[IntentEnvelope], Awaitable[AgentResult]]
#: A streaming agent is an async generator of chunk payloads; it may end with a response.
StreamHandler: TypeAlias = Callable[[IntentEnvelope], AsyncIterator[JsonObject | AgentResponse]]

_WILDCARDS = frozenset("*?[")


def _is_pattern(text: str) -> bool:
    return any(c in _WILDCARDS for c in text)


def _literal_prefix(pattern: str) -> int:
    for i, c in enumerate(pattern):
        if c in _WILDCARDS:
            return i
    return len(pattern)


@frozen
class IntentPattern:
    name: str
    version: str = "*"

    def matches(self, name: str, version: str) -> bool:
        name_ok = name == self.name if not _is_pattern(self.name) else fnmatchcase(name, self.name)
        return name_ok and (self.version == "*" or fnmatchcase(version, self.version))


@frozen(eq=False)
class Registration:
    """One agent: its handler and the intents it serves."""

    agent: str
    intents: tuple[IntentPattern, ...]
    handler: Callable[[IntentEnvelope], Any]
    streaming: bool = False
    #: Seconds the agent may run; None defers to the router's default.
    timeout: float | None = None
    description: str = ""
    #: JSON Schema of the payload this agent accepts (published to MCP and docs).
    input_schema: JsonObject | None = None
    #: A streaming agent's one-shot handler: answers non-streamed calls in one go instead
    #: of the router draining the stream (for agents whose chunks cost something to make,
    #: such as a remote agent's chunks crossing a network).
    call: Callable[[IntentEnvelope], Awaitable[Any]] | None = None

    def handles(self, name: str, version: str) -> bool:
        return any(p.matches(name, version) for p in self.intents)

    def specificity(self, name: str, version: str) -> int:
        """Higher is more specific: exact name beats any pattern."""
        best = -1
        for p in self.intents:
            if p.matches(name, version):
                score = 10_000 if not _is_pattern(p.name) else _literal_prefix(p.name)
                best = max(best, score)
        return best


class Registry:
    """Agents by name, with cached intent resolution."""

    def __init__(self) -> None:
        self._agents: dict[str, Registration] = {}
        self._cache: dict[IntentRef, tuple[Registration, ...]] = {}
        self._listeners: list[Callable[[], None]] = []

    def add(self, registration: Registration) -> None:
        if registration.agent in self._agents:
            raise ValueError(f"agent {registration.agent!r} is already registered")
        self._agents[registration.agent] = registration
        self._changed()

    def remove(self, agent: str) -> Registration:
        try:
            registration = self._agents.pop(agent)
        except KeyError:
            raise KeyError(f"no agent named {agent!r}") from None
        self._changed()
        return registration

    def get(self, agent: str) -> Registration | None:
        return self._agents.get(agent)

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self._agents.values()))

    def __len__(self) -> int:
        return len(self._agents)

    def agents(self) -> list[Registration]:
        return list(self._agents.values())

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every registration change; returns an unsubscribe function."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def resolve(self, name: str, version: str) -> tuple[Registration, ...]:
        """Agents that handle ``name``/``version``, best match first."""
        return self.resolve_ref(IntentRef(name, version))

    def resolve_ref(self, ref: IntentRef) -> tuple[Registration, ...]:
        """``resolve`` for an envelope's IntentRef (which keeps its hash: one lookup)."""
        found = self._cache.get(ref)
        if found is None:
            name, version = ref.name, ref.version
            matches = [r for r in self._agents.values() if r.handles(name, version)]
            matches.sort(key=lambda r: -r.specificity(name, version))  # stable: keeps order
            found = tuple(matches)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[ref] = found
        return found

    def _changed(self) -> None:
        self._cache.clear()
        for callback in list(self._listeners):
            callback()
