"""A small client of the HTTP API."""

from __future__ import annotations

import getpass
import os
from typing import Any

import httpx


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


def principal() -> str:
    """Who acts, as the API records it (``api:<X-Principal>``): JOBTRAIL_PRINCIPAL, else the
    login name of the user running the command. A header carries printable ASCII only, so any
    other character is escaped (``josé`` -> ``jos\\u00e9``) instead of failing every command."""
    named = os.environ.get("JOBTRAIL_PRINCIPAL")
    if not named:
        try:
            named = getpass.getuser()
        except (KeyError, OSError):  # no login name (a bare container): still say it was the CLI
            named = "cli"
    return "".join(c if " " <= c <= "~" else f"\\u{ord(c):04x}" for c in named)


class Client:
    def __init__(self, url: str | None = None, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=url or base_url(), timeout=timeout, headers={"X-Principal": principal()}
        )

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
