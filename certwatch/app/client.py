"""A small client of the management API, used by the CLI (and handy in scripts)."""

from __future__ import annotations

from typing import Any

import httpx


class ApiFailure(Exception):
    """The API answered with an error, or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Unreachable(ApiFailure):
    """No certwatch API answered at the URL: nothing listens, or something else answers."""


class Client:
    """Calls `POST /v1/<Action>` on a running certwatch."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.base_url = base_url

    def call(self, action: str, **params: Any) -> dict[str, Any]:
        """Run one action; raise ApiFailure with the API's Code and Message on error."""
        body = {key: value for key, value in params.items() if value is not None}
        try:
            response = self._http.post(f"/v1/{action}", json=body)
        except httpx.HTTPError as exc:
            raise Unreachable(
                "Unreachable", f"cannot reach certwatch at {self.base_url}: {exc}"
            ) from exc
        try:
            payload: dict[str, Any] = response.json()
        except ValueError as exc:
            raise Unreachable(
                "BadResponse",
                f"{self.base_url} does not answer as certwatch: HTTP {response.status_code}",
            ) from exc
        if response.status_code != 200:
            raise ApiFailure(payload.get("Code", "Error"), payload.get("Message", response.text))
        return payload

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
