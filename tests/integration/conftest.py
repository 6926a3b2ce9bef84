from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.eventstore import JobStore
from shared.settings import StoreSettings


@pytest.fixture
def store_settings(postgres_url: str) -> StoreSettings:
    return StoreSettings(postgres_url=postgres_url, postgres_pool_size=10, postgres_max_overflow=2)


@pytest.fixture
def store(store_settings: StoreSettings) -> Iterator[JobStore]:
    job_store = JobStore(store_settings)
    yield job_store
    job_store.close()
