"""The scheduler's inbound adapter: a router for job events that may make a job due, and for the
dead-letter ledger.

Without FastDepends (the service's broker is made with ``apply_types=False``): the envelope comes
from ``decoder_of``, validated once from the bytes, and the delivery from FastStream's context.
"""

from __future__ import annotations

from faststream.rabbit import RabbitRouter

from contracts.messages import JobEventMessage
from services.scheduler import ledger
from services.scheduler.handlers import schedule_job
from shared import logs, tracing
from shared.dead_letters import recorder
from shared.domain import Cause
from shared.messaging import decoder_of, delivery, park
from shared.retrying import hold
from shared.service import Service


def router(service: Service) -> RabbitRouter:
    """The scheduler's subscribers over ``service`` (its store once open, its broker, its
    routes): job events and the dead-letter ledger."""
    # one router, not nested ones: each level costs every message a lookup through one more
    # configuration (about a microsecond)
    router = RabbitRouter()
    add_job_events(router, service)
    add_dead_letter_ledger(router, service)
    return router


def dead_letter_ledger(service: Service) -> RabbitRouter:
    """The dead-letter ledger alone (for a process that consumes the scheduler queue otherwise)."""
    router = RabbitRouter()
    add_dead_letter_ledger(router, service)
    return router


def add_job_events(router: RabbitRouter, service: Service) -> None:
    """Job events that may make a job due; acts as ``service.instance``."""
    routes, broker, actor = service.routes, service.broker, service.instance
    events_queue = routes.scheduler.name

    @router.subscriber(
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
        store = service.store
        with (
            logs.job(event.job_id, cause.correlation_id),
            tracing.consumer(f"scheduler {event.event_type}", msg.headers, job_id=event.job_id),
        ):
            traced = tracing.traced(cause)  # the cause itself when tracing is off
            await hold(
                lambda: schedule_job(store, event.job_id, traced, event.version),
                hold_s=routes.hold_s,
                park=lambda: park(broker, msg.raw_message, events_queue),
            )


def add_dead_letter_ledger(router: RabbitRouter, service: Service) -> None:
    """The copies of dead letters in the ledger queue, each recorded once (ledger.py)."""
    routes, broker = service.routes, service.broker
    ledger_queue = routes.ledger.name

    @router.subscriber(
        routes.ledger, routes.dlx, title="dead-letter-ledger", decoder=ledger.raw_body
    )
    async def on_dead_letter(body: bytes) -> None:
        """A copy of a dead letter: recorded (a consumer's own record, when it wrote one first,
        is kept); counted when RabbitMQ killed it (a consumer's reject is counted by the
        consumer)."""
        raw = delivery(broker).raw_message
        await ledger.record_copy(
            raw,
            recorder(service.store, replace=False),
            hold_s=routes.hold_s,
            park=lambda: park(broker, raw, ledger_queue),
        )
