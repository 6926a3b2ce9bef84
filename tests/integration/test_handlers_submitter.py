"""The submitter's bus handlers (SubmitJob, CancelJob), through its real router (in memory) over
the real store: what a command message records, and what it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from faststream.rabbit import RabbitBroker

from contracts.messages import CancelJob, CancelJobMessage, SubmitJob, SubmitJobMessage
from services.submitter import subscribers
from services.submitter.handlers import job_id_for_message
from shared import dead_letters
from shared.domain import Status
from shared.domain.errors import JobNotFoundError
from shared.eventstore import JobStore
from shared.service import Service
from tests.handlers import forget_dead_letters, in_memory, service_for


@pytest.fixture
def submitter(postgres_url: str, redis_url: str, amqp_url: str) -> Iterator[Service]:
    service = service_for("submitter", postgres_url, redis_url, amqp_url)
    yield service
    forget_dead_letters(postgres_url, service)


def submit(**data: object) -> SubmitJobMessage:
    fields: dict[str, object] = {"type": "cpu.hash", "payload": {"text": "hi"}} | data
    return SubmitJobMessage(correlation_id="c-bus", data=SubmitJob.model_validate(fields))


async def send(
    broker: RabbitBroker, service: Service, message: SubmitJobMessage | CancelJobMessage, key: str
) -> None:
    """Sends a command as a client does, to the commands exchange."""
    await broker.publish(
        message.model_dump_json().encode(),
        exchange=service.routes.commands,
        routing_key=key,
        message_id=str(message.message_id),
        content_type="application/json",
    )


async def test_a_submit_job_message_submits_and_dispatches_once(
    store: JobStore, submitter: Service
) -> None:
    # Given a SubmitJob message without an idempotency key
    message = submit()
    job_id = job_id_for_message(message.message_id)
    async with in_memory(submitter, subscribers.router) as broker:
        # When it is delivered twice (a redelivery)
        await send(broker, submitter, message, "job.submit")
        await send(broker, submitter, message, "job.submit")
    # Then one job exists, submitted and dispatched at once, acted by the bus
    history = store.history(job_id)
    assert [type(e).__name__ for e in history] == ["Submitted", "Scheduled"]
    assert history[0].actor == f"bus:{submitter.instance}"
    assert history[0].correlation_id == "c-bus"


async def test_an_invalid_submit_job_is_rejected_and_recorded_as_a_dead_letter(
    store: JobStore, submitter: Service
) -> None:
    # Given a SubmitJob naming a job type nobody declared
    message = submit(type="no.such.type")
    async with in_memory(submitter, subscribers.router) as broker:
        # When it is delivered
        await send(broker, submitter, message, "job.submit")
    # Then no job is made, and the message is a dead letter, recorded as rejected
    with pytest.raises(JobNotFoundError):
        store.history(job_id_for_message(message.message_id))
    rows = await asyncio.to_thread(dead_letters.recorded, store, None, 100)
    mine = [r for r in rows if r["message_id"] == str(message.message_id)]
    assert [(r["queue"], r["reason"]) for r in mine] == [(submitter.routes.submit.name, "rejected")]


async def test_a_cancel_job_message_cancels_a_waiting_job(
    store: JobStore, submitter: Service
) -> None:
    # Given a job due in an hour (PENDING)
    submitted = submit(run_at=datetime.now(UTC) + timedelta(hours=1))
    job_id = job_id_for_message(submitted.message_id)
    async with in_memory(submitter, subscribers.router) as broker:
        await send(broker, submitter, submitted, "job.submit")
        assert store.get(job_id).status is Status.PENDING
        # When a CancelJob message names it
        cancel = CancelJobMessage(correlation_id="c-x", data=CancelJob(job_id=job_id, reason="no"))
        await send(broker, submitter, cancel, "job.cancel")
    # Then it is CANCELLED, with the reason given
    job = store.get(job_id)
    assert job.status is Status.CANCELLED
    assert store.history(job_id)[-1].reason == "no"
