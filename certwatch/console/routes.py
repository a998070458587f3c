"""The console's pages and forms, mounted on the API's FastAPI app.

Every page reads through API actions and every form runs one API action through the node's
dispatcher (actor `console`): the same validation, history and proxy path as `POST /v1/*`.
A refusal is shown with its `Code` and `Message` beside the form, and changes nothing.
Forms are plain HTML; dialogs and tabs are server-rendered, so no page needs JavaScript.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from certwatch import clock, errors
from certwatch.api import ACTIONS
from certwatch.api.http import Served
from certwatch.console.lifecycle import domain_names, rotates
from certwatch.console.session import COOKIE, Sessions

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""Only the console's own stylesheet; no script, no frame, forms post only to certwatch."""
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NOTICES = {
    "default": "The default certificate was changed.",
    "add": "The additional certificates were added.",
    "delete": "The additional certificate was removed.",
    "ca-on": "Mutual authentication is on.",
    "ca-off": "Mutual authentication is off.",
    "ca-change": "The CA certificate was changed.",
    "rollback": "The previous default certificate was restored.",
    "rotate": "The rotation ran; its result is the newest history entry.",
    "upload": "The certificate was uploaded.",
    "stage": "The certificate was staged; its status and reason are in the table.",
    "request": "The certificate request was placed; it runs in the background.",
    "renew": "The renewal was requested; it is the newest certificate request.",
}
"""The fixed messages a redirect after a change may name (never text from the query)."""
TABS = ("server", "ca", "history")


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'form'}: {err['msg']}" for err in exc.errors()
    )


class Console:
    """The console of one node: its templates, sessions and the dispatcher it calls."""

    def __init__(self, served: Served) -> None:
        self._dispatch = served.dispatch
        self.config = served.node.config
        self.sessions = Sessions(served.node.config.api.token)
        self._env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape()
        )

    async def call(self, name: str, **params: Any) -> dict[str, Any]:
        """Run the API action `name` as the console; raise `errors.ApiError` to refuse."""
        action = ACTIONS[name]
        try:
            req = action.request.model_validate(params)
        except ValidationError as exc:
            raise errors.InvalidParameter(_validation_message(exc)) from exc
        return await run_in_threadpool(self._dispatch, action, req, "console")

    async def all_certificates(self, **filters: Any) -> list[dict[str, Any]]:
        """Every certificate (all pages of `ListCertificates`), soonest expiry first."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.call("ListCertificates", MaxResults=100, NextToken=token, **filters)
            found.extend(page["Certificates"])
            token = page["NextToken"]
            if token is None:
                return sorted(found, key=lambda c: (c["NotAfter"], c["CertificateId"]))

    async def listener_defaults(self) -> dict[str, str]:
        """Each listener's id and its default certificate's NotAfter (listeners without one
        are left out)."""
        found: dict[str, str] = {}
        for listener in (await self.call("ListListeners"))["Listeners"]:
            lid = listener["ListenerId"]
            certs = (await self.call("ListListenerCertificates", ListenerId=lid))["Certificates"]
            for cert in certs:
                if cert["IsDefault"]:
                    found[lid] = cert["NotAfter"]
        return found

    def cookie(self, request: Request) -> str | None:
        """The request's session cookie, when it is one this console issued."""
        value = request.cookies.get(COOKIE)
        return value if self.sessions.valid(value) else None

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page, with the session's CSRF token (a new session when none is needed)."""
        cookie = self.cookie(request)
        fresh = cookie is None and not self.sessions.needs_login
        if fresh:
            cookie = self.sessions.issue()
        csrf = self.sessions.csrf(cookie) if cookie else ""
        html = self._env.get_template(template).render(
            csrf=csrf, signed_in=cookie is not None, login=self.sessions.needs_login, **context
        )
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        if fresh and cookie:
            self.set_cookie(request, response, cookie)
        return response

    @staticmethod
    def set_cookie(request: Request, response: Response, cookie: str) -> None:
        """Keep `cookie` as the session: HttpOnly, SameSite=Strict, Secure over TLS."""
        response.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

    def gate(self, request: Request) -> Response | None:
        """Send a person who must log in first to the login form; None to go on."""
        if self.sessions.needs_login and self.cookie(request) is None:
            return RedirectResponse("/console/login", status_code=303, headers=HEADERS)
        return None

    async def checked_form(self, request: Request) -> dict[str, Any] | Response:
        """The fields of a changing form, or the refusal of a form without this session's
        CSRF token (403, nothing done)."""
        form = await request.form()
        cookie = self.cookie(request)
        given = str(form.get("csrf_token", ""))
        if cookie is None or not self.sessions.csrf_matches(cookie, given):
            refusal = errors.ApiError(
                "the form has no valid CSRF token for this session; reload the page and retry",
                code="InvalidCsrfToken",
                status=403,
            )
            return self.render(request, "refused.html", status=403, error=refusal)
        return {
            key: [str(v) for v in form.getlist(key)] if key.endswith("[]") else str(form[key])
            for key in form
        }


@dataclass(frozen=True)
class ListenerForm:
    """One form of the Manage certificates page: the action it runs, its parameters (from the
    listener id and the form's fields), the tab and dialog it sits in, and its notice."""

    action: str
    params: Callable[[str, dict[str, Any]], dict[str, Any]]
    tab: str
    dialog: str = ""
    done: str = ""


def _one(field: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda form: [form.get(field, "")]


_picked = _one("CertificateId")
LISTENER_FORMS = {
    "default": ListenerForm(
        "UpdateListenerAttribute",
        lambda lid, f: {"ListenerId": lid, "CertificateIds": _picked(f)},
        "server", "default", "default",
    ),
    "add": ListenerForm(
        "AssociateAdditionalCertificatesWithListener",
        lambda lid, f: {
            "ListenerId": lid, "AdditionalCertificateIds": f.get("CertificateIds[]", [])
        },
        "server", "add", "add",
    ),
    "delete": ListenerForm(
        "DisassociateAdditionalCertificatesWithListener",
        lambda lid, f: {"ListenerId": lid, "AdditionalCertificateIds": _picked(f)},
        "server", done="delete",
    ),
    "ca-on": ListenerForm(
        "UpdateListenerAttribute",
        lambda lid, f: {"ListenerId": lid, "CaEnabled": True, "CaCertificateIds": _picked(f)},
        "ca", "ca-on", "ca-on",
    ),
    "ca-off": ListenerForm(
        "UpdateListenerAttribute",
        lambda lid, f: {"ListenerId": lid, "CaEnabled": False},
        "ca", done="ca-off",
    ),
    "ca-change": ListenerForm(
        "UpdateListenerAttribute",
        lambda lid, f: {"ListenerId": lid, "CaCertificateIds": _picked(f)},
        "ca", "ca-change", "ca-change",
    ),
    "rollback": ListenerForm(
        "RollbackListenerCertificate", lambda lid, f: {"ListenerId": lid}, "history",
        done="rollback",
    ),
    "rotate": ListenerForm(
        "RotateListenerCertificate", lambda lid, f: {"ListenerId": lid}, "history",
        done="rotate",
    ),
}


def mount(app: FastAPI, served: Served) -> None:
    """Serve the console of `served` on `app`: `/console/...`, and `/` redirecting there."""
    console = Console(served)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    def page(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            return console.gate(request) or await handler(request)

        return guarded

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @app.get("/console/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return console.render(request, "login.html")

    @app.post("/console/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        given = str((await request.form()).get("token", ""))
        if not console.sessions.token_matches(given):
            refusal = errors.Unauthorized("that is not the API token (api.token)")
            return console.render(request, "login.html", status=401, error=refusal)
        response = RedirectResponse("/console/", status_code=303, headers=HEADERS)
        console.set_cookie(request, response, console.sessions.issue())
        return response

    async def listeners(request: Request) -> Response:
        rows = []
        for listener in (await console.call("ListListeners"))["Listeners"]:
            certs = await console.call(
                "ListListenerCertificates", ListenerId=listener["ListenerId"]
            )
            default = next((c for c in certs["Certificates"] if c["IsDefault"]), None)
            rows.append({**listener, "Default": default})
        return console.render(request, "listeners.html", listeners=rows)

    app.add_api_route("/console/", page(listeners), methods=["GET"], include_in_schema=False)

    async def listener_page(
        request: Request,
        lid: str,
        tab: str,
        dialog: str = "",
        error: errors.ApiError | None = None,
        notice: str = "",
    ) -> Response:
        try:
            listener = await console.call("GetListenerAttribute", ListenerId=lid)
        except errors.ApiError as exc:
            return console.render(request, "refused.html", status=exc.status, error=exc)
        used = (await console.call("ListListenerCertificates", ListenerId=lid))["Certificates"]
        history = (await console.call("ListRotationEvents", ListenerId=lid))["RotationEvents"]
        pending = (await console.call("ListStagedCertificates", Status="Pending"))
        candidates = [
            s for s in pending["StagedCertificates"] if s["ListenerId"] in (None, lid)
        ]
        return console.render(
            request,
            "listener.html",
            status=error.status if error else 200,
            listener=listener,
            tab=tab if tab in TABS else "server",
            dialog=dialog,
            error=error,
            notice=notice,
            default=next((c for c in used if c["Role"] == "default"), None),
            additional=[c for c in used if c["Role"] == "additional"],
            cas=[c for c in used if c["Role"] == "ca"],
            servers=await console.all_certificates(CertificateType="Server"),
            ca_choices=await console.all_certificates(CertificateType="Ca"),
            history=history,
            candidates=candidates,
        )

    async def manage(request: Request) -> Response:
        query = request.query_params
        return await listener_page(
            request,
            request.path_params["lid"],
            query.get("tab", "server"),
            query.get("dialog", ""),
            notice=NOTICES.get(query.get("done", ""), ""),
        )

    app.add_api_route(
        "/console/listeners/{lid}", page(manage), methods=["GET"], include_in_schema=False
    )

    async def listener_change(request: Request) -> Response:
        lid, op = request.path_params["lid"], request.path_params["op"]
        form = LISTENER_FORMS.get(op)
        if form is None:
            return console.render(
                request, "refused.html", status=404,
                error=errors.ApiError(f"there is no form {op!r}", code="NotFound", status=404),
            )
        fields = await console.checked_form(request)
        if isinstance(fields, Response):
            return fields
        try:
            await console.call(form.action, **form.params(lid, fields))
        except errors.ApiError as exc:
            return await listener_page(request, lid, form.tab, form.dialog, error=exc)
        return RedirectResponse(
            f"/console/listeners/{lid}?tab={form.tab}&done={form.done}",
            status_code=303,
            headers=HEADERS,
        )

    app.add_api_route(
        "/console/listeners/{lid}/{op}",
        page(listener_change),
        methods=["POST"],
        include_in_schema=False,
    )

    async def certificates_page(
        request: Request,
        dialog: str = "",
        error: errors.ApiError | None = None,
        entered: dict[str, Any] | None = None,
    ) -> Response:
        query = request.query_params
        cert_type = query.get("type", "")
        within = query.get("expiring", "")
        filters: dict[str, Any] = {}
        if cert_type in ("Server", "Ca", "Client"):
            filters["CertificateType"] = cert_type
        if within.isdigit():
            filters["ExpiringWithinDays"] = int(within)
        used: dict[str, list[str]] = {}
        for listener in (await console.call("ListListeners"))["Listeners"]:
            for role, key in (
                ("default", "CertificateIds"),
                ("additional", "AdditionalCertificateIds"),
                ("CA", "CaCertificateIds"),
            ):
                for cid in listener[key]:
                    used.setdefault(cid, []).append(f"{listener['ListenerId']} ({role})")
        return console.render(
            request,
            "certificates.html",
            status=error.status if error else 200,
            certificates=await console.all_certificates(**filters),
            used=used,
            cert_type=cert_type,
            within=within if within.isdigit() else "",
            dialog=dialog or query.get("dialog", ""),
            error=error,
            entered=entered or {},
            notice=NOTICES.get(query.get("done", ""), ""),
        )

    async def certificates(request: Request) -> Response:
        return await certificates_page(request)

    app.add_api_route(
        "/console/certificates", page(certificates), methods=["GET"], include_in_schema=False
    )

    async def upload(request: Request) -> Response:
        fields = await console.checked_form(request)
        if isinstance(fields, Response):
            return fields
        params = {
            "CertificateName": fields.get("name", ""),
            "CertificateType": fields.get("type", ""),
            "Certificate": fields.get("certificate", ""),
            "PrivateKey": fields.get("private_key") or None,
        }
        try:
            created = await console.call("UploadCertificate", **params)
        except errors.ApiError as exc:
            entered = {k: v for k, v in fields.items() if k in ("name", "type", "certificate")}
            return await certificates_page(request, "upload", exc, entered)
        return RedirectResponse(
            f"/console/certificates/{created['CertificateId']}?done=upload",
            status_code=303,
            headers=HEADERS,
        )

    app.add_api_route(
        "/console/certificates", page(upload), methods=["POST"], include_in_schema=False
    )

    async def certificate(request: Request) -> Response:
        try:
            found = await console.call(
                "GetCertificate", CertificateId=request.path_params["cid"]
            )
        except errors.ApiError as exc:
            return console.render(request, "refused.html", status=exc.status, error=exc)
        return console.render(
            request,
            "certificate.html",
            cert=found["Certificate"],
            notice=NOTICES.get(request.query_params.get("done", ""), ""),
        )

    app.add_api_route(
        "/console/certificates/{cid}", page(certificate), methods=["GET"], include_in_schema=False
    )

    async def alerts_page(
        request: Request,
        scan: dict[str, Any] | None = None,
        tested: list[dict[str, Any]] | None = None,
        error: errors.ApiError | None = None,
    ) -> Response:
        return console.render(
            request,
            "alerts.html",
            status=error.status if error else 200,
            alerts=(await console.call("ListAlerts"))["Alerts"],
            scan=scan,
            tested=tested,
            error=error,
        )

    async def alerts(request: Request) -> Response:
        return await alerts_page(request)

    app.add_api_route("/console/alerts", page(alerts), methods=["GET"], include_in_schema=False)

    async def alerts_action(request: Request) -> Response:
        fields = await console.checked_form(request)
        if isinstance(fields, Response):
            return fields
        try:
            if request.url.path.endswith("/scan"):
                return await alerts_page(request, scan=await console.call("ScanNow"))
            tested = (await console.call("TestNotification"))["Results"]
        except errors.ApiError as exc:
            return await alerts_page(request, error=exc)
        return await alerts_page(request, tested=tested)

    for path in ("/console/alerts/scan", "/console/alerts/test"):
        app.add_api_route(path, page(alerts_action), methods=["POST"], include_in_schema=False)

    async def staged_page(
        request: Request,
        error: errors.ApiError | None = None,
        entered: dict[str, str] | None = None,
    ) -> Response:
        defaults = await console.listener_defaults()
        staged = (await console.call("ListStagedCertificates"))["StagedCertificates"]
        now = clock.now()
        rows = [
            {**s, "Rotates": rotates(s, defaults, console.config.rotation, now)}
            for s in reversed(staged)
        ]
        return console.render(
            request,
            "staged.html",
            status=error.status if error else 200,
            staged=rows,
            listeners=sorted(defaults),
            error=error,
            entered=entered or {},
            notice=NOTICES.get(request.query_params.get("done", ""), ""),
        )

    async def staged(request: Request) -> Response:
        return await staged_page(request)

    app.add_api_route("/console/staged", page(staged), methods=["GET"], include_in_schema=False)

    async def stage(request: Request) -> Response:
        fields = await console.checked_form(request)
        if isinstance(fields, Response):
            return fields
        listener = fields.get("listener") or None
        try:
            await console.call(
                "StageCertificate",
                Certificate=fields.get("certificate", ""),
                PrivateKey=fields.get("private_key", ""),
                ListenerId=listener,
            )
        except errors.ApiError as exc:
            entered = {k: v for k, v in fields.items() if k in ("certificate", "listener")}
            return await staged_page(request, exc, entered)
        return RedirectResponse("/console/staged?done=stage", status_code=303, headers=HEADERS)

    app.add_api_route("/console/staged", page(stage), methods=["POST"], include_in_schema=False)

    async def requests_page(
        request: Request,
        error: errors.ApiError | None = None,
        entered: dict[str, str] | None = None,
    ) -> Response:
        token = request.query_params.get("next") or None
        try:
            found = await console.call("ListCertificateRequests", MaxResults=50, NextToken=token)
        except errors.ApiError as exc:
            return console.render(request, "refused.html", status=exc.status, error=exc)
        managed = [c for c in await console.all_certificates() if c["Managed"]]
        listeners = (await console.call("ListListeners"))["Listeners"]
        return console.render(
            request,
            "requests.html",
            status=error.status if error else 200,
            acme=console.config.acme.enabled,
            requests=found["CertificateRequests"],
            next_token=found["NextToken"],
            total=found["TotalCount"],
            managed=managed,
            listeners=sorted(x["ListenerId"] for x in listeners),
            error=error,
            entered=entered or {},
            notice=NOTICES.get(request.query_params.get("done", ""), ""),
        )

    async def requests(request: Request) -> Response:
        return await requests_page(request)

    app.add_api_route(
        "/console/requests", page(requests), methods=["GET"], include_in_schema=False
    )

    async def request_certificate(request: Request) -> Response:
        fields = await console.checked_form(request)
        if isinstance(fields, Response):
            return fields
        try:
            await console.call(
                "RequestCertificate",
                DomainNames=domain_names(fields.get("names", "")),
                ListenerId=fields.get("listener") or None,
                Role=fields.get("role", "default"),
            )
        except errors.ApiError as exc:
            entered = {k: v for k, v in fields.items() if k in ("names", "listener", "role")}
            return await requests_page(request, exc, entered)
        return RedirectResponse(
            "/console/requests?done=request", status_code=303, headers=HEADERS
        )

    app.add_api_route(
        "/console/requests", page(request_certificate), methods=["POST"], include_in_schema=False
    )

    async def renew(request: Request) -> Response:
        fields = await console.checked_form(request)
        if isinstance(fields, Response):
            return fields
        try:
            await console.call("RenewCertificate", CertificateId=fields.get("CertificateId", ""))
        except errors.ApiError as exc:
            return await requests_page(request, exc)
        return RedirectResponse("/console/requests?done=renew", status_code=303, headers=HEADERS)

    app.add_api_route(
        "/console/requests/renew", page(renew), methods=["POST"], include_in_schema=False
    )
