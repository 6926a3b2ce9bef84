"""An asyncio facade over JobStore: group commit of concurrent commands on a bounded pool.

eventsourcing is synchronous. Commands that arrive while a batch is being written wait in a
queue and go together in the next transaction, so N concurrent callers cost far fewer than N
transactions. At most ``store_max_inflight_batches`` batches run at once, and the thread pool
is no larger than the connection pool, so no thread ever waits for a connection it cannot get.

The queue is bounded too (``store_max_waiting``): under overload a command that would make it
longer is refused at once with ``StoreOverloadedError`` (nothing written, retry after a second;
the API answers 503 + Retry-After, a consumer holds its delivery as for any transient failure),
instead of queueing for longer than its caller would wait and growing memory without bound.

On-commit hooks (``on_commit``) see every batch's outcomes once its transaction has committed,
before any caller is answered: the events with their notification ids, which a writer publishes
at once (``shared.publishing``) instead of leaving every message to the relay. Batch hooks
(``on_batch``) see each transaction's size and how long its oldest command waited for it (the
group-commit metrics, shared/metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from shared.domain.job import Job
from shared.eventstore.commands import Command, Outcome, Undecodable
from shared.eventstore.store import JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

CommitHook = Callable[[Sequence[Outcome]], None]
"""Called on the event loop with a committed batch's outcomes; must not block (it may queue)."""

BatchHook = Callable[[int, float], None]
"""Called on the event loop as a transaction starts: its command count and how long its oldest
command waited (seconds); must be cheap."""

_Item = tuple[UUID, Command, "asyncio.Future[Outcome]", float]  # float: time.monotonic() queued

OVERLOADED_RETRY_AFTER_S = 1
"""A full queue drains in about a second (a few group commits of ``store_max_batch``)."""


class StoreOverloadedError(Exception):
    """Too many commands wait for a transaction in this process: this one was refused at once,
    nothing of it written. Transient (shared/retrying.py): retry after ``retry_after_s``."""

    def __init__(self, waiting: int, limit: int, retry_after_s: int = OVERLOADED_RETRY_AFTER_S):
        super().__init__(
            f"the event store is overloaded: {waiting} commands waiting (at most {limit}); "
            f"retry in {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class AsyncJobStore:
    """Async commands (batched) and reads over a JobStore; start with ``async with``."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        settings = store.settings
        self._max_batch = settings.store_max_batch
        self._max_waiting = settings.store_max_waiting
        self._waiting_many = 0  # commands of ``execute_many`` calls waiting for their thread
        self._executor = ThreadPoolExecutor(
            max_workers=store.max_connections, thread_name_prefix="jobtrail-store"
        )
        self._slots = asyncio.Semaphore(
            min(settings.store_max_inflight_batches, store.max_connections)
        )
        self._queue: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._hooks: list[CommitHook] = []
        self._batch_hooks: list[BatchHook] = []

    async def __aenter__(self) -> AsyncJobStore:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="jobtrail-group-commit")

    async def aclose(self) -> None:
        """Writes what is queued, waits for batches in flight, then releases threads and pool."""
        while self._queue or self._inflight:
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        self._executor.shutdown(wait=True)
        self.store.close()

    def on_commit(self, hook: CommitHook) -> None:
        """Calls ``hook`` with the outcomes of every batch this store commits (group commits and
        ``execute_many``), after COMMIT and before the callers get their answers. A hook that
        raises is logged; the commit stands and the callers are answered all the same."""
        self._hooks.append(hook)

    def on_batch(self, hook: BatchHook) -> None:
        """Calls ``hook(size, waited_s)`` as each transaction starts (not twice for one hook)."""
        if hook not in self._batch_hooks:
            self._batch_hooks.append(hook)

    def _starting(self, size: int, queued: float) -> None:
        waited = time.monotonic() - queued
        for hook in self._batch_hooks:
            try:
                hook(size, waited)
            except Exception:
                log.exception("batch hook %r failed", hook)

    def _committed(self, outcomes: Sequence[Outcome]) -> None:
        for hook in self._hooks:
            try:
                hook(outcomes)
            except Exception:
                log.exception("on-commit hook %r failed", hook)

    async def execute(self, job_id: UUID, command: Command) -> Job:
        """Runs a command in the next group commit; returns the job or raises its error."""
        return (await self.submit(job_id, command)).unwrap()

    async def submit(self, job_id: UUID, command: Command) -> Outcome:
        """Like execute, but returns the Outcome (job and new events, or the error)."""
        if self._runner is None:
            raise RuntimeError("AsyncJobStore is not started")
        self._admit(1)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((job_id, command, future, time.monotonic()))
        self._wakeup.set()
        return await future

    async def execute_many(self, commands: Sequence[tuple[UUID, Command]]) -> list[Outcome]:
        """Runs the commands together in one transaction (a batch submission, say). Refused as a
        whole (StoreOverloadedError) when its commands would overfill the queue; while they wait
        for a thread of the pool they count as waiting."""
        batch = list(commands)
        self._admit(len(batch))
        loop = asyncio.get_running_loop()
        self._waiting_many += len(batch)
        waiting = True
        queued = time.monotonic()

        def started(running: bool = False) -> None:
            nonlocal waiting
            if waiting:
                waiting = False
                self._waiting_many -= len(batch)
                if running:
                    self._starting(len(batch), queued)

        def run() -> list[Outcome]:
            loop.call_soon_threadsafe(started, True)
            return self.store.execute_batch(batch)

        try:
            outcomes = await self._call(run)
        finally:
            started()  # also when cancelled before its thread began
        self._committed(outcomes)
        return outcomes

    @property
    def waiting(self) -> int:
        """Commands admitted that no transaction has taken up yet."""
        return len(self._queue) + self._waiting_many

    def _admit(self, count: int) -> None:
        """Refuses ``count`` more commands when they would make the queue longer than
        ``store_max_waiting``; a batch larger than the bound still passes an empty queue."""
        waiting = self.waiting
        if waiting and waiting + count > self._max_waiting:
            self.store.stats.overloaded += 1
            raise StoreOverloadedError(waiting, self._max_waiting)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._slots.acquire()
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self._starting(len(batch), batch[0][3])
                task = asyncio.create_task(self._write(batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _write(self, batch: list[_Item]) -> None:
        try:
            outcomes = await self._call(self.store.execute_batch, [(j, c) for j, c, _, _ in batch])
        except BaseException as exc:  # the whole batch failed: every caller learns why
            for _, _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._committed(outcomes)
            for (_, _, future, _), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        finally:
            self._slots.release()

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, job_id: UUID, *, version: int | None = None) -> Job:
        return await self._call(partial(self.store.get, job_id, version=version))

    async def get_at(self, job_id: UUID, at: datetime) -> Job:
        return await self._call(self.store.get_at, job_id, at)

    async def history(self, job_id: UUID) -> list[Job.Event]:
        return await self._call(self.store.history, job_id)

    async def events_after(
        self,
        after: int,
        limit: int,
        kinds: Sequence[type[Job.Event]] = (),
        skipped: list[Undecodable] | None = None,
    ) -> list[tuple[int, Job.Event]]:
        return await self._call(self.store.events_after, after, limit, kinds, skipped)

    async def get_many(self, job_ids: Sequence[UUID]) -> list[Job]:
        return await self._call(self.store.get_many, list(job_ids))

    async def position(self, name: str) -> int:
        return await self._call(self.store.position, name)

    async def set_position(self, name: str, position: int) -> None:
        await self._call(self.store.set_position, name, position)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs blocking store work on the store's bounded pool."""
        return await self._call(fn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
