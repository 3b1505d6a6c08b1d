"""Exception groups that hold a single exception are unwrapped before users see them.

Nurseries wrap whatever escapes them in an ExceptionGroup; a user of ``open_client``,
``serve`` or any other context manager of this package should see the one exception that
happened, not a group around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def lone_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one leaf exception of a chain of single-member groups, else None."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise the lone exception of a single-member group raised inside the block."""
    try:
        yield
    except BaseExceptionGroup as group:
        lone = lone_exception(group)
        if lone is None:
            raise
        context = lone.__context__
        try:
            raise lone
        finally:
            lone.__context__ = context
            del lone, context
