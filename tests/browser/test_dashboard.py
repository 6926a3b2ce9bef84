"""The dashboard in a real browser (Debian's chromium, Playwright) against the real services:
what an operator sees on each page is what the log and the projection hold."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Tenant, sign_in
from tests.processes import System

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def submit(client: httpx.Client, job_type: str, payload: dict[str, Any], **extra: Any) -> str:
    response = client.post("/v1/jobs", json={"type": job_type, "payload": payload, **extra})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_final(client: httpx.Client, ids: list[str], timeout: float = 90) -> dict[str, str]:
    """Each job's final status, once the projection shows every one of them final."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = {i: client.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
        if all(status in FINAL for status in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, f"jobs not final after {timeout} s: {statuses}"
        time.sleep(0.3)


def test_overview_shows_the_counts_of_a_seeded_workload(
    page: Any, tenant: Tenant, screenshots: Path
) -> None:
    # given a tenant's workload: 4 jobs that complete, 2 that fail for good, 1 due in an hour
    done = [submit(tenant.client, "cpu.hash", {"text": f"t{i}"}) for i in range(4)]
    failing = [
        submit(tenant.client, "test.flaky", {"fail_times": 9, "retryable": False}) for _ in range(2)
    ]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    submit(tenant.client, "cpu.hash", {"text": "later"}, run_at=later)
    statuses = wait_final(tenant.client, done + failing)
    assert sorted(statuses.values()) == ["COMPLETED"] * 4 + ["FAILED"] * 2

    # when the operator signs in with the tenant's key
    sign_in(page, tenant.key)

    # then the overview counts the tenant's jobs, and only its jobs
    expect(page.locator("#count-COMPLETED")).to_have_text("4", timeout=15_000)
    expect(page.locator("#count-FAILED")).to_have_text("2")
    waiting = int(page.locator("#count-PENDING").inner_text()) + int(
        page.locator("#count-SCHEDULED").inner_text()
    )
    assert waiting == 1
    expect(page.locator("#count-RUNNING")).to_have_text("0")
    expect(page.locator('#type-counts tr[data-type="cpu.hash"] td.num')).to_have_text("5")
    expect(page.locator('#type-counts tr[data-type="test.flaky"] td.num')).to_have_text("2")
    # the chart's figures come from the log: 4 completed, 2 failed this quarter of an hour
    expect(page.locator("#chart svg title")).to_contain_text(
        "4 completed, 2 failed",
        timeout=30_000,  # the log's figures are read every 10 s
    )
    expect(page.locator("#lag-relay")).to_have_text(re.compile(r"^\d+ events$"))
    # a key without the admin scope is not shown the dead letters
    expect(page.locator("#dead-letters")).to_be_hidden()
    expect(page.locator("#who")).to_have_text(f"tenant {tenant.name}")
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)

    # and it is live: a job finishing later shows without a reload
    more = submit(tenant.client, "cpu.hash", {"text": "live"})
    wait_final(tenant.client, [more])
    expect(page.locator("#count-COMPLETED")).to_have_text("5", timeout=15_000)


def test_a_jobs_timeline_lists_its_attempts_in_order(
    page: Any, tenant: Tenant, screenshots: Path
) -> None:
    # given a job that fails twice, then succeeds on its third attempt
    job_id = submit(tenant.client, "test.flaky", {"fail_times": 2}, max_attempts=3)
    assert wait_final(tenant.client, [job_id]) == {job_id: "COMPLETED"}
    events = tenant.client.get(f"/v1/jobs/{job_id}/events").json()
    workers = {
        e["data"]["attempt"]: e["data"]["worker_id"] for e in events if e["event_type"] == "Started"
    }

    # when the operator opens the job's page
    sign_in(page, tenant.key, f"#/job/{job_id}")

    # then the attempts are listed in order, each with its worker and outcome
    rows = page.locator("#attempts tbody tr")
    expect(rows).to_have_count(3, timeout=15_000)
    for index, outcome in enumerate(["failed, retried", "failed, retried", "completed"]):
        cells = rows.nth(index).locator("td")
        expect(cells.nth(0)).to_have_text(str(index + 1))
        expect(cells.nth(1)).to_have_text(workers[index + 1])
        expect(cells.nth(4)).to_have_text(outcome)
    # the timeline holds every event of the log in version order, with its actor
    items = page.locator("#timeline li")
    expect(items).to_have_count(len(events))
    shown = [items.nth(i).get_attribute("data-event") for i in range(len(events))]
    assert shown == [e["event_type"] for e in events]
    starts = [e for e in shown if e in ("Started", "AttemptFailed", "Completed")]
    assert starts == ["Started", "AttemptFailed"] * 2 + ["Started", "Completed"]
    expect(items.nth(0).locator(".actor")).to_have_text(tenant.actor)
    expect(page.locator("#outcome")).to_contain_text('"succeeded_on_attempt": 3')
    expect(page.locator("#payload")).to_contain_text('"fail_times": 2')
    expect(page.locator("#verify-result")).to_have_text(
        f"Hash chain intact: {len(events)} event(s) recomputed."
    )

    # and the state at a point of the timeline is the log's: after the first failed attempt
    first_failure = next(e for e in events if e["event_type"] == "AttemptFailed")
    item = page.locator(f'#timeline li[data-version="{first_failure["version"]}"]')
    item.get_by_role("button").click()
    expect(page.locator("#state-title")).to_contain_text(
        f"After version {first_failure['version']} (AttemptFailed"
    )
    expect(page.locator("#state-json")).to_contain_text('"attempt": 1')
    expect(page.locator("#state-title")).to_be_focused()
    page.screenshot(path=str(screenshots / "job.png"), full_page=True)
    # or at a time: the fold of every event stamped at or before it
    at = first_failure["timestamp"]
    then = max(e["version"] for e in events if e["timestamp"] <= at)
    page.get_by_label("Time (ISO 8601 with a zone)").fill(at)
    page.get_by_role("button", name="Show the state then").click()
    expect(page.locator("#state-title")).to_have_text(re.compile(rf"\(version {then}\)$"))


def test_a_bulk_cancel_is_recorded_in_each_history_with_the_principal(
    page: Any, tenant: Tenant, screenshots: Path
) -> None:
    # given three jobs waiting for their time, and one that already completed
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    waiting = [submit(tenant.client, "cpu.hash", {"text": f"w{i}"}, run_at=later) for i in range(3)]
    done = submit(tenant.client, "cpu.hash", {"text": "done"})
    wait_final(tenant.client, [done])
    sign_in(page, tenant.key, "#/jobs")
    rows = page.locator("#jobs-table tbody tr[data-id]")
    expect(rows).to_have_count(4, timeout=15_000)

    # when the operator selects every job on the page and confirms a bulk cancel with a reason
    page.get_by_label("Select every job on this page").check()
    expect(page.locator("#selected-count")).to_have_text("4 selected")
    page.get_by_role("button", name="Cancel selected…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    page.get_by_label(re.compile("^Reason")).fill("load test leftovers")
    page.screenshot(path=str(screenshots / "jobs-confirm.png"))
    dialog.get_by_role("button", name="Cancel 4 job(s)").click()

    # then the page says what was done and by whom, and the list shows them cancelled
    expect(page.locator("#bulk-result")).to_contain_text(
        f"Cancelled (or asked to stop): 3 of 4 job(s), recorded as {tenant.actor}."
    )
    expect(page.locator("#bulk-result li")).to_contain_text(done)
    for job_id in waiting:
        expect(page.locator(f'tr[data-id="{job_id}"]')).to_have_attribute(
            "data-status", "CANCELLED", timeout=15_000
        )
    page.screenshot(path=str(screenshots / "jobs.png"), full_page=True)
    # and each history ends with a Cancelled event naming the key and the reason
    for job_id in waiting:
        last = tenant.client.get(f"/v1/jobs/{job_id}/events").json()[-1]
        assert (last["event_type"], last["actor"], last["reason"]) == (
            "Cancelled",
            tenant.actor,
            "load test leftovers",
        )
    # the completed job's history is unchanged (a conflict records nothing)
    assert tenant.client.get(f"/v1/jobs/{done}/events").json()[-1]["event_type"] == "Completed"


def test_another_tenants_job_is_not_reachable(page: Any, tenant: Tenant, system: System) -> None:
    # given a job of the default tenant
    with system.client() as admin:
        theirs = submit(admin, "cpu.hash", {"text": "not yours"})

    # when the tenant's operator opens it by its id, or searches for it
    sign_in(page, tenant.key, f"#/job/{theirs}")

    # then the page answers as for a job that does not exist
    expect(page.locator("#job-missing")).to_have_text(
        f"404: no job {theirs} in this tenant.", timeout=15_000
    )
    expect(page.locator("#timeline")).to_have_count(0)
    page.goto(f"/ui/#/jobs?q={theirs}")
    expect(page.locator("#jobs-table tbody")).to_have_text("No job matches.")
    assert tenant.client.get(f"/v1/jobs/{uuid.UUID(theirs)}").status_code == 404


def test_the_page_is_served_with_strict_headers_and_no_data_without_a_key(
    page: Any, system: System
) -> None:
    # when the page is loaded without a key
    response = page.goto("/ui/")

    # then it asks for one, and its answer forbids inline scripts, framing and other hosts
    assert response is not None and response.status == 200
    headers = response.headers
    assert headers["content-security-policy"].startswith("default-src 'self'; script-src 'self'")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    expect(page.get_by_label("API key")).to_be_focused()
    # a wrong key is refused by the API and said so
    page.get_by_label("API key").fill("jt_nope_nope")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("refused", timeout=10_000)
    assert httpx.get(f"{system.base_url}/v1/overview").status_code == 401


def test_the_pages_work_from_the_keyboard_and_escape_records_nothing(
    page: Any, tenant: Tenant
) -> None:
    # given a job waiting for its time
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = submit(tenant.client, "cpu.hash", {"text": "k"}, run_at=later)

    # when the operator signs in with the keyboard alone (the key field has the focus)
    page.goto("/ui/#/jobs")
    page.keyboard.type(tenant.key)
    page.keyboard.press("Enter")
    expect(page.locator(f'tr[data-id="{job_id}"]')).to_be_visible(timeout=15_000)

    # and tabs to the job's checkbox, ticks it, opens the bulk cancel and presses Escape
    page.locator(f'tr[data-id="{job_id}"] input[type=checkbox]').focus()
    page.keyboard.press("Space")
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")  # back past the select-all box to "Requeue", then "Cancel"
    page.keyboard.press("Shift+Tab")
    expect(page.locator("#bulk-cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_label(re.compile("^Reason"))).to_be_focused()
    page.keyboard.press("Escape")

    # then nothing was recorded
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert [e["event_type"] for e in tenant.client.get(f"/v1/jobs/{job_id}/events").json()][
        -1
    ] != "Cancelled"
    # and the job's page opens from its link with Enter, its heading reachable
    page.get_by_role("link", name=job_id).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#page-title")).to_have_text(f"Job {job_id[:8]}", timeout=15_000)
    expect(page.locator("#main")).to_be_focused()


def test_failed_jobs_filtered_by_status_are_requeued_with_a_required_reason(
    page: Any, tenant: Tenant
) -> None:
    # given a job that failed for good and one that completed
    failed = submit(tenant.client, "test.flaky", {"fail_times": 9, "retryable": False})
    done = submit(tenant.client, "cpu.hash", {"text": "ok"})
    wait_final(tenant.client, [failed, done])

    # when the operator lists the FAILED jobs with the filter form
    sign_in(page, tenant.key, "#/jobs")
    expect(page.locator("#jobs-table tbody tr[data-id]")).to_have_count(2, timeout=15_000)
    page.get_by_label("Status").select_option("FAILED")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("#jobs-table tbody tr[data-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", failed)
    assert "status=FAILED" in page.url

    # and requeues it: the dialog refuses an empty reason, then takes one
    page.get_by_label("Select every job on this page").check()
    page.get_by_role("button", name="Requeue selected…").click()
    page.get_by_role("dialog").get_by_role("button", name="Requeue 1 job(s)").click()
    expect(page.locator("#confirm-error")).to_have_text("Say why the jobs run again.")
    page.get_by_label(re.compile("^Reason")).fill("flaky upstream fixed")
    page.get_by_role("dialog").get_by_role("button", name="Requeue 1 job(s)").click()

    # then it is recorded with the key and the reason
    expect(page.locator("#bulk-result")).to_contain_text(
        f"Requeued: 1 of 1 job(s), recorded as {tenant.actor}."
    )
    requeued = [
        e
        for e in tenant.client.get(f"/v1/jobs/{failed}/events").json()
        if e["event_type"] == "Requeued"
    ]
    assert [(e["actor"], e["reason"]) for e in requeued] == [(tenant.actor, "flaky upstream fixed")]
