"""The management API's edges over real HTTP: deep JSON, strict parameter types, listener
addresses and ports, slow and vanishing clients, authorization, 405 and the OpenAPI document."""

from __future__ import annotations

import logging
import select
import socket
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import httpx
import pytest
import sqlalchemy
import sqlmodel
from pydantic import BaseModel
from sqlmodel import Session, SQLModel

from certwatch.api import ACTIONS
from certwatch.app.service import Service
from certwatch.config import ConfigError, load_config
from certwatch.store.models import Listener
from offload.echo import EchoServer
from offload.workers import ProxyControl
from tests.certfactory import Issued, issue, make_pki
from tests.conftest import make_config
from tests.integration.offload.conftest import client_context, echo_roundtrip, tls_connect
from tests.integration.servers import ServeProcess, api_server, echo_when_served
from tests.support import eventually, free_port

DEEP = 100_000
NAME = "edge.example.com"


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    """An HTTP client of the service's API served by a real uvicorn on a free port."""
    with api_server(service) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def stored(service: Service) -> dict[str, list[Any]]:
    """Every row of every table of the store, to show that a refused call changed nothing."""
    with service.engine.connect() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(sqlalchemy.select(table))]
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


def call(http: httpx.Client, action: str, **params: Any) -> dict[str, Any]:
    """POST an action and require success; its answer."""
    response = http.post(f"/v1/{action}", json=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refused(http: httpx.Client, action: str, code: str, status: int = 400, **params: Any) -> str:
    """POST an action and require the given error; its Message."""
    response = http.post(f"/v1/{action}", json=params)
    assert (response.status_code, response.json().get("Code")) == (status, code), response.text
    return str(response.json()["Message"])


def listener_params(
    http: httpx.Client, port: int, backend_port: int = 9, leaf: Issued | None = None
) -> dict[str, Any]:
    """CreateListener parameters for a new load balancer, server group and certificate."""
    upload = (leaf or issue(NAME)).upload_params("edge")
    return {
        "LoadBalancerId": call(http, "CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"],
        "ServerGroupId": call(
            http,
            "CreateServerGroup",
            ServerGroupName="sg",
            Servers=[{"ServerIp": "127.0.0.1", "Port": backend_port, "Weight": 100}],
        )["ServerGroupId"],
        "CertificateIds": [call(http, "UploadCertificate", **upload)["CertificateId"]],
        "ListenerPort": port,
    }


SERVER = {"ServerIp": "127.0.0.1", "Port": 8080, "Weight": 100}
LENIENT = [
    ("CreateLoadBalancer", {"LoadBalancerName": "lb"}, "DryRun", "no", False),
    ("CreateLoadBalancer", {"LoadBalancerName": "lb"}, "DryRun", 0, False),
    ("CreateLoadBalancer", {}, "LoadBalancerName", 5, "lb"),
    ("CreateLoadBalancer", {"LoadBalancerName": "lb"}, "ClientToken", 12345, "t-12345"),
    ("CreateServerGroup", {"ServerGroupName": "sg"}, "Servers", "127.0.0.1:8080", [SERVER]),
    ("CreateServerGroup", {"ServerGroupName": "sg"}, "Servers", [{**SERVER, "Port": True}], []),
    ("CreateServerGroup", {"ServerGroupName": "sg"}, "Servers", [{**SERVER, "Port": "80"}], []),
    (
        "CreateSecurityPolicy",
        {"Ciphers": ["ECDHE-ECDSA-AES128-GCM-SHA256"], "SecurityPolicyName": "p"},
        "TlsVersions",
        "TLSv1.2",
        ["TLSv1.2"],
    ),
    ("ListCertificates", {}, "MaxResults", "10", 10),
    ("ListCertificates", {}, "MaxResults", 10.0, 10),
    ("ListCertificates", {}, "CertificateType", ["Server"], "Server"),
]


@pytest.mark.parametrize(("action", "params", "field", "bad", "good"), LENIENT)
def test_a_parameter_of_the_wrong_json_type_is_refused(
    service: Service,
    http: httpx.Client,
    action: str,
    params: dict[str, Any],
    field: str,
    bad: Any,
    good: Any,
) -> None:
    """A wrongly typed value is 400 InvalidParameter and changes nothing; the right type passes."""
    before = stored(service)
    message = refused(http, action, "InvalidParameter", **params, **{field: bad})
    assert field in message
    assert stored(service) == before
    call(http, action, **params, **{field: good})


def test_listener_port_true_and_dry_run_no_are_refused(
    service: Service, http: httpx.Client
) -> None:
    """ListenerPort true or DryRun "no" creates nothing; real types create the listener."""
    params = listener_params(http, free_port())
    before = stored(service)
    for field, bad in (("ListenerPort", True), ("DryRun", "no"), ("CaEnabled", "false")):
        message = refused(http, "CreateListener", "InvalidParameter", **{**params, field: bad})
        assert f"{field}: Input should be a valid" in message
    assert stored(service) == before
    call(http, "CreateListener", **params, DryRun=False, ListenerProtocol="TCPSSL")
    with Session(service.engine) as session:
        assert [row.port for row in session.exec(sqlmodel.select(Listener))] == [
            params["ListenerPort"]
        ]


def _wrong_type(annotation: Any) -> Any:
    """A JSON value of another type than the field's, one a lenient parser would have coerced."""
    union = get_origin(annotation) in (Union, types.UnionType)
    options = get_args(annotation) if union else (annotation,)
    kind = get_origin(options[0]) or options[0]
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return "x"  # a parameter object (e.g. HealthCheckConfig) given as a string
    return {bool: "no", int: True, str: 5, list: "x", Literal: True}[kind]


@pytest.mark.parametrize("action", sorted(a for a in ACTIONS if ACTIONS[a].request.model_fields))
def test_every_parameter_of_every_action_has_a_strict_type(
    service: Service, http: httpx.Client, action: str
) -> None:
    """Every parameter of the action refuses a value of another JSON type and nothing changes."""
    before = stored(service)
    for field, info in ACTIONS[action].request.model_fields.items():
        message = refused(http, action, "InvalidParameter", **{field: _wrong_type(info.annotation)})
        assert f"{field}: Input should be" in message
    assert stored(service) == before


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models(arg)


def test_every_parameter_object_is_strict() -> None:
    """Every request model, and every object nested in one, is strict and refuses unknown fields."""
    for action in ACTIONS.values():
        for field in action.request.model_fields.values():
            for model in (action.request, *_models(field.annotation)):
                assert model.model_config.get("strict") is True, model
                assert model.model_config.get("extra") == "forbid", model


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("4000::1", "reserved"),
    ],
)
def test_a_listener_address_no_connection_can_reach_is_refused(
    service: Service, http: httpx.Client, address: str, why: str
) -> None:
    """A multicast, broadcast or reserved address is refused saying which, and creates nothing."""
    params = listener_params(http, free_port())
    before = stored(service)
    message = refused(http, "CreateListener", "InvalidParameter", **params, ListenerAddress=address)
    assert f"ListenerAddress: Value error, {address} is" in message
    assert why in message
    server = {"ServerIp": address, "Port": 8080}
    message = refused(
        http, "CreateServerGroup", "InvalidParameter", ServerGroupName="g", Servers=[server]
    )
    assert why in message
    assert stored(service) == before


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "127.0.0.1", "::1"])
def test_every_address_and_loopback_are_still_listener_addresses(
    http: httpx.Client, address: str
) -> None:
    """0.0.0.0 and :: (every address) and loopback still make a running listener."""
    lid = call(
        http, "CreateListener", **listener_params(http, free_port()), ListenerAddress=address
    )["ListenerId"]
    got = call(http, "GetListenerAttribute", ListenerId=lid)
    assert (got["ListenerAddress"], got["ListenerStatus"]) == (address, "Running")


@pytest.mark.parametrize(
    ("holder_address", "options"),
    [
        ("127.0.0.1", ()),
        ("127.0.0.1", (socket.SO_REUSEADDR,)),
        ("127.0.0.1", (socket.SO_REUSEADDR, socket.SO_REUSEPORT)),
        ("0.0.0.0", (socket.SO_REUSEADDR, socket.SO_REUSEPORT)),
    ],
    ids=["plain", "reuseaddr", "reuseaddr-reuseport", "any-reuseport"],
)
def test_a_port_another_program_listens_on_is_still_port_in_use(
    service: Service, http: httpx.Client, holder_address: str, options: tuple[int, ...]
) -> None:
    """A port another program listens on, SO_REUSEPORT or not, is still PortInUse."""
    params = listener_params(http, 0)
    before = stored(service)
    with socket.socket() as holder:
        for option in options:
            holder.setsockopt(socket.SOL_SOCKET, option, 1)
        holder.bind((holder_address, 0))
        holder.listen()
        params["ListenerPort"] = holder.getsockname()[1]
        assert "another program" in refused(http, "CreateListener", "PortInUse", **params)
    assert stored(service) == before


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[httpx.Client]:
    """An HTTP client of the API of a service whose data plane is a real one-worker proxy."""
    with ProxyControl(1) as proxy:
        service = Service(make_config(tmp_path), data_plane=proxy)
        try:
            with api_server(service) as url, httpx.Client(base_url=url, timeout=30) as client:
                yield client
        finally:
            service.close()


def test_a_listener_recreated_on_a_deleted_listeners_port_serves(proxied: httpx.Client) -> None:
    """Re-creating a deleted listener's port (a connection still open) is 200 and it serves."""
    pki = make_pki()
    port = free_port()
    with EchoServer() as echo:
        params = listener_params(proxied, port, echo.port, pki.leaf(NAME))
        first = call(proxied, "CreateListener", **params)["ListenerId"]
        with tls_connect(port, client_context(pki.root_pem), NAME) as early:
            assert echo_roundtrip(early) == b"ping"
            call(proxied, "DeleteListener", ListenerId=first)
            second = call(proxied, "CreateListener", **params)["ListenerId"]
            assert echo_when_served(port, pki.root_pem, NAME, b"again") == b"again"
            assert echo_roundtrip(early, b"still") == b"still"
    listed = call(proxied, "ListListeners")["Listeners"]
    assert [(x["ListenerId"], x["ListenerPort"]) for x in listed] == [(second, port)]


def test_a_port_this_nodes_proxy_still_serves_is_left_to_the_proxy(
    tmp_path: Path, proxied: httpx.Client
) -> None:
    """A port this node's proxy still serves for a listener deleted elsewhere is taken over."""
    pki = make_pki()
    port = free_port()
    other = Service(make_config(tmp_path))
    try:
        with EchoServer() as echo:
            params = listener_params(proxied, port, echo.port, pki.leaf(NAME))
            first = call(proxied, "CreateListener", **params)["ListenerId"]
            other.call("DeleteListener", {"ListenerId": first})
            assert echo_when_served(port, pki.root_pem, NAME, b"old") == b"old"
            call(proxied, "CreateListener", **params)
            assert echo_when_served(port, pki.root_pem, NAME, b"new") == b"new"
    finally:
        other.close()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[httpx.Client]:
    """An HTTP client of the API of a service with `api.token` "s3cret"."""
    service = Service(make_config(tmp_path, api={"token": "s3cret"}))
    try:
        with api_server(service) as url, httpx.Client(base_url=url, timeout=10) as client:
            yield client
    finally:
        service.close()


@pytest.mark.parametrize(
    ("method", "path", "authorization", "status", "code"),
    [
        ("POST", "/v1/ListListeners", None, 401, "Unauthorized"),
        ("POST", "/v1/ListListeners", "Bearer wrong", 401, "Unauthorized"),
        ("POST", "/v1/ListListeners", "Basic s3cret", 401, "Unauthorized"),
        ("POST", "/v1/ListListeners", "s3cret", 401, "Unauthorized"),
        ("POST", "/v1/NoSuchAction", None, 401, "Unauthorized"),
        ("GET", "/v1/ListListeners", None, 401, "Unauthorized"),
        ("GET", "/v1/X", None, 401, "Unauthorized"),
        ("DELETE", "/v1/X", "Bearer wrong", 401, "Unauthorized"),
        ("POST", "/v1/ListListeners", "Bearer s3cret", 200, None),
        ("POST", "/v1/ListListeners", "bearer s3cret", 200, None),
        ("POST", "/v1/ListListeners", "BEARER s3cret", 200, None),
        ("POST", "/v1/ListListeners", "Bearer  s3cret", 200, None),
        ("POST", "/v1/NoSuchAction", "bearer s3cret", 404, "InvalidAction"),
        ("GET", "/v1/ListListeners", "Bearer s3cret", 405, "MethodNotAllowed"),
        ("GET", "/v1/X", "Bearer s3cret", 405, "MethodNotAllowed"),
        ("GET", "/healthz", None, 200, None),
    ],
)
def test_the_token_is_checked_first_and_its_scheme_is_case_insensitive(
    guarded: httpx.Client,
    method: str,
    path: str,
    authorization: str | None,
    status: int,
    code: str | None,
) -> None:
    """Without the token any /v1/ call is 401 before routing; the Bearer scheme ignores case."""
    headers = {"Authorization": authorization} if authorization else {}
    response = guarded.request(method, path, headers=headers)
    assert response.status_code == status, response.text
    assert response.json().get("Code") == code
    assert (response.headers.get("www-authenticate") == "Bearer") is (status == 401)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/v1/ListListeners", "/v1/CreateListener", "/v1/X"])
def test_a_wrong_method_is_405_with_allow_post(http: httpx.Client, method: str, path: str) -> None:
    """Any method but POST on /v1/... is 405 MethodNotAllowed with `Allow: POST`."""
    response = http.request(method, path)
    assert (response.status_code, response.json()["Code"]) == (405, "MethodNotAllowed")
    assert response.headers["allow"] == "POST"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from [value] if key == "$ref" else _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer (`#/a/b`) names in `document`; KeyError if none."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_ref_of_the_openapi_document_resolves(http: httpx.Client) -> None:
    """Every $ref in /openapi.json, nested models included, resolves inside the document."""
    document = http.get("/openapi.json").json()
    refs = set(_refs(document))
    assert "#/components/schemas/Server" in refs
    for ref in refs:
        assert isinstance(_resolve(document, ref), dict), ref


def test_every_action_operation_requires_its_request_body(http: httpx.Client) -> None:
    """Every action's operation has `requestBody.required: true` and a JSON schema."""
    paths = http.get("/openapi.json").json()["paths"]
    actions = {path: item for path, item in paths.items() if path.startswith("/v1/")}
    assert set(actions) == {f"/v1/{name}" for name in ACTIONS}
    for path, item in actions.items():
        body = item["post"]["requestBody"]
        assert body["required"] is True, path
        assert body["content"]["application/json"]["schema"], path


def test_metrics_is_text_plain_in_the_openapi_document(http: httpx.Client) -> None:
    """/metrics answers text/plain, and the OpenAPI document says so (not JSON)."""
    document = http.get("/openapi.json").json()
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")


def _port(client: httpx.Client) -> int:
    """The port of the API server a client talks to."""
    return int(client.base_url.port or 0)


def _handled(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the server has logged the end of a request cut short (a debug line or an error)."""
    return any("went away" in r.getMessage() or r.levelno >= logging.ERROR for r in caplog.records)


@pytest.mark.parametrize(
    "sent",
    [
        b"Content-Length: 1000\r\n\r\n" + b'{"LoadBalancerName": ',
        b"Content-Length: 100\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n" + b'5\r\n{"Loa\r\n',
    ],
    ids=["mid-body", "before-the-body", "mid-chunked-body"],
)
def test_a_client_that_disconnects_mid_body_logs_no_traceback(
    service: Service, http: httpx.Client, caplog: pytest.LogCaptureFixture, sent: bytes
) -> None:
    """A client gone mid-body logs one debug line and no traceback; nothing changes."""
    caplog.set_level(logging.DEBUG)
    before = stored(service)
    with socket.create_connection(("127.0.0.1", _port(http)), timeout=5) as raw:
        raw.sendall(b"POST /v1/CreateLoadBalancer HTTP/1.1\r\nHost: api\r\n" + sent)
        time.sleep(0.2)
    assert eventually(lambda: _handled(caplog), 5)
    assert "Traceback" not in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert [r.getMessage() for r in caplog.records if "went away" in r.getMessage()] == [
        "CreateLoadBalancer: the client went away before sending its whole body"
    ]
    assert stored(service) == before
    call(http, "CreateLoadBalancer", LoadBalancerName="after")


HEAD = b"POST /v1/ListListeners HTTP/1.1\r\nHost: api\r\n"
FULL = HEAD + b"Content-Length: 2\r\n\r\n{}"
HEADER_TIMEOUT, BODY_TIMEOUT = 0.5, 1.0


@contextmanager
def serving(tmp_path: Path, **api: Any) -> Iterator[int]:
    """The API of a new service with these `[api]` settings on a real uvicorn; its port."""
    service = Service(make_config(tmp_path, api=api))
    try:
        with api_server(service) as url:
            yield int(url.rsplit(":", 1)[1])
    finally:
        service.close()


def seconds_until_closed(sock: socket.socket, limit: float = 5.0) -> float:
    """Read (and drop) what the server sends until it closes; the seconds that took, or
    `limit` plus one when it was still open then."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return limit + 1


@pytest.mark.parametrize(
    ("sent", "deadline"),
    [
        (b"", HEADER_TIMEOUT),
        (HEAD[:20], HEADER_TIMEOUT),
        (HEAD + b"Content-Length: 2\r\n", HEADER_TIMEOUT),
        (HEAD + b"Content-Length: 10\r\n\r\n{}", BODY_TIMEOUT),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", BODY_TIMEOUT),
        (FULL + HEAD[:20], HEADER_TIMEOUT),
    ],
    ids=[
        "nothing",
        "half-a-header",
        "headers-without-their-end",
        "half-a-body",
        "chunked-body-without-its-end",
        "next-request-on-a-kept-alive-connection",
    ],
)
def test_a_client_that_stalls_is_disconnected_at_the_deadline(
    tmp_path: Path, sent: bytes, deadline: float
) -> None:
    """A client that stalls while sending a request is disconnected at its deadline."""
    with serving(tmp_path, header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(sent)
            elapsed = seconds_until_closed(client)
    assert deadline * 0.8 <= elapsed <= deadline + 1.5


def test_a_header_sent_a_byte_at_a_time_is_still_cut_at_the_header_deadline(
    tmp_path: Path,
) -> None:
    """Headers sent a byte every 50 ms (slowloris) are still cut at the header deadline."""
    with serving(tmp_path, header_timeout=HEADER_TIMEOUT) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            start = time.monotonic()
            for byte in (HEAD * 3)[:100]:
                readable, _, _ = select.select([client], [], [], 0.05)
                if readable or not _sent(client, bytes([byte])):
                    break
            elapsed = time.monotonic() - start
    assert HEADER_TIMEOUT * 0.8 <= elapsed <= HEADER_TIMEOUT + 1.5


def _sent(sock: socket.socket, data: bytes) -> bool:
    """Send `data`; False when the server has closed the connection."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def test_a_request_within_the_deadlines_is_answered(tmp_path: Path) -> None:
    """Headers and body each sent slowly but within their deadlines are answered 200."""
    with serving(tmp_path, header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            time.sleep(HEADER_TIMEOUT / 2)
            client.sendall(HEAD + b"Content-Length: 2\r\n\r\n")
            time.sleep(BODY_TIMEOUT / 2)
            client.sendall(b"{}")
            assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")


def _answered(clients: list[socket.socket]) -> list[socket.socket]:
    """The connections the server has sent something on (or closed), without waiting."""
    return list(select.select(clients, [], [], 0)[0])


@pytest.mark.parametrize(("limit", "opened"), [(1, 3), (3, 10), (5, 40)])
def test_connections_beyond_max_connections_are_refused_503(
    tmp_path: Path, limit: int, opened: int
) -> None:
    """Connections beyond api.max_connections get 503 TooManyConnections at once."""
    with serving(tmp_path, max_connections=limit, header_timeout=30) as port:
        url = f"http://127.0.0.1:{port}"
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(opened)]
        try:
            assert eventually(lambda: len(_answered(clients)) >= opened - limit, 5)
            time.sleep(0.2)  # and no more: the connections within the limit stay open
            answered = _answered(clients)
            assert len(answered) == opened - limit
            for turned_away in answered:
                answer = turned_away.recv(65536)
                assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
                assert b'"Code": "TooManyConnections"' in answer
            denied = httpx.post(f"{url}/v1/ListListeners")
            assert (denied.status_code, denied.json()["Code"]) == (503, "TooManyConnections")
        finally:
            for client in clients:
                client.close()
        assert eventually(lambda: httpx.post(f"{url}/v1/ListListeners").status_code == 200, 5)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (10.0, 30.0, 256)),
        (
            {
                "CERTWATCH_API_HEADER_TIMEOUT": "2s",
                "CERTWATCH_API_BODY_TIMEOUT": "1m",
                "CERTWATCH_API_MAX_CONNECTIONS": "64",
            },
            (2.0, 60.0, 64),
        ),
        ({"CERTWATCH_API_HEADER_TIMEOUT": "0"}, "api.header_timeout"),
        ({"CERTWATCH_API_BODY_TIMEOUT": "soon"}, "api.body_timeout"),
        ({"CERTWATCH_API_MAX_CONNECTIONS": "0"}, "api.max_connections"),
    ],
    ids=["defaults", "set", "zero-header-timeout", "bad-body-timeout", "zero-connections"],
)
def test_the_api_connection_limits_are_configured_in_the_api_section(
    env: dict[str, str], expected: tuple[float, float, int] | str
) -> None:
    """[api] timeouts and max_connections have their defaults; a bad value names its key."""
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            load_config(env=env)
        return
    api = load_config(env=env).api
    assert (api.header_timeout, api.body_timeout, api.max_connections) == expected


def test_certwatch_serve_holds_clients_to_the_header_deadline(tmp_path: Path) -> None:
    """`certwatch serve` cuts a client sending half a header at [api] header_timeout."""
    node = ServeProcess(tmp_path, workers=0, api_toml=f"header_timeout = {HEADER_TIMEOUT}\n")
    node.start()
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as client:
            client.sendall(HEAD[:20])
            elapsed = seconds_until_closed(client)
        assert HEADER_TIMEOUT * 0.8 <= elapsed <= HEADER_TIMEOUT + 1.5
    finally:
        assert node.stop() == 0
