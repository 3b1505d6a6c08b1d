"""Long-running tasks: intents that run on the server while the client polls.

A submitted task runs in a nursery the server owns. Its record (and reply) is kept for
``result_ttl`` seconds after it finishes, and at most ``max_tasks`` records exist at once:
a full store first forgets the oldest finished task, and refuses a submission only when
every slot holds a running task. Time is trio's clock, so MockClock drives expiry in tests.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import attrs
import trio

from ...protocol.codec import encodable_reply
from ...protocol.factory import new_id, utc_now
from ...protocol.models import TransportEnvelope


class TaskState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Finished with a sealed (EMCL) reply, whose outcome only the client can read.
    COMPLETED = "completed"


@attrs.define(eq=False)
class TaskRecord:
    task_id: str
    submitted_at: str
    state: TaskState = TaskState.RUNNING
    finished_at: str | None = None
    #: The reply frame, once finished (sealed if the submission was sealed).
    reply: TransportEnvelope | None = None
    #: trio time after which a finished record is forgotten.
    expires: float = float("inf")
    done: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def finished(self) -> bool:
        return self.state is not TaskState.RUNNING


class StoreFull(Exception):
    """Every slot of the store holds a running task."""


#: Runs the task: returns its reply frame and the state it ends in.
Runner = Callable[[], Awaitable[tuple[TransportEnvelope, TaskState]]]
#: Builds the reply frame of a task cancelled before it finished.
CancelReply = Callable[[], TransportEnvelope]


class TaskStore:
    """Bounded, expiring records of long-running tasks (see the module docstring)."""

    def __init__(self, *, max_tasks: int = 1024, result_ttl: float = 300.0) -> None:
        if max_tasks <= 0 or result_ttl < 0:
            raise ValueError("max_tasks must be positive and result_ttl non-negative")
        self.max_tasks = max_tasks
        self.result_ttl = result_ttl
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()  # in order of finishing

    def __len__(self) -> int:
        self.expire()
        return len(self._records)

    @property
    def running(self) -> int:
        return len(self._records) - len(self._finished)

    def expire(self) -> None:
        """Forget finished records whose time is up."""
        now = trio.current_time()
        while self._finished:
            task_id = next(iter(self._finished))
            if self._records[task_id].expires > now:
                break
            del self._finished[task_id]
            del self._records[task_id]

    def get(self, task_id: str) -> TaskRecord | None:
        self.expire()
        return self._records.get(task_id)

    def start(
        self, nursery: trio.Nursery, run: Runner, cancelled_reply: CancelReply
    ) -> TaskRecord:
        """Run ``run`` as a new task in ``nursery``; raises StoreFull when no slot is free."""
        self.expire()
        if len(self._records) >= self.max_tasks:
            if not self._finished:
                raise StoreFull
            oldest = next(iter(self._finished))
            del self._finished[oldest]
            del self._records[oldest]
        record = TaskRecord(new_id(), utc_now())
        self._records[record.task_id] = record
        nursery.start_soon(self._run, record, run, cancelled_reply)
        return record

    async def _run(self, record: TaskRecord, run: Runner, cancelled_reply: CancelReply) -> None:
        try:
            with record.scope:
                reply, state = await run()
                self._finish(record, state, reply)
        finally:
            if not record.finished:  # cancelled, by the client or by shutdown
                self._finish(record, TaskState.CANCELLED, cancelled_reply())

    def cancel(self, task_id: str) -> TaskRecord | None:
        """Cancel a running task; the record stays, in state ``cancelled``."""
        record = self.get(task_id)
        if record is not None and not record.finished:
            record.scope.cancel()
        return record

    def discard(self, task_id: str) -> TaskRecord | None:
        """Cancel the task if it runs and forget it at once."""
        record = self.cancel(task_id)
        if record is not None:
            self._records.pop(task_id, None)
            self._finished.pop(task_id, None)
        return record

    def _finish(self, record: TaskRecord, state: TaskState, reply: TransportEnvelope) -> None:
        record.state = state
        record.reply = encodable_reply(reply)  # polled as JSON, maybe many times
        record.finished_at = utc_now()
        record.expires = trio.current_time() + self.result_ttl
        if record.task_id in self._records:
            self._finished[record.task_id] = None
        record.done.set()
