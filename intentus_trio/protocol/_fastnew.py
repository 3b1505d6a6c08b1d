"""Positional constructors for slotted frozen attrs classes, and the decoders' shared parts.

A frozen attrs ``__init__`` routes every field through ``object.__setattr__``; setting the
slots through their descriptors builds the same object in about two thirds of the time
(MXP's packet and frame records use it). Only for classes whose fields have no converters,
validators or defaults that must run. The wire models are msgspec structs, whose
constructors are already C; the Python decoder (codec.py) builds them through the names
below and shares the caches of immutable parts and the default routing rules with the
rest of the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from .enums import RoutingStrategy
from .models import (
    DEFAULT_ROUTING,
    DEFAULT_ROUTING_METADATA,
    AgentResponse,
    IntentContext,
    IntentEnvelope,
    IntentMetadata,
    IntentRef,
    ProtocolNegotiation,
    RoutingMetadata,
    RoutingOptions,
    TransportEnvelope,
)

T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """``make(*values)`` equivalent to ``cls(*values)`` with every field given positionally."""
    names = [a.name for a in attrs.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    o = _new(_cls)"]
    for i, name in enumerate(names):
        namespace[f"_set{i}"] = getattr(cls, name).__set__
        lines.append(f"    _set{i}(o, {name})")
    lines.append("    return o")
    exec("\n".join(lines), namespace)
    make: Callable[..., T] = namespace["make"]
    make.__qualname__ = f"fast_constructor({cls.__name__})"
    return make


# The Python decoder's constructors (typed loosely: it checks values its own way), caches
# and shared defaults.
new_ref: Callable[..., IntentRef] = IntentRef
new_routing: Callable[..., RoutingOptions] = RoutingOptions
new_context: Callable[..., IntentContext] = IntentContext
new_metadata: Callable[..., IntentMetadata] = IntentMetadata
new_intent: Callable[..., IntentEnvelope] = IntentEnvelope
new_response: Callable[..., AgentResponse] = AgentResponse
new_frame: Callable[..., TransportEnvelope] = TransportEnvelope

#: Intent names repeat: decoded IntentRefs are immutable and shared (bounded).
REFS: dict[tuple[str, str], IntentRef] = {}
REFS_LIMIT = 4096
#: Decoded negotiation blocks are immutable and few: share them (bounded).
NEGOTIATIONS: dict[tuple[str, str], ProtocolNegotiation] = {}
NEGOTIATIONS_LIMIT = 64


def intent_ref(name: str, version: str) -> IntentRef:
    """The shared IntentRef for (name, version)."""
    key = (name, version)
    ref = REFS.get(key)
    if ref is None:
        ref = new_ref(name, version)
        if len(REFS) < REFS_LIMIT:
            REFS[key] = ref
    return ref


def negotiation(min_version: str, max_version: str) -> ProtocolNegotiation:
    """The shared ProtocolNegotiation for (min, max)."""
    key = (min_version, max_version)
    neg = NEGOTIATIONS.get(key)
    if neg is None:
        neg = ProtocolNegotiation(min_version, max_version)
        if len(NEGOTIATIONS) < NEGOTIATIONS_LIMIT:
            NEGOTIATIONS[key] = neg
    return neg


def routing_options(
    strategy: RoutingStrategy, target: str | None, fallbacks: tuple[str, ...]
) -> RoutingOptions:
    """Routing options, the shared default when they say nothing beyond it."""
    if strategy is RoutingStrategy.DIRECT and target is None and not fallbacks:
        return DEFAULT_ROUTING
    options: RoutingOptions = new_routing(strategy, target, fallbacks)
    return options


def routing_metadata(decision_path: tuple[str, ...], retries: int) -> RoutingMetadata:
    """Routing metadata, the shared default when empty."""
    if not decision_path and not retries:
        return DEFAULT_ROUTING_METADATA
    return RoutingMetadata(decision_path, retries)
