"""The scheduler's inbound adapter: job events that may make a job due.

Without FastDepends (the broker is made with ``apply_types=False``): the envelope comes from
``decoder_of``, validated once from the bytes, and the delivery from FastStream's context.
"""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from contracts.messages import JobEventMessage
from services.scheduler.handlers import schedule_job
from shared.domain import Cause
from shared.eventstore import AsyncJobStore
from shared.messaging import Routes, decoder_of, delivery, park
from shared.retrying import hold


def register(broker: RabbitBroker, routes: Routes, store: AsyncJobStore, actor: str) -> None:
    queue = routes.scheduler.name

    @broker.subscriber(
        routes.scheduler,
        routes.events,
        decoder=decoder_of(JobEventMessage),
        title="scheduler/job-events",
    )
    async def on_job_event(message: JobEventMessage) -> None:
        """Submitted, AttemptFailed, LeaseExpired and Requeued events. A job that was due when
        its event was written is dispatched (Scheduled is recorded and relayed to its work
        queue); a job due later waits in the timer table and the scheduler leader dispatches it
        on the database's clock. A duplicate or stale delivery (the job moved on since its
        version) changes nothing. While the store is away the delivery is held, then parked at
        the back of the queue (shared/retrying.py ``hold``): never dead-lettered for it."""
        event = message.data
        if event.due_at is not None and event.due_at > message.occurred_at:
            return  # not due when written (both times on the writer's clock): the timer's job
        if event.event_type == "LeaseExpired" and event.due_at is None:
            return  # the job FAILED: nothing to dispatch
        cause = Cause.following(actor, message.correlation_id, str(message.message_id))
        msg = delivery(broker)
        await hold(
            lambda: schedule_job(store, event.job_id, cause, event.version),
            hold_s=routes.hold_s,
            park=lambda: park(broker, msg.raw_message, queue),
        )
