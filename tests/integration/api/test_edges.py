"""The management API's edges over real HTTP: deep JSON, strict parameter types, listener
addresses and ports, slow and vanishing clients, authorization, 405 and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import SQLModel

from certwatch.service import Service
from tests.integration.servers import api_server

DEEP = 100_000


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    """An HTTP client of the service's API served by a real uvicorn on a free port."""
    with api_server(service) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def stored(service: Service) -> dict[str, list[Any]]:
    """Every row of every table of the store, to show that a refused call changed nothing."""
    with service.engine.connect() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(select(table))]
            for table in SQLModel.metadata.sorted_tables
        }


@pytest.mark.parametrize(
    "body",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a": ' * DEEP + "1" + "}" * DEEP,
        '{"LoadBalancerName": ' + "[" * DEEP + "]" * DEEP + "}",
    ],
    ids=["arrays", "objects", "inside-a-parameter"],
)
def test_json_nested_100000_deep_is_invalid_json(
    service: Service, http: httpx.Client, body: str
) -> None:
    """JSON nested 100,000 deep is a 400 InvalidJson that says it nests too deeply."""
    before = stored(service)
    response = http.post("/v1/CreateLoadBalancer", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["Code"] == "InvalidJson"
    assert "too deeply" in response.json()["Message"]
    assert stored(service) == before
