"""SubmitJob and CancelJob command messages, for clients that submit without HTTP."""

from __future__ import annotations

import logging

from faststream.exceptions import RejectMessage
from faststream.rabbit import RabbitBroker

from contracts.messages import CancelJobMessage, SubmitJobMessage
from services.submitter import handlers
from services.submitter.deps import Deps
from shared.domain import Cause, JobError
from shared.messaging import Routes
from shared.retrying import retry_transient

log = logging.getLogger(__name__)


def register(broker: RabbitBroker, routes: Routes, deps: Deps) -> None:
    @broker.subscriber(routes.submit, routes.commands, title="submitter/submit-job")
    async def on_submit_job(message: SubmitJobMessage) -> None:
        """Submits a job, with the same validation and idempotency as POST /v1/jobs. A request
        that cannot be valid is rejected to the dead-letter queue at once."""
        try:
            cause = Cause(f"bus:{deps.instance}", message.correlation_id, str(message.message_id))
            submission = handlers.prepare(message.data, deps.registry, deps.queues, cause)
            job, replayed = await retry_transient(lambda: handlers.submit(deps.store, submission))
        except (handlers.InvalidRequestError, JobError, ValueError) as exc:
            log.warning("rejecting SubmitJob %s: %s", message.message_id, exc)
            raise RejectMessage from exc
        log.info("submitted %s from a message (replayed: %s)", job.id, replayed)

    @broker.subscriber(routes.cancel, routes.commands, title="submitter/cancel-job")
    async def on_cancel_job(message: CancelJobMessage) -> None:
        """Cancels a job (or asks its worker to stop); a final or unknown job is logged and
        dropped; one whose ids the bus could not carry on is rejected to the dead letters."""
        try:
            cause = Cause(
                f"bus:{deps.instance}",
                message.correlation_id,
                str(message.message_id),
                message.data.reason,
            )
        except ValueError as exc:
            log.warning("rejecting CancelJob %s: %s", message.message_id, exc)
            raise RejectMessage from exc
        try:
            await retry_transient(lambda: handlers.cancel(deps.store, message.data.job_id, cause))
        except JobError as exc:
            log.info("cancel of %s refused: %s", message.data.job_id, exc)
