"""A small client of the HTTP API."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.cli.console import fail

T = TypeVar("T")


class ApiError(Exception):
    """The API answered with a problem document."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body
        errors = body.get("errors") or []
        fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
        super().__init__(f"{status} {body.get('title', '')}: {fields or body.get('detail', '')}")


def base_url() -> str:
    return os.environ.get(
        "JOBTRAIL_API_URL",
        f"http://127.0.0.1:{os.environ.get('JOBTRAIL_SUBMITTER_PORT', '8080')}",
    )


LOCAL_KEY_FILE = Path(".jobtrail/api-key")
"""Where ``jobtrail up`` and ``jobtrail demo`` keep the local key they create (mode 0600)."""


def api_key() -> str:
    """The API key every request sends (JOBTRAIL_API_KEY); ``jobtrail up`` and ``jobtrail demo``
    write a local one to .jobtrail/api-key, read when the variable is not set."""
    key = os.environ.get("JOBTRAIL_API_KEY", "").strip()
    if not key and LOCAL_KEY_FILE.is_file():
        key = LOCAL_KEY_FILE.read_text().strip()
    return key


class Client:
    def __init__(self, url: str | None = None, timeout: float = 30.0) -> None:
        key = api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url or base_url(), timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            raise ApiError(response.status_code, body)
        return response.json()

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json(self.http.post("/v1/jobs", json=job)))

    def submit_batch(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self._json(self.http.post("/v1/jobs/batch", json={"jobs": jobs})))

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self._json(self.http.get(f"/v1/jobs/{job_id}")))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._json(self.http.get(f"/v1/jobs/{job_id}/events")))

    def dead_letters(self, job_id: str | None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"job_id": job_id} if job_id else {})
        return list(self._json(self.http.get("/v1/dead-letters", params=params)))

    def quarantined(self, job_id: str | None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"job_id": job_id} if job_id else {})
        return list(self._json(self.http.get("/v1/quarantine", params=params)))

    def cancel(self, job_id: str, reason: str | None) -> dict[str, Any]:
        body = {"reason": reason} if reason else None
        return dict(self._json(self.http.post(f"/v1/jobs/{job_id}/cancel", json=body)))

    def requeue(self, job_id: str, reason: str, extra_attempts: int) -> dict[str, Any]:
        body = {"reason": reason, "extra_attempts": extra_attempts}
        return dict(self._json(self.http.post(f"/v1/jobs/{job_id}/requeue", json=body)))

    def list(self, status: str | None, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return dict(self._json(self.http.get("/v1/jobs", params=params)))

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def call(request: Callable[[Client], T]) -> T:
    """One request of a CLI command; an API error ends the command with its problem document."""
    try:
        return request(Client())
    except ApiError as exc:
        raise fail(str(exc)) from None
