"""The health server's routes, and how readiness judges progress (shared/health.py)."""

from __future__ import annotations

import time

import httpx
import pytest

from services.scheduler.handlers import Sweeps
from shared.health import (
    DEFAULT_PORTS,
    Health,
    HealthSettings,
    LogHead,
    Progress,
    lagging,
    stuck,
)


async def test_the_health_port_answers_healthz_readyz_metrics() -> None:
    health = Health("worker", HealthSettings(port=0))
    reason: list[str] = []
    health.check("consuming", lambda: reason[0] if reason else None)
    port = await health.serve()
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            starting = await http.get("/readyz")
            health.started = True
            ready = await http.get("/readyz")
            reason.append("not consuming: messages wait")
            stalled = await http.get("/readyz")
            metrics = await http.get("/metrics")
            missing = await http.get("/nope")
            posted = await http.post("/readyz")
    finally:
        await health.aclose()
    assert starting.status_code == 503 and starting.json()["checks"]["started"] == "starting"
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"started": "ok", "consuming": "ok"}}
    assert stalled.status_code == 503
    assert stalled.json()["checks"]["consuming"] == "not consuming: messages wait"
    assert metrics.status_code == 200 and "jobtrail_store_commands_total" in metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert missing.status_code == 404 and posted.status_code == 405


async def test_a_port_file_names_the_free_port_picked(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "worker.port"
    health = Health("worker", HealthSettings(port=0, port_file=path))
    port = await health.serve()
    await health.aclose()
    assert port not in DEFAULT_PORTS.values() and int(path.read_text()) == port


def test_the_old_metrics_port_is_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HealthSettings(port=0).port == 0
    monkeypatch.setenv("JOBTRAIL_METRICS_PORT", "9101")
    assert HealthSettings().port == 9101
    monkeypatch.setenv("JOBTRAIL_HEALTH_PORT", "9102")
    assert HealthSettings().port == 9102


def test_a_follower_at_the_head_of_other_events_does_not_lag() -> None:
    # Given a relay at 10 (it publishes only some kinds) and a head of 15 read before it
    # last found nothing more to read
    head, relay = LogHead(), Progress()
    relay.start(10)
    head.record(15)
    relay.idle()
    # Then it is not behind, and not stuck however long ago it moved
    assert head.lag(relay) == (0, 0.0)
    relay.moved_at -= 3600
    assert stuck("relay", relay, head, 30)() is None


def test_a_follower_that_stops_lags_and_is_stuck() -> None:
    head, relay = LogHead(), Progress()
    relay.start(10)
    head.record(15)  # read after it last found nothing: five events it has not done
    events, seconds = head.lag(relay)
    assert events == 5 and seconds >= 0
    assert stuck("relay", relay, head, 30)() is None  # it moved just now
    relay.moved_at -= 31
    reason = stuck("relay", relay, head, 30)()
    assert reason is not None and "relay stuck at notification 10" in reason
    relay.advanced(15)
    assert stuck("relay", relay, head, 30)() is None
    relay.active = False  # not the leader here: nothing to judge
    relay.advanced(10)
    relay.moved_at -= 60
    assert stuck("relay", relay, head, 30)() is None


def test_a_projection_past_either_bound_is_not_ready() -> None:
    head, projection = LogHead(), Progress()
    projection.start(100)
    head.record(150)
    check = lagging("projection", projection, head, max_events=100, max_s=30)
    assert check() is None
    head.record(301)  # 201 events behind
    assert "201 events" in (check() or "")
    projection.advanced(300)
    assert check() is None
    # last at the head 50 s ago; the head was past 300 from a reading 40 s ago
    now = time.monotonic()
    projection.caught_up_at = now - 50
    head.readings.clear()
    head.readings.extend([(now - 40, 301), (now, 301)])
    assert "1 events, 40 s behind the log head" in (check() or "")
    projection.advanced(301)
    assert check() is None


def test_a_leader_without_a_sweep_is_not_ready_and_a_standby_is() -> None:
    sweeps = Sweeps()
    check = sweeps.stalled(2.0)
    assert check() is None  # not the leader
    sweeps.active, sweeps.swept_at = True, time.monotonic() - 3
    assert "no sweep ended for 3 s" in (check() or "")
    sweeps.swept_at = time.monotonic()
    assert check() is None


def test_a_lag_counts_from_the_first_reading_past_the_follower_however_many_followed() -> None:
    # Given a projection stopped at 100 while the head reached 150 a hundred seconds ago
    head, projection = LogHead(), Progress()
    projection.start(100)
    projection.caught_up_at -= 200
    head.readings.append((time.monotonic() - 100, 150))
    # When the monitor reads the same head many times more
    for _ in range(5000):
        head.record(150)
    # Then the lag still counts from that first reading
    events, seconds = head.lag(projection)
    assert events == 50 and seconds >= 100


def test_a_projection_sent_back_to_the_start_lags_from_there() -> None:
    # Given a projection at the head of a quiet log (15 events)
    head, projection = LogHead(), Progress()
    projection.start(0)
    head.record(15)
    projection.advanced(15)
    projection.idle()
    assert head.lag(projection)[0] == 0
    # When Redis loses its data: the position read back is 0 (a rebuild from the start)
    projection.at(0)
    # Then its lag counts from 0, not from its old catch-up (the log did not move meanwhile)
    assert head.lag(projection)[0] == 15
    # And a position read back at or past where it was changes nothing else
    projection.at(15)
    projection.idle()
    assert head.lag(projection)[0] == 0
