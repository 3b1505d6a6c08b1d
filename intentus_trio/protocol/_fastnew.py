"""Positional constructors for slotted frozen attrs classes, for the decoder's hot path.

A frozen attrs ``__init__`` routes every field through ``object.__setattr__``; setting the
slots through their descriptors builds the same object in about two thirds of the time,
which matters when one decoded frame builds nine objects. Only for classes whose fields
have no converters, validators or defaults that must run: the decoder has already checked
every value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

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
