"""The projector's tuning, read from the environment (prefix JOBTRAIL_PROJECTOR_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProjectorSettings(BaseSettings):
    """Projector tuning (prefix JOBTRAIL_PROJECTOR_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_PROJECTOR_", extra="ignore")

    poll_s: float = Field(default=1.0, gt=0, description="fallback poll when no NOTIFY arrives")
    relay_batch: int = Field(default=500, ge=1)
    projection_batch: int = Field(default=1000, ge=1)
    prune_s: float = Field(
        default=60.0, ge=0, description="how often expired final jobs leave the list indexes"
    )
    leader_check_s: float = Field(default=1.0, gt=0)
