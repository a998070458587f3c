"""Shared fixtures: a Service on each store (SQLite, and PostgreSQL when CERTWATCH_TEST_PG_URL is
set), and an API client speaking real HTTP semantics through the ASGI app."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from certwatch.api.http import create_app
from certwatch.app.service import Service
from certwatch.config import Config

PG_URL = os.environ.get("CERTWATCH_TEST_PG_URL")
REQUIRE_TOOLS = os.environ.get("CERTWATCH_TEST_REQUIRE_TOOLS") == "1"


def require(condition: bool, why: str) -> None:
    """Skip when a tool or server is missing, unless CI demands everything (then fail)."""
    if condition:
        return
    if REQUIRE_TOOLS:
        pytest.fail(f"required for this run: {why}")
    pytest.skip(why)


@contextmanager
def pg_schema() -> Iterator[str]:
    """A new, empty schema on the test PostgreSQL; its URL (search_path set) is yielded."""
    require(PG_URL is not None, "CERTWATCH_TEST_PG_URL is not set")
    assert PG_URL is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store: a SQLite file, or a new schema on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'certwatch.db'}"
        return
    with pg_schema() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL, for what only a shared store does."""
    with pg_schema() as url:
        yield url


def make_config(tmp_path: Path, store_url: str | None = None, **sections: Any) -> Config:
    """A Config rooted in tmp_path, with sections given as dicts (e.g. alerts={...})."""
    data: dict[str, Any] = {"data_dir": str(tmp_path), **sections}
    if store_url:
        data["store"] = {"url": store_url}
    return Config.model_validate(data)


@pytest.fixture
def service(tmp_path: Path, store_url: str) -> Iterator[Service]:
    """A control-plane Service with no data plane, on each store."""
    svc = Service(make_config(tmp_path, store_url))
    yield svc
    svc.close()


class Api:
    """Calls actions through the real ASGI app and returns (status, body)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def __call__(self, action: str, **params: Any) -> tuple[int, dict[str, Any]]:
        """POST /v1/<action> with params as the JSON body."""
        response = self.client.post(f"/v1/{action}", json=params)
        return response.status_code, response.json()

    def ok(self, action: str, **params: Any) -> dict[str, Any]:
        """Call and require success."""
        status, body = self(action, **params)
        assert status == 200, body
        assert body["RequestId"]
        return body

    def fails(self, action: str, code: str, status: int = 400, **params: Any) -> str:
        """Call and require the given error; return its Message."""
        got_status, body = self(action, **params)
        assert (got_status, body.get("Code")) == (status, code), body
        assert body["Message"] and body["RequestId"]
        return str(body["Message"])


@pytest.fixture
def api(service: Service) -> Iterator[Api]:
    """An API client for the service."""
    with TestClient(create_app(service)) as client:
        yield Api(client)


@pytest.fixture(autouse=True)
def _declared_error_codes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every refusal an action answers in this test has a Code its OpenAPI entry lists, under
    the status it is answered with."""
    from certwatch import errors
    from certwatch.api.dispatch import Dispatcher
    from certwatch.api.http import status_of

    undeclared: list[str] = []
    run = Dispatcher.__call__

    def checked(self: Dispatcher, action: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return run(self, action, req, *args, **kwargs)
        except errors.ApiError as exc:
            if exc.code not in action.codes or status_of(exc.code) != exc.status:
                undeclared.append(f"{action.name}: {exc.code} ({exc.status})")
            raise

    monkeypatch.setattr(Dispatcher, "__call__", checked)
    yield
    assert not undeclared, f"error codes missing from the actions' declarations: {undeclared}"
