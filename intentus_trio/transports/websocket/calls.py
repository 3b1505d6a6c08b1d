"""Client-side places where replies land: one per in-flight call, one per subscription.

The connection's reader task must never wait on a consumer (one slow consumer would stall
every call on the connection), so each place accepts items without blocking: a unary call
holds one reply; a stream holds at most its window of chunks (the server sends no more than
the credit the client granted); a subscription keeps a bounded buffer that drops its oldest
event when full, and counts what it dropped.
"""

from __future__ import annotations

import trio

from ...protocol.errors import ConnectionFailure, IntentusError, ProtocolError, TransportTimeout
from ...protocol.models import AgentResponse, Event, StreamChunk
from ..base import StreamItem
from ..remote_subscription import RemoteSubscription


class ReplySlot:
    """Where the single reply of a unary call (or a control request) lands.

    Its one waiter parks with trio's low-level primitives and is woken directly: a
    ``trio.Event`` per call (with its parking lot) costs more than the rest of the slot.
    """

    __slots__ = ("_waiter", "error", "limit", "result", "trace_id")

    def __init__(self, trace_id: str | None, limit: float | None = None) -> None:
        self._waiter: trio.lowlevel.Task | None = None
        self.result: AgentResponse | None = None
        #: The local failure that settled the call, if one did (``result`` is its response).
        self.error: IntentusError | None = None
        self.trace_id = trace_id
        #: The call's timeout in seconds, for the message when it expires.
        self.limit = limit

    @property
    def done(self) -> bool:
        return self.result is not None

    def _settle(self, result: AgentResponse) -> None:
        self.result = result
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def deliver(self, item: StreamItem) -> bool:
        """Settle the call with a received item; True (a unary call is then over)."""
        if isinstance(item, StreamChunk):
            self.fail(ProtocolError("received a stream chunk for a unary call"))
        elif self.result is None:
            self._settle(item)
        return True

    def fail(self, exc: IntentusError) -> None:
        if self.result is None:
            self.error = exc
            self._settle(exc.to_response(trace_id=self.trace_id))

    def expire(self) -> None:
        """The call's deadline passed without a reply."""
        self.fail(TransportTimeout(f"no response within {self.limit} s",
                                   details={"timeout": self.limit}))

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> AgentResponse:
        """The reply, once it lands (one waiter at a time)."""
        if self.result is None:
            if self._waiter is not None:
                raise RuntimeError("a reply slot has one waiter")
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        else:
            await trio.lowlevel.checkpoint()
        assert self.result is not None
        return self.result


class StreamSlot:
    """The chunks of one streamed reply, at most ``window`` (+ the final response) queued."""

    __slots__ = ("_receive", "_send", "failure", "trace_id")

    def __init__(self, window: int, trace_id: str | None) -> None:
        self._send, self._receive = trio.open_memory_channel[StreamItem](window + 1)
        self.failure: AgentResponse | None = None
        self.trace_id = trace_id

    def deliver(self, item: StreamItem) -> bool:
        """Queue ``item``; True once the stream is over (final response or failure)."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.fail(ProtocolError("the server sent more stream chunks than the granted window"))
            return True
        except trio.ClosedResourceError:
            return True
        if isinstance(item, StreamChunk):
            return False
        self._send.close()
        return True

    def fail(self, exc: IntentusError) -> None:
        """End the stream: queued chunks are still read, then the error response."""
        if self.failure is None:
            self.failure = exc.to_response(trace_id=self.trace_id)
        self._send.close()

    async def receive(self) -> StreamItem:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.failure is None:
                self.fail(ConnectionFailure("the stream ended without a final response"))
            assert self.failure is not None
            return self.failure


class WebSocketSubscription(RemoteSubscription):
    """An async iterator of the events of one subscription, across reconnections.

    ``dropped`` counts events lost to full buffers on either side (the server reports its
    own drops in a header); events published while the connection is down are not counted.
    Iteration ends when the subscription's block or the client closes; it raises the
    ``ConnectionFailure`` in ``failure`` once no connection will carry it again (the
    connection was lost with ``reconnect=False``). Events already queued come first.
    """

    def __init__(self, subscription_id: str, event_type: str, buffer: int) -> None:
        super().__init__(event_type, buffer)
        self.id = subscription_id
        self.closed = False
        #: Why the subscription ended for good, if it did not end by being closed.
        self.failure: ConnectionFailure | None = None

    def activate(self) -> None:
        if not self.closed:  # an acknowledgement racing the client's close
            super().activate()

    def close(self) -> None:
        self.closed = True
        super().close()

    def fail(self, exc: ConnectionFailure) -> None:
        """End the subscription with ``exc`` (unless it was closed already)."""
        if not self.closed:
            self.failure = exc
            self.close()

    async def __anext__(self) -> Event:
        try:
            return await super().__anext__()
        except StopAsyncIteration:
            if self.failure is None:
                raise
            # A fresh traceback each time: the same error is raised on every later call.
            raise self.failure.with_traceback(None) from None
