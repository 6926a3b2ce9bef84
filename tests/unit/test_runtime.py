"""tune_runtime puts the event loop on uvloop when JOBTRAIL_UVLOOP says so, and only then."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from shared.runtime import tune_runtime
from shared.settings import RuntimeSettings


@pytest.fixture(autouse=True)
def stock_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(None)
    yield
    asyncio.set_event_loop_policy(before)


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBTRAIL_UVLOOP", raising=False)
    tune_runtime()
    assert issubclass(asyncio.run(_loop_type()), uvloop.Loop)


def test_the_stock_loop_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBTRAIL_UVLOOP", "false")
    assert RuntimeSettings().uvloop is False
    tune_runtime()
    assert not issubclass(asyncio.run(_loop_type()), uvloop.Loop)
