"""certwatch: certificate lifecycle and expiry monitoring with its own TLS offload proxy.

`serve` and `proxy` run the service in the foreground; `config check` checks a
configuration without starting anything; every other command talks to a running
service's API. Exit codes: 0 done; 1 the service refused or the outcome failed; 2 usage or
configuration error; 3 the service is unreachable.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, get_args

from certwatch.app.client import ApiFailure, Client, Unreachable
from certwatch.config import KeyType
from certwatch.pki.pem import split_pem

Params = dict[str, Any]
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
MAX_PAGES = 100_000
DEFAULT_API = "http://127.0.0.1:9180"
PKCS12_SUFFIXES = (".pfx", ".p12")
DER_SUFFIXES = (".der", ".cer")
LIST_FIELDS = {
    "Certificates": [
        "CertificateId",
        "CertificateName",
        "CertificateType",
        "CommonName",
        "NotAfter",
        "DaysRemaining",
        "Status",
    ],
    "Listeners": [
        "ListenerId",
        "ListenerAddress",
        "ListenerPort",
        "ListenerProtocol",
        "CertificateIds",
        "SecurityPolicyId",
        "CaEnabled",
        "ListenerStatus",
    ],
    "SecurityPolicies": ["SecurityPolicyId", "System", "TlsVersions", "Unenforceable"],
    "RotationEvents": [
        "Time",
        "Actor",
        "Role",
        "OldCertificateId",
        "NewCertificateId",
        "Result",
        "Reason",
    ],
    "StagedCertificates": [
        "StagedCertificateId",
        "CertificateId",
        "ListenerId",
        "Status",
        "Reason",
    ],
    "Alerts": [
        "AlertId",
        "CertificateId",
        "Threshold",
        "CreatedAt",
        "SentAt",
        "Delivered",
        "Attempts",
        "LastError",
    ],
    "Results": ["Url", "Delivered", "Error"],
    "CertificateRequests": [
        "CertificateRequestId",
        "DomainNames",
        "Status",
        "Renewal",
        "CertificateId",
        "ListenerId",
        "CreatedAt",
        "Reason",
        "NextAttemptAt",
    ],
    "LoadBalancers": ["LoadBalancerId", "LoadBalancerName", "CreatedAt", "ListenerIds"],
    "ServerGroups": [
        "ServerGroupId", "ServerGroupName", "Servers", "HealthCheckConfig", "ListenerIds",
    ],
}




class UsageError(Exception):
    """A command line that cannot be run as given (exit 2)."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {path}: not a text (PEM) file") from exc


def _servers(values: Sequence[str] | None) -> list[Params] | None:
    if values is None:
        return None
    out = []
    for value in values:
        host, _, rest = value.partition(":") if value.count(":") <= 2 else (value, "", "")
        parts = rest.split(":") if rest else []
        if not host or not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
            raise UsageError(f"--server {value!r}: use IP:PORT or IP:PORT:WEIGHT")
        weight = int(parts[1]) if len(parts) == 2 else 100
        out.append({"ServerIp": host, "Port": int(parts[0]), "Weight": weight})
    return out


def _thresholds(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise UsageError(f"--thresholds {value!r}: use whole days, e.g. 30,7,1") from exc


def _listener_fields(a: argparse.Namespace) -> Params:
    return {
        "ServerGroupId": a.server_group,
        "CertificateIds": [a.cert] if a.cert else None,
        "SecurityPolicyId": a.policy,
        "CaEnabled": a.ca_enabled,
        "CaCertificateIds": a.ca_cert,
        "IdleTimeout": a.idle_timeout,
        "ListenerDescription": a.description,
        "AlertThresholdsDays": _thresholds(a.thresholds),
        "AlpnEnabled": a.alpn,
        "AlpnPolicy": a.alpn_policy,
        "ProxyProtocolEnabled": a.proxy_protocol,
        "Cps": a.cps,
        "MaxConnections": a.max_connections,
    }


def _add_listener_fields(p: argparse.ArgumentParser, creating: bool) -> None:
    unchanged = "" if creating else " Unchanged when not given."
    p.add_argument(
        "--server-group",
        required=creating,
        metavar="SGP",
        help="The server group (sgp-…) that receives the connections." + unchanged,
    )
    p.add_argument(
        "--cert",
        required=creating,
        metavar="CERT",
        help="The default server certificate (cert-…)." + unchanged,
    )
    p.add_argument(
        "--policy",
        metavar="POLICY",
        help="The TLS security policy id (default on create: tls_cipher_policy_1_2)."
        + unchanged,
    )
    p.add_argument(
        "--ca-enabled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Require client certificates (mutual TLS); default on create: off." + unchanged,
    )
    p.add_argument(
        "--ca-cert",
        action="append",
        metavar="CERT",
        help="A Ca certificate (cert-…) that signs accepted client certificates; repeat for "
        "more. Required with --ca-enabled.",
    )
    p.add_argument(
        "--idle-timeout",
        type=int,
        metavar="SECONDS",
        help="Close a connection idle this many seconds (default on create: 900)." + unchanged,
    )
    p.add_argument("--description", help="A free-text description." + unchanged)
    p.add_argument(
        "--thresholds",
        metavar="DAYS",
        help="This listener's alert thresholds in days, comma-separated, e.g. 30,7,1 (default: "
        "the service's alerts.thresholds_days)." + unchanged,
    )
    p.add_argument(
        "--alpn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Select an application protocol (ALPN) by --alpn-policy; default on create: off."
        + unchanged,
    )
    p.add_argument(
        "--alpn-policy",
        choices=["HTTP1Only", "HTTP2Only", "HTTP2Preferred", "HTTP2Optional"],
        help="Which protocols ALPN selects, in which order; required with --alpn." + unchanged,
    )
    p.add_argument(
        "--proxy-protocol",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Send a PROXY protocol v2 header (client address, SNI name) to the backend; "
        "default on create: off." + unchanged,
    )
    p.add_argument(
        "--cps",
        type=int,
        metavar="N",
        help="New connections accepted per second, 0 for unlimited (default on create: 0)."
        + unchanged,
    )
    p.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="Connections open at once, 0 for unlimited (default on create: 0)." + unchanged,
    )


def _health_check(a: argparse.Namespace) -> Params | None:
    """The HealthCheckConfig of the --health-check* flags given (None: none given)."""
    config = {
        "HealthCheckEnabled": a.health_check,
        "HealthCheckConnectPort": a.health_check_port,
        "HealthCheckInterval": a.health_check_interval,
        "HealthCheckConnectTimeout": a.health_check_timeout,
        "HealthyThreshold": a.healthy_threshold,
        "UnhealthyThreshold": a.unhealthy_threshold,
    }
    given = {k: v for k, v in config.items() if v is not None}
    return given or None


def _add_health_check_fields(p: argparse.ArgumentParser, creating: bool) -> None:
    """The --health-check* flags of `server-groups create` and `update`."""

    def default(value: str) -> str:
        return f" (default: {value})." if creating else ". Unchanged when not given."

    p.add_argument(
        "--health-check",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TCP-check the servers; new connections go only to servers that pass"
        + default("off, on when any other --health-check* flag is given"),
    )
    for flag, kind, metavar, text, value in (
        ("--health-check-port", int, "PORT", "The port checked on every server, 0: each "
         "server's own port", "0"),
        ("--health-check-interval", float, "SECONDS", "Seconds between checks", "10"),
        ("--health-check-timeout", float, "SECONDS", "Seconds a check waits for the "
         "connection, at most the interval", "5"),
        ("--healthy-threshold", int, "N", "Successes in a row that mark a server up", "3"),
        ("--unhealthy-threshold", int, "N", "Failures in a row that mark a server down", "3"),
    ):
        p.add_argument(flag, type=kind, metavar=metavar, help=text + default(value))


Check = Callable[[Params], str | None]


def _no_check(_answer: Params) -> str | None:
    return None


def _rotation_failed(answer: Params) -> str | None:
    """A rotation or rollback that was Rejected or RolledBack."""
    if answer.get("Result") in ("Rejected", "RolledBack"):
        return f"{answer['Result']}: {answer.get('Reason') or 'no reason given'}"
    return None


def _staging_failed(answer: Params) -> str | None:
    """A staged certificate that was Rejected."""
    if answer.get("Status") == "Rejected":
        return f"Rejected: {answer.get('Reason') or 'no reason given'}"
    return None


def _notification_failed(answer: Params) -> str | None:
    """A test notification that did not reach every URL."""
    failed = [r for r in answer.get("Results", []) if not r.get("Delivered")]
    if failed:
        total = len(answer["Results"])
        return f"NotDelivered: {len(failed)} of {total} alert URLs did not receive the message"
    return None


@dataclass(frozen=True)
class Command:
    """One API-backed command: its action, how it builds the parameters, and what makes its
    outcome a failure (exit 1) even though the API answered."""

    action: str
    build: Callable[[argparse.Namespace], Params]
    failed: Check = _no_check


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors exit 2 with one line (`certwatch: error: …`)."""

    def error(self, message: str) -> NoReturn:
        """Print the usage error on one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _client_options(p: argparse.ArgumentParser, top: bool) -> None:
    """--api, --token, --output and --json, at the top and after any command."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument(
        "--api",
        metavar="URL",
        default=default(os.environ.get("CERTWATCH_API_URL", DEFAULT_API)),
        help=f"The running service's API (default: $CERTWATCH_API_URL, else {DEFAULT_API}).",
    )
    p.add_argument(
        "--token",
        default=default(os.environ.get("CERTWATCH_API_TOKEN")),
        help="The API's bearer token, when the service sets api.token (default: "
        "$CERTWATCH_API_TOKEN).",
    )
    p.add_argument(
        "--output",
        choices=["table", "json"],
        default=default("table"),
        help="Print tables and `Key: value` lines, or the API's JSON answer (default: table).",
    )
    p.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        default=argparse.SUPPRESS,
        help="The same as --output json.",
    )


def _service_options(p: argparse.ArgumentParser) -> None:
    """--config, --log-format and --log-level of `serve` and `proxy`."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help="The TOML configuration file (default: none; built-in defaults and CERTWATCH_* "
        "variables).",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="Log lines on stderr as text, or one JSON object per line (default: text).",
    )
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=os.environ.get("CERTWATCH_LOG_LEVEL", "info").lower(),
        help="Log records of this level and above (default: $CERTWATCH_LOG_LEVEL, else info).",
    )


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = _Parser(
        prog="certwatch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"certwatch {version('certwatch')}",
        help="Print certwatch's version and exit.",
    )
    _client_options(parser, top=True)
    common = _Parser(add_help=False)
    _client_options(common, top=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, Command] = {}

    def group(name: str, help_text: str) -> Any:
        return sub.add_parser(name, help=help_text, description=help_text).add_subparsers(
            dest="sub", required=True, metavar="COMMAND"
        )

    def command(
        path: str,
        help_text: str,
        run: Command,
        parent: Any = sub,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            path.split()[-1], help=help_text, description=help_text, parents=[common]
        )
        p.set_defaults(command_key=path)
        commands[path] = run
        return p

    text = "Run the service in the foreground (API, scans, alerts, rotation, proxy) until SIGTERM."
    serve = sub.add_parser("serve", help=text, description=text)
    _service_options(serve)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="Also create (once) and serve a demo listener with generated certificates; its "
        "files are in DATA_DIR/demo.",
    )
    serve.add_argument(
        "--demo-port",
        type=int,
        default=8443,
        metavar="PORT",
        help="The demo listener's port on 127.0.0.1 (default: 8443).",
    )
    text = "Run only the data plane against the shared store (an extra proxy node)."
    _service_options(sub.add_parser("proxy", help=text, description=text))
    config = group("config", "Check a configuration.")
    text = "Run every start-up check of `serve` on a configuration, without starting anything."
    check = config.add_parser("check", help=text, description=text)
    check.set_defaults(command_key="config check")
    check.add_argument(
        "--config", metavar="FILE", help="The TOML file to check (default: defaults and "
        "CERTWATCH_* variables only)."
    )

    demo = group("demo", "Work with the demo that `certwatch serve --demo` created.")
    p = command(
        "demo renew",
        "Issue a renewal of the demo certificate from the demo's CA and stage it; then "
        "`certwatch rotate LISTENER` swaps it in.",
        Command("StageCertificate", _demo_renewal, _staging_failed),
        demo,
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="The service's TOML file, to find data_dir (default: data_dir is ./data).",
    )

    command("scan", "Run one scan now and print what it found.", Command("ScanNow", lambda a: {}))

    certs = group("certs", "Upload, list, show and delete certificates.")
    p = command(
        "certs upload",
        "Upload a certificate (with its chain) and, for a Server certificate, its key.",
        Command("UploadCertificate", _upload),
        certs,
    )
    p.add_argument("name", help="The certificate's name in the inventory.")
    p.add_argument(
        "--type",
        default="Server",
        choices=["Server", "Ca", "Client"],
        help="What the certificate is for (default: Server).",
    )
    p.add_argument(
        "--cert",
        required=True,
        metavar="FILE",
        help="The certificate file, read by its extension: .pfx or .p12 is PKCS#12 (the "
        "certificate, its chain and its key), .der or .cer is one DER certificate (a .cer "
        "holding PEM text is read as PEM), anything else is PEM (the certificate, then its "
        "chain).",
    )
    p.add_argument(
        "--key",
        metavar="FILE",
        help="The private key file, PEM (or DER with a .der certificate); required for Server "
        "unless --cert is PKCS#12, which carries the key.",
    )
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--password",
        metavar="PASSWORD",
        help="The PKCS#12 file's password (default: none). Other users can see a command "
        "line: prefer --password-file.",
    )
    secret.add_argument(
        "--password-file",
        metavar="FILE",
        help="A file whose first line is the PKCS#12 file's password (default: none).",
    )
    p = command(
        "certs list",
        "List certificates (every page).",
        Command(
            "ListCertificates",
            lambda a: {"CertificateType": a.type, "ExpiringWithinDays": a.expiring_within},
        ),
        certs,
    )
    p.add_argument(
        "--type", choices=["Server", "Ca", "Client"], help="Only this type (default: all)."
    )
    p.add_argument(
        "--expiring-within",
        type=int,
        metavar="DAYS",
        help="Only certificates that expire within this many days (default: all).",
    )
    for name, action, text in (
        ("show", "GetCertificate", "Show one certificate's fields."),
        ("delete", "DeleteCertificate", "Delete a certificate no listener or staging uses."),
    ):
        command(
            f"certs {name}", text, Command(action, lambda a: {"CertificateId": a.id}), certs
        ).add_argument("id", metavar="CERT", help="The certificate id (cert-…).")

    lbs = group("lb", "Create, list and delete load balancers (they group listeners).")
    command(
        "lb create",
        "Create a load balancer.",
        Command("CreateLoadBalancer", lambda a: {"LoadBalancerName": a.name}),
        lbs,
    ).add_argument("name", help="The load balancer's name.")
    command(
        "lb list",
        "List load balancers with the listeners they hold.",
        Command("ListLoadBalancers", lambda a: {}),
        lbs,
    )
    command(
        "lb delete",
        "Delete a load balancer that holds no listener.",
        Command("DeleteLoadBalancer", lambda a: {"LoadBalancerId": a.id}),
        lbs,
    ).add_argument("id", metavar="NLB", help="The load balancer id (nlb-…).")

    groups = group("server-groups", "Create, change, list and delete backend server groups.")
    p = command(
        "server-groups create",
        "Create a server group.",
        Command(
            "CreateServerGroup",
            lambda a: {
                "ServerGroupName": a.name,
                "Servers": _servers(a.server) or [],
                "HealthCheckConfig": _health_check(a),
            },
        ),
        groups,
    )
    p.add_argument("name", help="The server group's name.")
    p.add_argument(
        "--server",
        action="append",
        metavar="IP:PORT[:WEIGHT]",
        help="A backend server, weight 0-100 (default: 100); repeat for more (default: none).",
    )
    _add_health_check_fields(p, creating=True)
    p = command(
        "server-groups update",
        "Rename a server group or change its health checks.",
        Command(
            "UpdateServerGroupAttribute",
            lambda a: {
                "ServerGroupId": a.id,
                "ServerGroupName": a.name,
                "HealthCheckConfig": _health_check(a),
            },
        ),
        groups,
    )
    p.add_argument("id", metavar="SGP", help="The server group id (sgp-…).")
    p.add_argument("--name", help="The server group's new name. Unchanged when not given.")
    _add_health_check_fields(p, creating=False)
    command(
        "server-groups list",
        "List server groups with their servers and the listeners that use them.",
        Command("ListServerGroups", lambda a: {}),
        groups,
    )
    command(
        "server-groups delete",
        "Delete a server group that no listener uses.",
        Command("DeleteServerGroup", lambda a: {"ServerGroupId": a.id}),
        groups,
    ).add_argument("id", metavar="SGP", help="The server group id (sgp-…).")
    for name, action, text in (
        ("add", "AddServersToServerGroup", "Add servers to a server group."),
        ("remove", "RemoveServersFromServerGroup", "Remove servers from a server group."),
    ):
        p = command(
            f"server-groups {name}",
            text,
            Command(action, lambda a: {"ServerGroupId": a.id, "Servers": _servers(a.server)}),
            groups,
        )
        p.add_argument("id", metavar="SGP", help="The server group id (sgp-…).")
        p.add_argument(
            "--server",
            action="append",
            required=True,
            metavar="IP:PORT[:WEIGHT]",
            help="A backend server (weight default: 100); repeat for more.",
        )

    lsn = group("listeners", "Create, change, list and show TLS listeners.")
    p = command(
        "listeners create",
        "Create a listener and start serving it.",
        Command(
            "CreateListener",
            lambda a: {
                "LoadBalancerId": a.lb,
                "ListenerPort": a.port,
                "ListenerAddress": a.address,
                "ListenerProtocol": a.protocol,
                **_listener_fields(a),
            },
        ),
        lsn,
    )
    p.add_argument("--lb", required=True, metavar="NLB", help="The load balancer id (nlb-…).")
    p.add_argument("--port", type=int, required=True, help="The TCP port to listen on.")
    p.add_argument("--address", help="The address to listen on (default: 127.0.0.1).")
    p.add_argument(
        "--protocol", choices=["TCPSSL", "TCP"], help="TLS offload or plain TCP (default: TCPSSL)."
    )
    _add_listener_fields(p, creating=True)
    p = command(
        "listeners update",
        "Change a listener's attributes; new connections use them at once.",
        Command("UpdateListenerAttribute", lambda a: {"ListenerId": a.id, **_listener_fields(a)}),
        lsn,
    )
    p.add_argument("id", metavar="LISTENER", help="The listener id (lsn-…).")
    _add_listener_fields(p, creating=False)
    command(
        "listeners list",
        "List listeners.",
        Command("ListListeners", lambda a: {"LoadBalancerId": a.lb}),
        lsn,
    ).add_argument("--lb", metavar="NLB", help="Only this load balancer's (default: all).")
    for name, action, text in (
        ("show", "GetListenerAttribute", "Show one listener's attributes."),
        ("start", "StartListener", "Start serving a stopped listener."),
        ("stop", "StopListener", "Stop serving a listener (it stays configured)."),
        ("delete", "DeleteListener", "Delete a listener."),
    ):
        command(
            f"listeners {name}", text, Command(action, lambda a: {"ListenerId": a.id}), lsn
        ).add_argument("id", metavar="LISTENER", help="The listener id (lsn-…).")
    p = command(
        "listeners certs",
        "List a listener's certificates (default, additional, CA).",
        Command(
            "ListListenerCertificates", lambda a: {"ListenerId": a.id, "CertificateType": a.type}
        ),
        lsn,
    )
    p.add_argument("id", metavar="LISTENER", help="The listener id (lsn-…).")
    p.add_argument("--type", choices=["Server", "Ca"], help="Only this type (default: both).")
    for name, action, text in (
        (
            "add-certs",
            "AssociateAdditionalCertificatesWithListener",
            "Add additional (SNI) certificates to a listener.",
        ),
        (
            "remove-certs",
            "DisassociateAdditionalCertificatesWithListener",
            "Remove additional certificates from a listener.",
        ),
    ):
        p = command(
            f"listeners {name}",
            text,
            Command(action, lambda a: {"ListenerId": a.id, "AdditionalCertificateIds": a.certs}),
            lsn,
        )
        p.add_argument("id", metavar="LISTENER", help="The listener id (lsn-…).")
        p.add_argument("certs", nargs="+", metavar="CERT", help="Certificate ids (cert-…).")

    pol = group("policies", "List and create TLS security policies.")
    command(
        "policies list",
        "List the system and custom TLS security policies.",
        Command("ListSecurityPolicies", lambda a: {}),
        pol,
    )
    p = command(
        "policies create",
        "Create a custom TLS security policy.",
        Command(
            "CreateSecurityPolicy",
            lambda a: {
                "SecurityPolicyName": a.name, "TlsVersions": a.version, "Ciphers": a.cipher
            },
        ),
        pol,
    )
    p.add_argument("name", help="The policy's name.")
    p.add_argument(
        "--version", action="append", required=True, help="A TLS version, e.g. TLSv1.2; repeat."
    )
    p.add_argument(
        "--cipher", action="append", required=True, help="A cipher suite name; repeat."
    )
    text = "List expiry alerts (`certwatch alerts` alone) or send a test notification."
    alerts = sub.add_parser("alerts", help=text, description=text, parents=[common])
    alerts.set_defaults(command_key="alerts list", listener=None, certificate=None)
    al = alerts.add_subparsers(dest="sub", metavar="COMMAND")
    p = command(
        "alerts list",
        "List expiry alerts, sent and pending, newest first.",
        Command(
            "ListAlerts", lambda a: {"ListenerId": a.listener, "CertificateId": a.certificate}
        ),
        al,
    )
    p.add_argument("--listener", metavar="LISTENER", help="Only this listener's (default: all).")
    p.add_argument("--certificate", metavar="CERT", help="Only this certificate's (default: all).")
    command(
        "alerts test",
        "Send a test message to every alert URL and report each; exit 1 unless all arrive.",
        Command("TestNotification", lambda a: {}, _notification_failed),
        al,
    )

    p = command(
        "stage",
        "Stage a renewed certificate for rotation; exit 1 when it is Rejected.",
        Command("StageCertificate", _stage, _staging_failed),
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="One PEM with the chain and the key, or a CRT file then a KEY file.",
    )
    p.add_argument(
        "--listener", metavar="LISTENER", help="Only for this listener (default: any it fits)."
    )
    p = command(
        "rotate",
        "Rotate a listener's default certificate now; exit 1 when Rejected or RolledBack.",
        Command(
            "RotateListenerCertificate",
            lambda a: {"ListenerId": a.listener, "StagedCertificateId": a.staged},
            _rotation_failed,
        ),
    )
    p.add_argument("listener", metavar="LISTENER", help="The listener id (lsn-…).")
    p.add_argument(
        "--staged",
        metavar="STG",
        help="The staged certificate (stg-…) to use (default: the best candidate).",
    )
    command(
        "rollback",
        "Restore the default certificate in place before the last change.",
        Command(
            "RollbackListenerCertificate", lambda a: {"ListenerId": a.listener}, _rotation_failed
        ),
    ).add_argument("listener", metavar="LISTENER", help="The listener id (lsn-…).")
    command(
        "history",
        "List a listener's certificate changes, newest first.",
        Command("ListRotationEvents", lambda a: {"ListenerId": a.listener}),
    ).add_argument("listener", metavar="LISTENER", help="The listener id (lsn-…).")
    command(
        "staged",
        "List staged certificates.",
        Command("ListStagedCertificates", lambda a: {"Status": a.status}),
    ).add_argument(
        "--status",
        choices=["Pending", "Applied", "Rejected", "Superseded"],
        help="Only this status (default: all).",
    )
    _add_acme_commands(sub, command)
    return parser, commands


def _add_acme_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """`request`, `renew` and `requests [list|show]` (SPEC §12)."""
    p = command(
        "request",
        "Order a certificate for these names from the ACME server (acme.directory_url); the "
        "order runs in the background: follow it with `certwatch requests`.",
        Command(
            "RequestCertificate",
            lambda a: {
                "DomainNames": a.names,
                "ListenerId": a.listener,
                "Role": a.role,
                "KeyType": a.key_type,
                "CertificateName": a.name,
            },
        ),
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="A DNS name, e.g. www.example.com.")
    p.add_argument(
        "--listener",
        metavar="LISTENER",
        help="Put the certificate on this listener (lsn-…) once issued (default: none, the "
        "inventory only).",
    )
    p.add_argument(
        "--role",
        choices=["default", "additional"],
        help="With --listener: replace its default certificate, or add an SNI certificate "
        "(default: default).",
    )
    p.add_argument(
        "--key-type",
        choices=list(get_args(KeyType)),
        help="The new certificate's key (default: the service's acme.key_type, else ec-p256).",
    )
    p.add_argument(
        "--name", help="The certificate's name in the inventory (default: its first name)."
    )
    command(
        "renew",
        "Renew a managed certificate now, through the same path as an automatic renewal.",
        Command("RenewCertificate", lambda a: {"CertificateId": a.id}),
    ).add_argument("id", metavar="CERTIFICATE_ID", help="The certificate id (cert-…).")
    text = (
        "List ACME certificate requests, newest first (`certwatch requests` alone), or show one."
    )
    common = _Parser(add_help=False)
    _client_options(common, top=False)
    requests = sub.add_parser("requests", help=text, description=text, parents=[common])
    requests.set_defaults(command_key="requests list")
    status_help = "Only this status (default: all)."
    statuses = ["Pending", "Issued", "Failed"]
    requests.add_argument("--status", choices=statuses, help=status_help)
    under = requests.add_subparsers(dest="sub", metavar="COMMAND")
    command(
        "requests list",
        "List certificate requests (every page), newest first.",
        Command("ListCertificateRequests", lambda a: {"Status": a.status}),
        under,
    ).add_argument("--status", choices=statuses, default=argparse.SUPPRESS, help=status_help)
    command(
        "requests show",
        "Show one certificate request: its status, and the certificate once Issued or the "
        "reason and next attempt once Failed.",
        Command("GetCertificateRequest", lambda a: {"CertificateRequestId": a.id}),
        under,
    ).add_argument("id", metavar="CRQ", help="The certificate request id (crq-…).")


def _demo_renewal(a: argparse.Namespace) -> Params:
    from certwatch.app.demo import renewal
    from certwatch.config import ConfigError, load_config

    try:
        renewed = renewal(load_config(a.config).data_dir)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    return {"Certificate": renewed.chain_pem, "PrivateKey": renewed.key_pem}


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _file_format(path: str) -> str:
    """The CertificateFormat of a certificate file, by its extension (a PEM `.cer` is PEM)."""
    suffix = Path(path).suffix.lower()
    if suffix in PKCS12_SUFFIXES:
        return "PKCS12"
    if suffix in DER_SUFFIXES and not _read_bytes(path).lstrip().startswith(b"-----BEGIN"):
        return "DER"
    return "PEM"


def _password(a: argparse.Namespace) -> str | None:
    """The PKCS#12 password of --password or --password-file's first line (never printed)."""
    if a.password_file is None:
        return str(a.password) if a.password is not None else None
    lines = _read(a.password_file).splitlines()
    return lines[0] if lines else ""


def _upload(a: argparse.Namespace) -> Params:
    """UploadCertificate's parameters from the files, in the format their extensions name."""
    fmt = _file_format(a.cert)
    password = _password(a)
    if password is not None and fmt != "PKCS12":
        raise UsageError(f"--password and --password-file are for .pfx/.p12 files, not {a.cert}")
    if fmt == "PKCS12" and a.key:
        raise UsageError(f"--key is not used with {a.cert}: a PKCS#12 file carries its key")
    if fmt == "PEM":
        certificate = _read(a.cert)
    else:
        certificate = base64.b64encode(_read_bytes(a.cert)).decode()
    key = None
    if a.key:
        raw_key = _read_bytes(a.key)
        is_pem = raw_key.lstrip().startswith(b"-----BEGIN")
        key = _read(a.key) if is_pem or fmt == "PEM" else base64.b64encode(raw_key).decode()
    return {
        "CertificateName": a.name,
        "CertificateType": a.type,
        "Certificate": certificate,
        "PrivateKey": key,
        "CertificateFormat": fmt,
        "Password": password,
    }


def _stage(a: argparse.Namespace) -> Params:
    if len(a.files) > 2:
        raise UsageError(
            f"stage takes one PEM file, or a CRT then a KEY file; got {len(a.files)} files"
        )
    chain, key = split_pem("".join(_read(path) for path in a.files))
    if not key:
        raise UsageError("stage: no private key found in " + " ".join(a.files))
    return {"Certificate": chain, "PrivateKey": key, "ListenerId": a.listener}


def _render_health_check(config: Params) -> str:
    """A HealthCheckConfig in one cell: `off`, or `TCP:PORT every 10s, timeout 5s, 3 up/3 down`."""
    if not config.get("HealthCheckEnabled"):
        return "off"
    port = config.get("HealthCheckConnectPort") or "server port"
    return (
        f"{config.get('HealthCheckType')}:{port} every {config.get('HealthCheckInterval'):g}s, "
        f"timeout {config.get('HealthCheckConnectTimeout'):g}s, "
        f"{config.get('HealthyThreshold')} up/{config.get('UnhealthyThreshold')} down"
    )


def _render(value: Any) -> str:
    if isinstance(value, dict):
        if "HealthCheckEnabled" in value:
            return _render_health_check(value)
        if {"ServerIp", "Port"} <= value.keys():
            return f"{value['ServerIp']}:{value['Port']}/{value.get('Weight', 100)}"
        return ", ".join(f"{k} {_render(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(_render(v) for v in value) or "-"
    return "-" if value is None else str(value)


def print_table(rows: list[Params], columns: list[str]) -> None:
    """Rows as aligned columns under a header line."""
    cells = [columns] + [[_render(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_scan(answer: Params) -> None:
    """A ScanNow answer as three sentences."""
    counts: dict[str, int] = answer.get("Certificates") or {}
    by_status = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "none"
    print(f"Scan {answer.get('ScanId')}: {sum(counts.values())} certificates in use ({by_status}).")
    print(f"Probes: {answer.get('ProbesRun', 0)} run, {answer.get('ProbesFailed', 0)} failed.")
    print(
        f"Alerts: {answer.get('AlertsSent', 0)} sent, "
        f"{answer.get('AlertsFailed', 0)} not delivered."
    )


def print_human(answer: Params) -> None:
    """Lists as aligned tables; other answers as `Key: value` lines."""
    for key, columns in LIST_FIELDS.items():
        rows = answer.get(key)
        if isinstance(rows, list):
            print_table(rows, columns)
            extra = {k: v for k, v in answer.items() if k not in (key, "RequestId") and v}
            for k, v in extra.items():
                print(f"{k}: {_render(v)}")
            return
    nested = answer.get("Certificate") or answer.get("CertificateRequest")
    body: Params = nested if isinstance(nested, dict) else answer
    for k, v in body.items():
        if k != "RequestId":
            print(f"{k}: {_render(v)}")


def call_all_pages(client: Client, action: str, params: Params) -> Params:
    """Call `action`; while the answer has a NextToken, fetch the next page and join the lists."""
    answer = client.call(action, **params)
    for _ in range(MAX_PAGES):
        token = answer.pop("NextToken", None)
        if not token:
            return answer
        page = client.call(action, **params, NextToken=token)
        for key, value in page.items():
            if isinstance(value, list) and isinstance(answer.get(key), list):
                answer[key].extend(value)
        answer["NextToken"] = page.get("NextToken")
    raise ApiFailure("TooManyPages", f"{action} returned more than {MAX_PAGES} pages")


def _print_answer(command_key: str, answer: Params, output: str) -> None:
    if output == "json":
        print(json.dumps(answer, indent=2))
    elif command_key == "scan":
        print_scan(answer)
    else:
        print_human(answer)


def _notes(command_key: str, answer: Params) -> None:
    """What an empty answer means, on stderr (kept out of JSON output)."""
    if command_key == "alerts test" and not answer.get("Results"):
        print(
            "no alert URL is configured (alerts.urls): alerts go to the service's log; "
            "nothing was sent",
            file=sys.stderr,
        )


def _run_command(args: argparse.Namespace, run: Command) -> int:
    client = Client(args.api, args.token)
    try:
        answer = call_all_pages(client, run.action, run.build(args))
    except UsageError as exc:
        print(f"certwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiFailure as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    _print_answer(args.command_key, answer, args.output)
    sys.stdout.flush()
    _notes(args.command_key, answer)
    failure = run.failed(answer)
    if failure:
        print(failure, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _config_check(config_path: str | None) -> int:
    from certwatch.app.serve import load_and_check
    from certwatch.config import ConfigError

    try:
        load_and_check(config_path, "serve")
    except ConfigError as exc:
        print(f"certwatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"configuration OK ({config_path or 'defaults and CERTWATCH_* variables'})")
    return EXIT_OK


def _stop_before_start(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(EXIT_OK)


def _dispatch(argv: Sequence[str] | None) -> int:
    parser, commands = _build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "proxy"):
        # A signal while the service's modules load ends the start quietly; `run` then
        # installs the real handlers.
        signal.signal(signal.SIGTERM, _stop_before_start)
        signal.signal(signal.SIGINT, _stop_before_start)
        from certwatch.app.serve import run

        demo_port = args.demo_port if getattr(args, "demo", False) else None
        return run(
            args.command,
            args.config,
            demo_port=demo_port,
            log_format=args.log_format,
            log_level=args.log_level,
        )
    if args.command_key == "config check":
        return _config_check(args.config)
    return _run_command(args, commands[args.command_key])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `certwatch` console script; returns the exit code.

    Output into a pipe that was closed (`| head`) ends quietly.
    """
    try:
        code = _dispatch(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
