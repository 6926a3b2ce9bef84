"""Retry delays: exponential, capped, with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Gives the delay before retry ``attempt + 1``: base * factor**(attempt-1), capped, jittered.

    With jitter ``j`` in [0, 1], the delay lies in [(1 - j) * d, d] where d is the capped
    exponential delay, so retries of many jobs spread out instead of arriving together.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < self.base_s:
            raise ValueError("need 0 <= base_s <= cap_s")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        try:
            return float(min(self.cap_s, self.base_s * self.factor ** (attempt - 1)))
        except OverflowError:
            return self.cap_s

    def delay(self, attempt: int) -> float:
        """A jittered delay in seconds after failed attempt number ``attempt``."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1 - self.jitter * self.rng.random())
