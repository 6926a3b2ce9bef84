"""Admission policies of the submitter, answered with 429 + Retry-After: a rate limit per API key
and a cap on each tenant's pending (not yet final) jobs (issue 11, "Bounded input").

Why a module of its own: the authentication middleware calls ``RateLimiter.check`` with the
authenticated key's id on every request, and the routes that create jobs call
``pending_cap_retry_after`` with the tenant's count of pending jobs (kept by the Redis
projection); both are policies with their own settings and tests, apart from HTTP.

The rate limit is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per
key) from throttled-py with its in-memory store: a key may spend ``burst`` requests at once, then
``per_s`` a second. It lives in each submitter process's memory: N submitters allow a key N times
the rate (put the limit per process at rate / N, or route each key to one submitter). The store
is an LRU of at most ``max_keys`` keys, each entry expiring once its bucket is full again, so many
distinct keys cannot grow memory without bound; a key evicted by the LRU while still spending
starts again with a full bucket (keep ``max_keys`` above the keys active within burst / per_s
seconds). A check costs about 4 us (docs/dependencies.md, "throttled-py").
"""

from __future__ import annotations

import math

from throttled import MemoryStore, RateLimiterType, Throttled, per_sec

from shared.settings import LimitSettings

TENANT_CAP_RETRY_AFTER_S = 30
"""Retry-After when a tenant has too many pending jobs: they drain at the workers' pace, not the
client's, so a quick retry would only add load (the count also lags the log by the projection)."""


class RateLimiter:
    """Per-key rate limits in this process's memory; ``check`` answers None or a Retry-After."""

    def __init__(self, per_s: int, burst: int, *, max_keys: int = 10_000) -> None:
        """``per_s`` requests a second per key after a burst of ``burst``; ``per_s`` 0: off."""
        if per_s < 0 or burst < 1 or max_keys < 1:
            raise ValueError("per_s must be >= 0, burst and max_keys >= 1")
        self.per_s, self.burst = per_s, burst
        self._throttled = (
            Throttled(
                using=RateLimiterType.GCRA.value,
                quota=per_sec(per_s, burst=burst),
                store=MemoryStore(options={"MAX_SIZE": max_keys}),
            )
            if per_s
            else None
        )

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> RateLimiter:
        return cls(
            settings.rate_limit_per_s,
            settings.rate_limit_burst,
            max_keys=settings.rate_limit_max_keys,
        )

    @property
    def enabled(self) -> bool:
        return self._throttled is not None

    def check(self, key: str, cost: int = 1) -> int | None:
        """Spends ``cost`` requests of ``key``'s bucket: None when allowed, else the whole seconds
        to wait (Retry-After, rounded up, at least 1), nothing spent. A cost above the burst
        counts as the burst (it needs a full bucket, never more)."""
        if self._throttled is None:
            return None
        result = self._throttled.limit(key, cost=min(max(cost, 1), self.burst))
        if not result.limited:
            return None
        return max(1, math.ceil(result.state.retry_after))


def pending_cap_retry_after(pending: int, cap: int, new: int = 1) -> int | None:
    """Whether a tenant with ``pending`` jobs not yet final may submit ``new`` more under ``cap``
    (JOBTRAIL_TENANT_MAX_PENDING; 0: no cap): None when it may, else the Retry-After in seconds.
    A batch is admitted or refused whole; one larger than the cap itself is always refused."""
    if cap <= 0 or pending + new <= cap:
        return None
    return TENANT_CAP_RETRY_AFTER_S
