"""The projector's readiness and gauges: how far the relay and the projection are behind the log.

Why a module: the relay and the projection only keep where they are (``Progress``, in memory);
judging that against the log head needs the head, read here once per
``JOBTRAIL_HEALTH_CHECK_S`` (one indexed query, on the leader of either only) by the service's
health monitor, which also sets the lag gauges and, every ``JOBS_EVERY_S``, the job counts from
the projection's counters (one Redis read). A probe reads none of it: it judges the last
readings (shared/health.py).
"""

from __future__ import annotations

import time

from shared.eventstore import AsyncJobStore
from shared.health import Health, HealthSettings, LogHead, Progress, lagging, stuck
from shared.metrics import FOLLOWER_LAG_EVENTS, FOLLOWER_LAG_SECONDS, JOBS, LOG_HEAD
from shared.redis_view import RedisView

JOBS_EVERY_S = 10.0
"""How often the projection's leader copies the job counters into ``jobtrail_jobs``."""


class Monitor:
    """Reads the log head for the relay's and the projection's checks and gauges."""

    def __init__(
        self, store: AsyncJobStore, view: RedisView, relay: Progress, projection: Progress
    ) -> None:
        self.store, self.view = store, view
        self.followers = {"relay": relay, "projection": projection}
        self.head = LogHead()
        self._jobs_at = 0.0

    def register(self, health: Health) -> None:
        """Adds the sampler and the two checks (each judges only a follower active here)."""
        settings: HealthSettings = health.settings
        relay, projection = self.followers["relay"], self.followers["projection"]
        health.sample(self.sample)
        health.check("relay", stuck("relay", relay, self.head, settings.relay_stall_s))
        health.check(
            "projection",
            lagging(
                "projection",
                projection,
                self.head,
                settings.projection_max_lag_events,
                settings.projection_max_lag_s,
            ),
        )

    async def sample(self) -> None:
        if not any(p.active for p in self.followers.values()):
            for name in self.followers:
                FOLLOWER_LAG_EVENTS.labels(name).set(0)
                FOLLOWER_LAG_SECONDS.labels(name).set(0)
            return
        head = await self.store.run_sync(self.store.store.max_notification_id)
        self.head.record(head)
        LOG_HEAD.set(head)
        for name, progress in self.followers.items():
            events, seconds = self.head.lag(progress) if progress.active else (0, 0.0)
            FOLLOWER_LAG_EVENTS.labels(name).set(events)
            FOLLOWER_LAG_SECONDS.labels(name).set(seconds)
        if self.followers["projection"].active and time.monotonic() >= self._jobs_at:
            self._jobs_at = time.monotonic() + JOBS_EVERY_S
            await self.count_jobs()

    async def count_jobs(self) -> None:
        """``jobtrail_jobs{type,status}`` from the counters' ``type:<T>:<S>`` fields."""
        for key, value in (await self.view.counts()).items():
            if key.startswith("type:"):
                job_type, _, status = key[len("type:") :].rpartition(":")
                JOBS.labels(job_type, status).set(value)
