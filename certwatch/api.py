"""The management API: `POST /v1/<Action>` for every registered action, `/healthz`, `/metrics`.

Every error, wherever raised, leaves here as `{"RequestId", "Code", "Message"}`.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from certwatch import errors
from certwatch.actions import ACTIONS
from certwatch.actions.registry import Action
from certwatch.dispatch import dispatch
from certwatch.service import Service

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024


def _error(request_id: str, exc: errors.ApiError) -> JSONResponse:
    body = {"RequestId": request_id, "Code": exc.code, "Message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers={"X-Request-Id": request_id})


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "missing":
            problems.append(f"missing parameter {where!r}")
        elif err["type"] == "extra_forbidden":
            problems.append(f"unknown parameter {where!r}")
        else:
            problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


async def _read_body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise errors.RequestTooLarge(f"the body is {declared} bytes; the limit is {MAX_BODY}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.RequestTooLarge(f"the body exceeds the limit of {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidJson(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise errors.InvalidJson(
            "the body nests arrays or objects too deeply to be parsed; "
            "an action's parameters need only a few levels"
        ) from exc
    if not isinstance(payload, dict):
        raise errors.InvalidJson("the body must be a JSON object of the action's parameters")
    return payload


def create_app(service: Service) -> FastAPI:
    """The FastAPI application for one service."""
    app = FastAPI(title="certwatch", version="0.1.0", docs_url=None, redoc_url=None)
    token = service.config.api.token

    def authorize(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise errors.Unauthorized("a valid 'Authorization: Bearer <token>' header is required")

    def register(action: Action[Any]) -> None:
        async def endpoint(request: Request) -> JSONResponse:
            request_id = str(uuid.uuid4())
            try:
                authorize(request)
                payload = await _read_body(request)
                try:
                    req = action.request.model_validate(payload)
                except ValidationError as exc:
                    raise errors.InvalidParameter(_describe(exc)) from exc
                result = await run_in_threadpool(dispatch, service, action, req)
            except errors.ApiError as exc:
                return _error(request_id, exc)
            return JSONResponse(
                {"RequestId": request_id, **result}, headers={"X-Request-Id": request_id}
            )

        schema = action.request.model_json_schema()
        app.add_api_route(
            f"/v1/{action.name}",
            endpoint,
            methods=["POST"],
            name=action.name,
            summary=action.summary,
            tags=["changing" if action.changing else "reading"],
            openapi_extra={"requestBody": {"content": {"application/json": {"schema": schema}}}},
        )

    for action in ACTIONS.values():
        register(action)

    @app.post("/v1/{name}", include_in_schema=False)
    async def unknown_action(name: str) -> JSONResponse:
        message = f"there is no action {name!r}; see /openapi.json"
        return _error(str(uuid.uuid4()), errors.InvalidAction(message))

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        parts = service.healthy()
        ok = all(parts.values())
        return JSONResponse({"Healthy": ok, **parts}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        failure = errors.ApiError(str(exc.detail), code=code, status=exc.status_code)
        return _error(str(uuid.uuid4()), failure)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return _error(str(uuid.uuid4()), errors.ApiError("internal error; see the service log"))

    return app
