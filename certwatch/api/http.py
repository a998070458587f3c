"""The management API: `POST /v1/<Action>` for every registered action, `/healthz`, `/metrics`,
the OpenAPI document (`/openapi.json`) and its interactive page (`/docs`, assets served here).

Every error, wherever raised, leaves here as `{"RequestId", "Code", "Message"}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from certwatch import errors
from certwatch.api import ACTIONS
from certwatch.api.dispatch import Dispatcher
from certwatch.api.limits import ConnectionLimits, limited_protocol
from certwatch.api.registry import Action
from certwatch.api.responses import DryRunResponse, ErrorResponse, response_of
from certwatch.config import ApiConfig
from certwatch.node import Node

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024
SCHEMA_REF = "#/components/schemas/{model}"
BEARER = "bearer"
"""The name of the bearer-token security scheme in the OpenAPI document."""
SWAGGER_STATIC = Path(__file__).parent / "static" / "swagger-ui"
"""Swagger UI's files, vendored (static/swagger-ui/README.md): /docs loads nothing else."""
ERRORS = {
    "400": "Refused: a parameter or the request is wrong, or one of the action's own rules "
    "refused it.",
    "401": "Unauthorized: api.token is set and the call has no valid bearer token.",
    "404": "An id that names nothing (<Object>NotFound).",
    "409": "Another change won the race; nothing changed, retry.",
    "413": "The body is over 1 MiB.",
    "500": "The service's own fault (see its log); nothing changed.",
    "503": "The store, the proxy or the API is unavailable for now; nothing changed, retry.",
}
"""What each error status means; an action's entry lists the codes it answers with each."""
CLIENT_GONE = 499
"""The status of a request whose client disconnected (logged, never sent: nobody to send to)."""


def _error(
    request_id: str, exc: errors.ApiError, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"RequestId": request_id, "Code": exc.code, "Message": exc.message}
    headers = {**(headers or {}), "X-Request-Id": request_id}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive,
    RFC 7235), or None."""
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip(" ") if scheme.lower() == "bearer" else None


class BearerToken:
    """Every `/v1/` call needs `Authorization: Bearer <token>`, checked before routing, so an
    unknown action or a wrong method is a 401 too when unauthenticated."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _authorized(self, scope: Scope) -> bool:
        given = _bearer(Headers(scope=scope).get("authorization", ""))
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401 to an unauthorized `/v1/` call; pass everything else on."""
        guarded = scope["type"] == "http" and scope["path"].startswith("/v1/")
        if not guarded or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        refusal = errors.Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
        response = _error(str(uuid.uuid4()), refusal, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class ApiApp(FastAPI):
    """FastAPI whose OpenAPI document also holds the request models in `components/schemas`,
    where the request bodies' `$ref`s point."""

    def __init__(self, definitions: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.definitions = definitions

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (built once by FastAPI), with the request and response models
        and the bearer-token scheme added."""
        document = super().openapi()
        components = document.setdefault("components", {})
        components.setdefault("schemas", {}).update(self.definitions)
        components["securitySchemes"] = {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "api.token, as `Authorization: Bearer <token>`; every /v1 "
                "call needs it when api.token is set.",
            }
        }
        return document


def _request_schemas() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each action's request body schema (a `$ref`), and the definitions they refer to."""
    mode: JsonSchemaMode = "validation"
    models: list[type[BaseModel]] = list(dict.fromkeys(a.request for a in ACTIONS.values()))
    refs, top = models_json_schema([(m, mode) for m in models], ref_template=SCHEMA_REF)
    bodies = {name: refs[(a.request, mode)] for name, a in ACTIONS.items()}
    return bodies, top.get("$defs", {})


def _response_schemas() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each action's success answer schema (a `$ref`, or either it or the DryRun answer for a
    changing action), and the definitions they refer to (the error body's included)."""
    mode: JsonSchemaMode = "serialization"
    answers = {name: response_of(name) for name in ACTIONS}
    models: list[type[BaseModel]] = list(
        dict.fromkeys([*answers.values(), DryRunResponse, ErrorResponse])
    )
    refs, top = models_json_schema([(m, mode) for m in models], ref_template=SCHEMA_REF)
    schemas: dict[str, dict[str, Any]] = {}
    for name, model in answers.items():
        schema = refs[(model, mode)]
        if ACTIONS[name].changing:
            schema = {"anyOf": [schema, refs[(DryRunResponse, mode)]]}
        schemas[name] = schema
    return schemas, top.get("$defs", {})


def _statuses() -> dict[str, int]:
    """The HTTP status of every error code a class of `errors` fixes."""
    found: dict[str, int] = {}
    pending: list[type[errors.ApiError]] = [errors.ApiError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "code" in vars(cls) or cls is errors.ApiError:
            found[cls.code] = cls.status
    return found


STATUS_OF_CODE = _statuses()


def status_of(code: str) -> int:
    """The HTTP status an error code is answered with (`<Object>NotFound` 404; the codes
    raised as `BadRequest` with a code of their own, 400)."""
    if code in STATUS_OF_CODE:
        return STATUS_OF_CODE[code]
    return 404 if code.endswith("NotFound") else 400


def _responses(answer: dict[str, Any], summary: str, codes: Sequence[str]) -> dict[str, Any]:
    """An action's `responses` in the OpenAPI document: its answer, and per error status the
    codes it can answer with (the `Code` of the error body, as an enum)."""
    by_status: dict[str, list[str]] = {}
    for code in codes:
        by_status.setdefault(str(status_of(code)), []).append(code)
    error = {"$ref": SCHEMA_REF.format(model="ErrorResponse")}
    responses: dict[str, Any] = {
        "200": {"description": summary, "content": {"application/json": {"schema": answer}}}
    }
    for status in sorted(by_status):
        listed = sorted(by_status[status])
        schema = {"allOf": [error, {"properties": {"Code": {"enum": listed}}}]}
        responses[status] = {
            "description": f"{ERRORS.get(status, 'Refused.')} Codes: {', '.join(listed)}.",
            "content": {"application/json": {"schema": schema}},
        }
    return responses


def _inline_script_hashes(html: str) -> str:
    """The CSP sources (`'sha256-…'`) of a page's inline scripts."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    )


def _mount_docs(app: FastAPI) -> None:
    """Serve `/docs`: FastAPI's Swagger UI page, with Swagger UI's files served by certwatch
    (`/docs/static/`) and a CSP that allows only them and the page's own inline start-up."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="certwatch API",
        swagger_js_url="/docs/static/swagger-ui-bundle.js",
        swagger_css_url="/docs/static/swagger-ui.css",
        swagger_favicon_url="/docs/static/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},
    )
    html = bytes(page.body).decode()
    csp = (
        f"default-src 'none'; script-src 'self' {_inline_script_hashes(html)}; "
        "style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    app.mount("/docs/static", StaticFiles(directory=SWAGGER_STATIC), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)


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


class Served(Protocol):
    """What the HTTP API serves: a node, the dispatcher of its actions, its metrics."""

    node: Node
    dispatch: Dispatcher
    registry: CollectorRegistry


def create_app(served: Served) -> FastAPI:
    """The FastAPI application of one node (`app.service.Service` is one)."""
    node, dispatch = served.node, served.dispatch
    bodies, definitions = _request_schemas()
    answers, answer_definitions = _response_schemas()
    app = ApiApp(
        {**definitions, **answer_definitions},
        title="certwatch",
        version="0.1.0",
        description="certwatch's management API: every action is `POST /v1/<Action>` with its "
        "parameters as a JSON object; every answer carries `RequestId`, every refusal is "
        "`{RequestId, Code, Message}` and changes nothing.",
        docs_url=None,
        redoc_url=None,
    )
    token = node.config.api.token
    if token:
        app.add_middleware(BearerToken, token=token)
    # With api.token set the bearer token is required; without it, it is accepted and ignored.
    security: list[dict[str, list[str]]] = [{BEARER: []}] if token else [{BEARER: []}, {}]

    def register(action: Action[Any]) -> None:
        async def endpoint(request: Request) -> Response:
            request_id = str(uuid.uuid4())
            try:
                payload = await _read_body(request)
                try:
                    req = action.request.model_validate(payload)
                except ValidationError as exc:
                    raise errors.InvalidParameter(_describe(exc)) from exc
                result = await run_in_threadpool(dispatch, action, req)
            except errors.ApiError as exc:
                return _error(request_id, exc)
            except ClientDisconnect:
                log.debug("%s: the client went away before sending its whole body", action.name)
                return Response(status_code=CLIENT_GONE)
            return JSONResponse(
                {"RequestId": request_id, **result}, headers={"X-Request-Id": request_id}
            )

        body = {"required": True, "content": {"application/json": {"schema": bodies[action.name]}}}
        app.add_api_route(
            f"/v1/{action.name}",
            endpoint,
            methods=["POST"],
            name=action.name,
            summary=action.summary,
            tags=["changing" if action.changing else "reading"],
            openapi_extra={
                "requestBody": body,
                "responses": _responses(answers[action.name], action.summary, action.codes),
                "security": security,
            },
        )

    for action in ACTIONS.values():
        register(action)

    @app.post("/v1/{name}", include_in_schema=False)
    async def unknown_action(name: str) -> JSONResponse:
        message = f"there is no action {name!r}; see /openapi.json"
        return _error(str(uuid.uuid4()), errors.InvalidAction(message))

    _mount_docs(app)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        parts = node.healthy()
        ok = all(parts.values())
        return JSONResponse({"Healthy": ok, **parts}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(served.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        failure = errors.ApiError(str(exc.detail), code=code, status=exc.status_code)
        return _error(str(uuid.uuid4()), failure, exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return _error(str(uuid.uuid4()), errors.ApiError("internal error; see the service log"))

    return app


def server_config(app: FastAPI, api: ApiConfig, host: str, port: int) -> uvicorn.Config:
    """How uvicorn serves the API on host:port: `api`'s header and body deadlines and
    connection cap (`certwatch.api.limits`), no access log, logging left to the node."""
    limits = ConnectionLimits(api.header_timeout, api.body_timeout, api.max_connections)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_protocol(limits),
        log_config=None,
        access_log=False,
    )
