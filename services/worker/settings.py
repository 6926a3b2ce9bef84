"""The worker's tuning, read from the environment (prefix JOBTRAIL_WORKER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import CommaList


class WorkerSettings(BaseSettings):
    """Worker tuning (prefix JOBTRAIL_WORKER_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_WORKER_", extra="ignore")

    concurrency: int = Field(default=32, ge=1, le=1024, description="jobs run at once")
    prefetch_multiplier: int = Field(
        default=4,
        ge=1,
        le=64,
        description="each work queue's prefetch is concurrency x this: deliveries waiting for a "
        "slot hide the broker's round trip after each ack (Celery's default is 4 too)",
    )
    slot_wait_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="a delivery that waited this long for a free slot goes back to the queue "
        "(keep it well under RabbitMQ's consumer_timeout and the dispatch deadline)",
    )
    queues: CommaList = Field(default_factory=list, description="empty: every job type's queue")
    lease_s: float = Field(default=30.0, gt=0, description="a silent worker loses a job after")
    heartbeat_s: float = Field(default=0.0, ge=0, description="0: a third of lease_s")
    cancel_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="an async handler still running this long after a cancel request is cancelled",
    )
    cancel_poll_s: float = Field(default=1.0, gt=0, description="how often cancels are looked up")
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, how long jobs in flight may run on to finish (their leases are "
        "renewed meanwhile); those still running then are handed back as a failed attempt "
        "retried at once elsewhere. Keep it below the orchestrator's kill timeout",
    )
