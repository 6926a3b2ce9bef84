"""Properties of the retry backoff policy."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain import Backoff

policies = st.builds(
    Backoff,
    base_s=st.floats(0.01, 10),
    factor=st.floats(1, 4),
    cap_s=st.floats(10, 3600),
    jitter=st.floats(0, 1),
    rng=st.integers(0, 2**32).map(random.Random),
)
attempts = st.integers(1, 200)


@given(policies, attempts)
def test_delay_stays_within_the_jitter_band_under_the_cap(policy: Backoff, attempt: int) -> None:
    ceiling = policy.ceiling(attempt)
    delay = policy.delay(attempt)
    assert 0 <= delay <= ceiling <= policy.cap_s
    assert delay >= ceiling * (1 - policy.jitter) - 1e-9


@given(policies, attempts)
def test_ceiling_never_decreases(policy: Backoff, attempt: int) -> None:
    assert policy.ceiling(attempt + 1) >= policy.ceiling(attempt)


@given(st.floats(0.01, 10), st.floats(1.01, 4))
def test_ceiling_reaches_the_cap(base: float, factor: float) -> None:
    policy = Backoff(base_s=base, factor=factor, cap_s=60, jitter=0)
    assert policy.ceiling(10_000) == 60


def test_without_jitter_delays_double() -> None:
    policy = Backoff(base_s=1, factor=2, cap_s=100, jitter=0)
    assert [policy.delay(a) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 64, 100]


def test_jitter_spreads_retries() -> None:
    policy = Backoff(base_s=10, factor=2, cap_s=100, jitter=1, rng=random.Random(7))
    assert len({round(policy.delay(3), 6) for _ in range(50)}) > 40


@pytest.mark.parametrize(
    "kwargs", [{"base_s": -1}, {"factor": 0.5}, {"jitter": 2}, {"base_s": 10, "cap_s": 1}]
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]
