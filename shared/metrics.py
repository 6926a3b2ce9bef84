"""Prometheus metrics every service exposes (the submitter on ``GET /metrics``, the others on
their health port, shared/health.py); docs/operations.md lists each one and the alert to set.

Metrics live in prometheus_client's default registry, one per process. The event store's
counters are read from ``JobStore.stats`` when scraped, so the store itself knows nothing of
Prometheus. A message costs no I/O here: counters are bumped where the work is done, and the
gauges of values read from elsewhere (the log head, queue depths, job counts) are set by the
loops that read them anyway (the health monitor, every JOBTRAIL_HEALTH_CHECK_S).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from shared.eventstore import AsyncJobStore, JobStore

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

RETRIES = Counter(
    "jobtrail_job_retries",
    "Failed attempts the worker recorded that will run again (a retry timer was set), by type",
    ["type"],
)
LEASES_EXPIRED = Counter(
    "jobtrail_leases_expired",
    "Attempts the scheduler took away from a silent worker, by outcome (retry: it runs again; "
    "failed: no attempt left)",
    ["outcome"],
)
GROUP_COMMIT_SIZE = Histogram(
    "jobtrail_group_commit_size",
    "Commands per event-store transaction (group commit) of this process",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
GROUP_COMMIT_WAIT = Histogram(
    "jobtrail_group_commit_wait_seconds",
    "How long the oldest command of a group commit waited for its transaction to start",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LOG_HEAD = Gauge(
    "jobtrail_log_head",
    "The last notification id of the log, as the projector's health monitor last read it",
)
FOLLOWER_LAG_EVENTS = Gauge(
    "jobtrail_lag_events",
    "Events of the log a follower (relay, projection) has not done yet (0 when it is at the "
    "head); set on the follower's leader only",
    ["follower"],
)
FOLLOWER_LAG_SECONDS = Gauge(
    "jobtrail_lag_seconds",
    "Seconds since a follower (relay, projection) was last at the log head (0 when it is)",
    ["follower"],
)
JOBS = Gauge(
    "jobtrail_jobs",
    "Jobs by type and status, from the projection's counters (on the projection's leader)",
    ["type", "status"],
)
QUEUE_MESSAGES = Gauge(
    "jobtrail_queue_messages",
    "Messages ready in a queue this process consumes (not counting those delivered unacked)",
    ["queue"],
)
QUEUE_CONSUMERS = Gauge(
    "jobtrail_queue_consumers",
    "Consumers of a queue this process consumes, every process's, as RabbitMQ counts them",
    ["queue"],
)
SWEEP_AGE = Gauge(
    "jobtrail_scheduler_sweep_age_seconds",
    "Seconds since the scheduler leader's last sweep ended (0 on a scheduler that is not leader)",
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


def watch_store(store: JobStore | AsyncJobStore) -> None:
    """Adds the store's counters to this process's metrics; for an AsyncJobStore, its group
    commits' sizes and waits too (observed once per batch)."""
    if isinstance(store, AsyncJobStore):
        store.on_batch(_observe_batch)
        store = store.store
    if store not in _STORES.stores:
        _STORES.stores.append(store)


def _observe_batch(size: int, waited_s: float) -> None:
    GROUP_COMMIT_SIZE.observe(size)
    GROUP_COMMIT_WAIT.observe(waited_s)
