"""The scheduler's tuning, read from the environment (prefix JOBTRAIL_SCHEDULER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SchedulerSettings(BaseSettings):
    """Scheduler tuning (prefix JOBTRAIL_SCHEDULER_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_SCHEDULER_", extra="ignore")

    prefetch: int = Field(default=256, ge=1, description="unacked event messages at once")
    tick_s: float = Field(default=0.5, gt=0, description="how often the leader checks timers")
    sweep_batch: int = Field(default=500, ge=1)
    missed_grace_s: float = Field(
        default=5.0, ge=0, description="a due-now job the bus did not dispatch is swept after this"
    )
    leader_check_s: float = Field(default=1.0, gt=0)
    dispatch_deadline_s: float = Field(
        default=300.0,
        ge=0,
        description="a SCHEDULED job no worker claimed this long gets its work message again "
        "(0: never)",
    )
