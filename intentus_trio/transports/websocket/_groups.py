"""Exception-group hygiene for the context managers this package hands to users.

Nurseries wrap whatever escapes them in an ExceptionGroup. A user of ``open_client`` or
``serve`` should see the one exception that happened, not a group around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


@contextmanager
def single_exceptions() -> Iterator[None]:
    """Re-raise a group holding one exception (possibly nested) as that exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            leaf = leaves[0]
            context = leaf.__context__
            try:
                raise leaf
            finally:
                leaf.__context__ = context
                del leaf, context
        raise
