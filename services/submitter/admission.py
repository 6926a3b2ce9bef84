"""The per-tenant cap on jobs not yet final (``JOBTRAIL_TENANT_MAX_PENDING``): a submission past it
is answered 429 + Retry-After, nothing written.

The count comes from the projection's counters in Redis (``tenant:<T>:<status>``), read at most
once a second per tenant and raised by each admission in between, so the check costs no round
trip on most requests. It is a guard against one tenant filling the system, not an exact quota:
it lags the log by the projection's delay and each submitter counts its own admissions only.
Redis away: the last count read is kept (a tenant never seen counts 0); admission never fails
because the cache does.

``Waiters`` bounds the requests of ``GET /v1/jobs/{id}/wait`` (wait_api.py) waiting at once in
this process (``JOBTRAIL_SUBMITTER_MAX_WAITERS``): past it a wait is answered 503 + Retry-After.
"""

from __future__ import annotations

import logging
import time

from services.submitter.auth import RateLimitedError
from shared.ratelimit import pending_cap_retry_after
from shared.redis_view import RedisView

log = logging.getLogger(__name__)

NOT_FINAL = ("PENDING", "SCHEDULED", "RUNNING")


class PendingCap:
    def __init__(self, view: RedisView, cap: int, refresh_s: float = 1.0) -> None:
        self.view, self.cap, self.refresh_s = view, cap, refresh_s
        self._counts: dict[str, tuple[int, float]] = {}

    async def admit(self, tenant: str, new: int = 1) -> None:
        """Counts ``new`` jobs of ``tenant`` as pending; RateLimitedError when over the cap."""
        if self.cap <= 0:
            return
        pending, read_at = self._counts.get(tenant, (0, float("-inf")))
        now = time.monotonic()
        if now - read_at >= self.refresh_s:
            try:
                pending = await self.view.tenant_count(tenant, NOT_FINAL)
            except Exception as exc:  # a cache: keep the last count, ask again in refresh_s
                log.debug("pending count of %s unavailable: %r", tenant, exc)
            read_at = now
        wait = pending_cap_retry_after(pending, self.cap, new)
        if wait is not None:
            self._counts[tenant] = (pending, read_at)
            raise RateLimitedError(
                f"tenant {tenant!r} has {pending} jobs not yet final (cap {self.cap}); "
                "retry once some have finished",
                wait,
            )
        self._counts[tenant] = (pending + new, read_at)


class Waiters:
    """The long polls waiting at once in this process, at most ``limit``; each waits at most
    ``max_wait_s`` whatever its request asks."""

    def __init__(self, limit: int = 1000, max_wait_s: float = 60.0) -> None:
        self.limit, self.max_wait_s = limit, max_wait_s
        self.waiting = 0

    def enter(self) -> bool:
        """Counts one more waiter; False (nothing counted) when ``limit`` are waiting already."""
        if self.waiting >= self.limit:
            return False
        self.waiting += 1
        return True

    def leave(self) -> None:
        self.waiting -= 1
