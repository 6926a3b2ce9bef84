"""Fixtures of the dashboard's browser tests: the four services as processes, Debian's chromium
driven by Playwright (never a browser Playwright downloads), and a tenant of each test's own.

Without /usr/bin/chromium the tests skip on a laptop and fail under CI=true (`make services`
installs it: scripts/ensure-services.sh)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api import bearer, issue_key
from tests.processes import System, free_port, system_env
from tests.services import forget_prefix, fresh_database, in_ci

CHROMIUM = os.environ.get("JOBTRAIL_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="package")
def browser_postgres_url(postgres_server: str) -> Iterator[str]:
    with fresh_database(postgres_server, "browser") as url:
        yield url


@pytest.fixture(scope="package")
def system(
    browser_postgres_url: str,
    amqp_url: str,
    redis_url: str,
    topology_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    rabbit_cleanup: None,
) -> Iterator[System]:
    """submitter, scheduler, projector and two workers, each its own OS process."""
    log_dir: Path = tmp_path_factory.mktemp("services")
    port = free_port()
    # names of its own: a Redis position left by another package's system (same session prefix,
    # another database) would make this projection skip the fresh log's first events
    prefix = f"{topology_prefix}-ui"
    env = system_env(browser_postgres_url, amqp_url, redis_url, prefix, port)
    running = System(env, log_dir, port)
    running.start(("projector", "scheduler", "worker-a", "worker-b", "submitter"))
    try:
        running.wait_ready()
        yield running
        crashed = [
            s.name for s in running.services.values() if s.process and s.process.poll() is not None
        ]
        assert not crashed, f"services died during the tests: {crashed}\n{running.logs()}"
    finally:
        running.stop()
        forget_prefix(amqp_url, redis_url, prefix)
        print(running.logs())


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright's Python client."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: run `make services` (apt-get install chromium)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each page's screenshot is written (JOBTRAIL_SCREENSHOTS, else the pytest tmp dir)."""
    chosen = os.environ.get("JOBTRAIL_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("screenshots")


@dataclass
class Tenant:
    """A tenant of one test: its name, its key, and an HTTP client that sends the key."""

    name: str
    key: str
    client: httpx.Client

    @property
    def actor(self) -> str:
        return f"key:{self.key.split('_')[1]}@{self.name}"


@pytest.fixture
def tenant(system: System) -> Iterator[Tenant]:
    name = f"ui-{uuid.uuid4().hex[:10]}"
    key = issue_key(
        system.env["JOBTRAIL_POSTGRES_URL"],
        tenant=name,
        scopes=("submit", "read", "cancel", "audit"),
        name="browser test",
    )
    with httpx.Client(base_url=system.base_url, headers=bearer(key), timeout=10) as client:
        # the submitter re-reads keys every half second
        for _ in range(100):
            if client.get("/v1/overview").status_code == 200:
                break
            time.sleep(0.1)
        yield Tenant(name, key, client)


@pytest.fixture
def page(browser: Any, system: System) -> Iterator[Any]:
    """A fresh browser tab (its own sessionStorage) at a laptop's size."""
    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=system.base_url)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message: Any) -> None:
        # an API answer of 4xx is logged by the browser as "Failed to load resource"; the
        # tests look at what the page makes of it. Any other error is the page's fault.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    tab.on("console", console)
    try:
        yield tab
        assert not errors, f"the page reported errors: {errors}"
    finally:
        context.close()


def sign_in(page: Any, key: str, where: str = "#/") -> None:
    """Opens the dashboard and types the key into its sign-in form, as an operator does."""
    page.goto("/ui/" + where)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
