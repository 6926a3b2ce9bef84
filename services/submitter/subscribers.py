"""SubmitJob and CancelJob command messages, for clients that submit without HTTP.

A command must never be lost to an outage of our database, however long: each handler holds its
delivery while the store is away and parks the message at the back of its queue every
``JOBTRAIL_HOLD_S`` (shared/retrying.py ``hold``), so neither a retry budget, nor the quorum
queue's delivery limit, nor RabbitMQ's consumer_timeout can send a valid command to the
dead-letter queue. Only a command that cannot be valid is rejected there, at once.

Without FastDepends (the service's broker is made with ``apply_types=False``): each command
comes from ``decoder_of``, validated once from the bytes, and the delivery from FastStream's
context.
"""

from __future__ import annotations

import logging

from faststream.exceptions import RejectMessage
from faststream.rabbit import RabbitRouter

from contracts.messages import CancelJobMessage, SubmitJobMessage
from services.submitter import handlers
from shared.domain import Cause, JobError
from shared.messaging import decoder_of, delivery, park
from shared.retrying import hold
from shared.service import Service

log = logging.getLogger(__name__)


def router(service: Service) -> RabbitRouter:
    """The command subscribers over ``service`` (its store once open, its registry and work
    queues, its broker); the actor of what they record is ``bus:<service.instance>``."""
    routes, broker, registry = service.routes, service.broker, service.registry
    queues, actor = set(service.queues), f"bus:{service.instance}"
    submit_queue, cancel_queue = routes.submit.name, routes.cancel.name
    router = RabbitRouter()

    @router.subscriber(
        routes.submit,
        routes.commands,
        decoder=decoder_of(SubmitJobMessage),
        title="submitter/submit-job",
    )
    async def on_submit_job(message: SubmitJobMessage) -> None:
        """Submits a job, with the same validation and idempotency as POST /v1/jobs. A request
        that cannot be valid (ids the bus could not carry on included) is rejected to the
        dead-letter queue at once; one that meets the store away is held, then parked, until the
        store is back."""
        raw, store = delivery(broker).raw_message, service.store
        try:
            cause = Cause(actor, message.correlation_id, str(message.message_id))
            submission = handlers.prepare(
                message.data,
                registry,
                queues,
                cause,
                message_id=message.message_id,
                tenant=message.tenant,
            )
            done = await hold(
                lambda: handlers.submit(store, submission),
                hold_s=routes.hold_s,
                park=lambda: park(broker, raw, submit_queue),
            )
        except (handlers.InvalidRequestError, JobError, ValueError) as exc:
            log.warning("rejecting SubmitJob %s: %s", message.message_id, exc)
            raise RejectMessage from exc
        if done is not None:
            job, replayed = done
            log.info("submitted %s from a message (replayed: %s)", job.id, replayed)

    @router.subscriber(
        routes.cancel,
        routes.commands,
        decoder=decoder_of(CancelJobMessage),
        title="submitter/cancel-job",
    )
    async def on_cancel_job(message: CancelJobMessage) -> None:
        """Cancels a job (or asks its worker to stop); a final or unknown job is logged and
        dropped; one whose ids the bus could not carry on is rejected to the dead letters; the
        store away: held, then parked, until it is back."""
        raw, store = delivery(broker).raw_message, service.store
        try:
            cause = Cause(
                actor,
                message.correlation_id,
                str(message.message_id),
                message.data.reason,
            )
        except ValueError as exc:
            log.warning("rejecting CancelJob %s: %s", message.message_id, exc)
            raise RejectMessage from exc
        try:
            await hold(
                lambda: handlers.cancel(store, message.data.job_id, cause),
                hold_s=routes.hold_s,
                park=lambda: park(broker, raw, cancel_queue),
            )
        except JobError as exc:
            log.info("cancel of %s refused: %s", message.data.job_id, exc)

    return router
