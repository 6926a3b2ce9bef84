"""Prometheus metrics every service exposes (the submitter on ``GET /metrics``, the others on
``JOBTRAIL_METRICS_PORT``); docs/operations.md lists each one.

Metrics live in prometheus_client's default registry, one per process. The event store's
counters are read from ``JobStore.stats`` when scraped, so the store itself knows nothing of
Prometheus.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.eventstore import JobStore

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "jobtrail_dead_letters",
    "Messages a consumer rejected to the dead-letter queue, by queue and reason",
    ["queue", "reason"],
)
CONSUMED = Counter(
    "jobtrail_messages_consumed",
    "Messages taken from a queue, by queue and outcome (handled, returned, dead_lettered)",
    ["queue", "outcome"],
)
JOBS_FINISHED = Counter(
    "jobtrail_job_attempts_finished",
    "Attempts whose outcome a worker recorded, by job type and outcome "
    "(completed, failed, cancelled); a failed attempt may be retried",
    ["type", "outcome"],
)
JOB_SECONDS = Histogram(
    "jobtrail_job_run_seconds",
    "Handler run time of an attempt, by job type",
    ["type"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUARANTINED = Counter(
    "jobtrail_quarantined",
    "Events of the log a follower could not process and stepped past, by stage (relay: no "
    "message can be built; projection: cannot be applied to Redis); each is in "
    "jobtrail_quarantine",
    ["stage"],
)
PUBLISHED_ON_COMMIT = Counter(
    "jobtrail_published_on_commit",
    "Messages of committed events a writer published itself, by outcome (confirmed; failed: "
    "not confirmed; skipped: its queue was full); the relay publishes what was not confirmed",
    ["outcome"],
)
PUBLISH_MARKS_FAILED = Counter(
    "jobtrail_publish_marks_failed",
    "Confirmed messages whose mark could not be written to Redis (the relay publishes them "
    "again: a duplicate, dropped by its consumer)",
)
RELAY_MESSAGES = Counter(
    "jobtrail_relay_messages",
    "Events the relay handled, by action (published by the relay; skipped: a writer had "
    "published it and marked it)",
    ["action"],
)
REDISPATCHED = Counter(
    "jobtrail_redispatched",
    "Work messages sent again for SCHEDULED jobs no worker claimed within the deadline",
)
CHECKPOINTS_REFUSED = Counter(
    "jobtrail_checkpoints_refused",
    "Checkpoints the projector refused to sign because the database lost or replaced one the "
    "checkpoint file holds (tampering: run `jobtrail verify`)",
)


@functools.lru_cache(maxsize=1024)
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: a hot path (a consumed message, a finished job)
    skips prometheus_client's lock and label checks. Label values here come from a small set
    (queues, job types, outcomes); the bound only keeps a surprise from growing without end."""
    return metric.labels(*labels)


_STORE_COUNTERS = {
    "batches": "Transactions (group commits) of the event store",
    "commands": "Commands decided by the event store",
    "events": "Events appended to the log",
    "conflicts": "Version conflicts met (a writer bypassed the lock); the batch was decided again",
    "transient_retries": "Batches retried after a database error",
    "unknown_commits": "COMMITs whose outcome was lost and decided by re-reading",
    "overloaded": "Commands (or batches) refused at once: the group-commit queue was full",
}


class StoreCollector:
    """Exposes the counters of the stores this process watches as ``jobtrail_store_*_total``."""

    def __init__(self) -> None:
        self.stores: list[JobStore] = []

    def collect(self) -> Iterator[Metric]:
        for name, text in _STORE_COUNTERS.items():
            family = CounterMetricFamily(f"jobtrail_store_{name}", text)
            family.add_metric([], sum(getattr(store.stats, name) for store in self.stores))
            yield family


_STORES = StoreCollector()
REGISTRY.register(_STORES)


def watch_store(store: JobStore) -> None:
    """Adds the store's counters to this process's metrics."""
    _STORES.stores.append(store)


class MetricsSettings(BaseSettings):
    """Where worker, scheduler and projector serve their metrics (prefix JOBTRAIL_METRICS_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_METRICS_", extra="ignore")

    port: int = Field(default=0, ge=0, le=65535, description="0: no metrics server")
    host: str = "127.0.0.1"


def serve(settings: MetricsSettings | None = None) -> None:
    """Starts the metrics HTTP server in a thread when a port is set."""
    settings = settings or MetricsSettings()
    if settings.port:
        start_http_server(settings.port, addr=settings.host)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.port)
