"""Per-key rate limits and the per-tenant pending cap (shared/ratelimit.py), on a clock the test
moves: throttled-py reads time through ``throttled.utils.now_mono_f``, which is replaced here."""

from __future__ import annotations

import tracemalloc
import uuid

import pytest
import throttled.utils

from shared.ratelimit import TENANT_CAP_RETRY_AFTER_S, RateLimiter, pending_cap_retry_after
from shared.settings import LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(throttled.utils, "now_mono_f", clock)
    return clock


def spend(limiter: RateLimiter, key: str, times: int) -> list[int | None]:
    return [limiter.check(key) for _ in range(times)]


def test_a_burst_is_allowed_then_refused_with_the_seconds_to_wait(clock: Clock) -> None:
    # Given one request a second after a burst of 4
    limiter = RateLimiter(per_s=1, burst=4)

    # When the burst is spent at once
    assert spend(limiter, "k", 4) == [None] * 4

    # Then the next request waits a second, three at once wait three seconds
    assert limiter.check("k") == 1
    assert limiter.check("k", cost=3) == 3
    # And refused requests spent nothing: 2.5 s later three are half a second short (rounded up)
    clock.advance(2.5)
    assert limiter.check("k", cost=3) == 1
    clock.advance(0.5)
    assert limiter.check("k", cost=3) is None
    assert limiter.check("k") == 1


def test_the_bucket_refills_at_the_rate_and_never_beyond_the_burst(clock: Clock) -> None:
    # Given eight a second after a burst of eight, spent (a rate whose interval, 1/8 s, is exact
    # in binary: at 1/10 s, ten requests in the very same instant of this frozen clock can round
    # to nine; with a real clock time moves between two requests)
    limiter = RateLimiter(per_s=8, burst=8)
    assert spend(limiter, "k", 9) == [None] * 8 + [1]

    # When an eighth of a second passes, one more request is allowed, and no more
    clock.advance(0.125)
    assert spend(limiter, "k", 2) == [None, 1]

    # When an hour passes, the bucket holds the burst again, not an hour's worth
    clock.advance(3600)
    assert spend(limiter, "k", 9) == [None] * 8 + [1]


def test_keys_are_independent(clock: Clock) -> None:
    limiter = RateLimiter(per_s=1, burst=3)
    assert spend(limiter, "key-a", 4) == [None, None, None, 1]
    assert spend(limiter, "key-b", 4) == [None, None, None, 1]
    assert limiter.check("key-a") == 1


def test_a_cost_above_the_burst_needs_a_full_bucket_and_no_more(clock: Clock) -> None:
    limiter = RateLimiter(per_s=1, burst=3)
    assert limiter.check("k", cost=1_000) is None  # a full bucket: admitted, bucket emptied
    assert limiter.check("k", cost=1_000) == 3  # refills to the burst in 3 s, then admitted
    clock.advance(3)
    assert limiter.check("k", cost=1_000) is None


def test_a_key_not_seen_for_a_while_is_forgotten_first(clock: Clock) -> None:
    # Given room for three keys, and key a spent
    limiter = RateLimiter(per_s=1, burst=2, max_keys=3)
    assert spend(limiter, "a", 3) == [None, None, 1]

    # When three other keys are seen after it
    for key in ("b", "c", "d"):
        limiter.check(key)

    # Then a, the least recently seen, was forgotten: it starts again with a full bucket
    assert spend(limiter, "a", 3) == [None, None, 1]
    # While d, seen last, is remembered
    assert spend(limiter, "d", 2) == [None, 1]


def test_many_distinct_keys_cannot_grow_memory_beyond_the_bound(clock: Clock) -> None:
    tracemalloc.start()
    try:
        # Given room for 1,000 keys, and what 1,000 distinct keys hold
        limiter = RateLimiter(per_s=1_000, burst=2_000, max_keys=1_000)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1_000):
            limiter.check(uuid.uuid4().hex)
        full = tracemalloc.get_traced_memory()[0] - before

        # When 50 times as many distinct keys come, all within the same instant
        for _ in range(50_000):
            limiter.check(uuid.uuid4().hex)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    # Then memory did not grow with them (each new key replaced the least recently seen)
    assert full > 100_000  # about 250 bytes a key
    assert grown < 1.5 * full, (full, grown)


def test_zero_turns_the_limit_off(clock: Clock) -> None:
    limiter = RateLimiter(per_s=0, burst=1)
    assert not limiter.enabled
    assert spend(limiter, "k", 10_000) == [None] * 10_000


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The defaults are far above what the benchmarks and tests send per key and per process
    defaults = LimitSettings()
    assert (defaults.rate_limit_per_s, defaults.rate_limit_burst) == (1_000, 2_000)
    assert defaults.rate_limit_max_keys == 10_000
    assert defaults.tenant_max_pending == 100_000
    assert RateLimiter.from_settings(defaults).enabled
    # And each is read from the environment
    monkeypatch.setenv("JOBTRAIL_RATE_LIMIT_PER_S", "0")
    monkeypatch.setenv("JOBTRAIL_RATE_LIMIT_BURST", "5")
    monkeypatch.setenv("JOBTRAIL_TENANT_MAX_PENDING", "0")
    settings = LimitSettings()
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (0, 5)
    assert not RateLimiter.from_settings(settings).enabled
    assert settings.tenant_max_pending == 0


def test_burst_and_keys_must_be_positive() -> None:
    for bad in ({"per_s": -1, "burst": 1}, {"per_s": 1, "burst": 0}):
        with pytest.raises(ValueError):
            RateLimiter(**bad)
    with pytest.raises(ValueError):
        RateLimiter(1, 1, max_keys=0)


@pytest.mark.parametrize(
    ("pending", "cap", "new", "expected"),
    [
        (0, 100, 1, None),
        (99, 100, 1, None),  # the hundredth pending job is allowed
        (100, 100, 1, TENANT_CAP_RETRY_AFTER_S),
        (5_000, 100, 1, TENANT_CAP_RETRY_AFTER_S),
        (90, 100, 10, None),  # a batch that just fits
        (91, 100, 10, TENANT_CAP_RETRY_AFTER_S),  # one that does not is refused whole
        (0, 100, 101, TENANT_CAP_RETRY_AFTER_S),  # larger than the cap itself
        (10**9, 0, 1_000, None),  # 0: no cap
    ],
)
def test_the_pending_cap(pending: int, cap: int, new: int, expected: int | None) -> None:
    assert pending_cap_retry_after(pending, cap, new) == expected
