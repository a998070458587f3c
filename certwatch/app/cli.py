"""`certwatch` command line: `serve` and `proxy` run the service; the rest talk to its API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from certwatch.app.client import ApiFailure, Client
from certwatch.pki.pem import split_pem

Params = dict[str, Any]
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
}


def _read(path: str) -> str:
    return Path(path).read_text()


def _servers(values: Sequence[str] | None) -> list[Params] | None:
    if values is None:
        return None
    out = []
    for value in values:
        parts = value.rsplit(":", 2) if value.count(":") <= 2 else [value]
        if len(parts) < 2:
            raise SystemExit(f"--server {value!r}: use IP:PORT or IP:PORT:WEIGHT")
        weight = int(parts[2]) if len(parts) == 3 else 100
        out.append({"ServerIp": parts[0], "Port": int(parts[1]), "Weight": weight})
    return out


def _thresholds(value: str | None) -> list[int] | None:
    return None if value is None else [int(v) for v in value.split(",") if v.strip()]


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
    }


def _add_listener_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-group")
    p.add_argument("--cert", help="the default server certificate id")
    p.add_argument("--policy", help="security policy id")
    p.add_argument("--ca-enabled", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--ca-cert", action="append", help="a Ca certificate id (repeatable)")
    p.add_argument("--idle-timeout", type=int)
    p.add_argument("--description")
    p.add_argument("--thresholds", help="alert thresholds in days, e.g. 30,7,1")


Command = tuple[str, Callable[[argparse.Namespace], Params]]


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(prog="certwatch", description=__doc__)
    parser.add_argument(
        "--api",
        default=os.environ.get("CERTWATCH_API_URL", "http://127.0.0.1:9180"),
        help="the service's API URL (env CERTWATCH_API_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CERTWATCH_API_TOKEN"),
        help="bearer token (env CERTWATCH_API_TOKEN)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", default=argparse.SUPPRESS)
    common.add_argument("--token", default=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Command] = {}

    def command(
        path: str,
        action: str,
        build: Callable[[argparse.Namespace], Params],
        parent: Any = sub,
        help_text: str = "",
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            path.split()[-1], help=help_text or action, parents=[common]
        )
        p.set_defaults(command_key=path)
        commands[path] = (action, build)
        return p

    serve = sub.add_parser("serve", help="run the service in the foreground")
    serve.add_argument("--config")
    serve.add_argument("--demo", action="store_true", help="add a demo listener on 127.0.0.1:8443")
    serve.add_argument("--demo-port", type=int, default=8443, help="the demo listener's port")
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    proxy = sub.add_parser("proxy", help="run only the data plane against the shared store")
    proxy.add_argument("--config")
    proxy.add_argument("--log-format", choices=["text", "json"], default="text")

    command("scan", "ScanNow", lambda a: {}, help_text="run one scan now")

    certs = sub.add_parser("certs", help="certificates").add_subparsers(dest="sub", required=True)
    p = command(
        "certs upload",
        "UploadCertificate",
        lambda a: {
            "CertificateName": a.name,
            "CertificateType": a.type,
            "Certificate": _read(a.cert),
            "PrivateKey": _read(a.key) if a.key else None,
        },
        certs,
    )
    p.add_argument("name")
    p.add_argument("--type", default="Server", choices=["Server", "Ca", "Client"])
    p.add_argument("--cert", required=True, help="PEM file: certificate, then its chain")
    p.add_argument("--key", help="PEM private key file (Server)")
    p = command(
        "certs list",
        "ListCertificates",
        lambda a: {
            "CertificateType": a.type,
            "ExpiringWithinDays": a.expiring_within,
            "MaxResults": a.max_results,
            "NextToken": a.next_token,
        },
        certs,
    )
    p.add_argument("--type", choices=["Server", "Ca", "Client"])
    p.add_argument("--expiring-within", type=int, metavar="DAYS")
    p.add_argument("--max-results", type=int)
    p.add_argument("--next-token")
    for name, action in (("show", "GetCertificate"), ("delete", "DeleteCertificate")):
        command(f"certs {name}", action, lambda a: {"CertificateId": a.id}, certs).add_argument(
            "id"
        )

    lbs = sub.add_parser("lb", help="load balancers").add_subparsers(dest="sub", required=True)
    command(
        "lb create", "CreateLoadBalancer", lambda a: {"LoadBalancerName": a.name}, lbs
    ).add_argument("name")

    groups = sub.add_parser("server-groups", help="backend server groups").add_subparsers(
        dest="sub", required=True
    )
    p = command(
        "server-groups create",
        "CreateServerGroup",
        lambda a: {"ServerGroupName": a.name, "Servers": _servers(a.server) or []},
        groups,
    )
    p.add_argument("name")
    p.add_argument("--server", action="append", metavar="IP:PORT[:WEIGHT]")
    for name, action in (
        ("add", "AddServersToServerGroup"),
        ("remove", "RemoveServersFromServerGroup"),
    ):
        p = command(
            f"server-groups {name}",
            action,
            lambda a: {"ServerGroupId": a.id, "Servers": _servers(a.server)},
            groups,
        )
        p.add_argument("id")
        p.add_argument("--server", action="append", required=True, metavar="IP:PORT[:WEIGHT]")

    lsn = sub.add_parser("listeners", help="listeners").add_subparsers(dest="sub", required=True)
    p = command(
        "listeners create",
        "CreateListener",
        lambda a: {
            "LoadBalancerId": a.lb,
            "ListenerPort": a.port,
            "ListenerAddress": a.address,
            "ListenerProtocol": a.protocol,
            **_listener_fields(a),
        },
        lsn,
    )
    p.add_argument("--lb", required=True, help="load balancer id")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--address")
    p.add_argument("--protocol", choices=["TCPSSL", "TCP"])
    _add_listener_fields(p)
    p = command(
        "listeners update",
        "UpdateListenerAttribute",
        lambda a: {"ListenerId": a.id, **_listener_fields(a)},
        lsn,
    )
    p.add_argument("id")
    _add_listener_fields(p)
    command(
        "listeners list", "ListListeners", lambda a: {"LoadBalancerId": a.lb}, lsn
    ).add_argument("--lb")
    for name, action in (
        ("show", "GetListenerAttribute"),
        ("start", "StartListener"),
        ("stop", "StopListener"),
        ("delete", "DeleteListener"),
    ):
        command(f"listeners {name}", action, lambda a: {"ListenerId": a.id}, lsn).add_argument("id")
    p = command(
        "listeners certs",
        "ListListenerCertificates",
        lambda a: {"ListenerId": a.id, "CertificateType": a.type},
        lsn,
    )
    p.add_argument("id")
    p.add_argument("--type", choices=["Server", "Ca"])
    for name, action in (
        ("add-certs", "AssociateAdditionalCertificatesWithListener"),
        ("remove-certs", "DisassociateAdditionalCertificatesWithListener"),
    ):
        p = command(
            f"listeners {name}",
            action,
            lambda a: {"ListenerId": a.id, "AdditionalCertificateIds": a.certs},
            lsn,
        )
        p.add_argument("id")
        p.add_argument("certs", nargs="+")

    pol = sub.add_parser("policies", help="TLS security policies").add_subparsers(
        dest="sub", required=True
    )
    command("policies list", "ListSecurityPolicies", lambda a: {}, pol)
    p = command(
        "policies create",
        "CreateSecurityPolicy",
        lambda a: {"SecurityPolicyName": a.name, "TlsVersions": a.version, "Ciphers": a.cipher},
        pol,
    )
    p.add_argument("name")
    p.add_argument("--version", action="append", required=True)
    p.add_argument("--cipher", action="append", required=True)
    alerts = sub.add_parser(
        "alerts", help="expiry alerts (`certwatch alerts` lists them)", parents=[common]
    )
    alerts.set_defaults(command_key="alerts list", listener=None, certificate=None)
    al = alerts.add_subparsers(dest="sub")
    p = command(
        "alerts list",
        "ListAlerts",
        lambda a: {"ListenerId": a.listener, "CertificateId": a.certificate},
        al,
    )
    p.add_argument("--listener")
    p.add_argument("--certificate")
    command(
        "alerts test",
        "TestNotification",
        lambda a: {},
        al,
        help_text="send a test message to every alert URL",
    )

    p = command("stage", "StageCertificate", _stage, help_text="stage renewed certificates")
    p.add_argument("files", nargs="+", help="a PEM with chain and key, or CRT then KEY")
    p.add_argument("--listener", help="only for this listener")
    p = command(
        "rotate",
        "RotateListenerCertificate",
        lambda a: {"ListenerId": a.listener, "StagedCertificateId": a.staged},
        help_text="rotate a listener's default certificate now",
    )
    p.add_argument("listener")
    p.add_argument("--staged", help="a staged certificate id (else the best candidate)")
    command(
        "rollback",
        "RollbackListenerCertificate",
        lambda a: {"ListenerId": a.listener},
        help_text="restore the previous default certificate",
    ).add_argument("listener")
    command(
        "history",
        "ListRotationEvents",
        lambda a: {"ListenerId": a.listener},
        help_text="a listener's certificate history",
    ).add_argument("listener")
    command(
        "staged",
        "ListStagedCertificates",
        lambda a: {"Status": a.status},
        help_text="list staged certificates",
    ).add_argument("--status")
    return parser, commands


def _stage(a: argparse.Namespace) -> Params:
    chain, key = split_pem("".join(_read(path) for path in a.files))
    if not key:
        raise SystemExit("stage: no private key found in " + " ".join(a.files))
    return {"Certificate": chain, "PrivateKey": key, "ListenerId": a.listener}


def _render(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def print_human(answer: Params) -> None:
    """Lists as aligned tables; other answers as `Key: value` lines."""
    for key, columns in LIST_FIELDS.items():
        rows = answer.get(key)
        if isinstance(rows, list):
            cells = [columns] + [[_render(row.get(c)) for c in columns] for row in rows]
            widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
            for row in cells:
                print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            extra = {k: v for k, v in answer.items() if k not in (key, "RequestId") and v}
            for k, v in extra.items():
                print(f"{k}: {_render(v)}")
            return
    nested = answer.get("Certificate")
    body: Params = nested if isinstance(nested, dict) else answer
    for k, v in body.items():
        if k != "RequestId":
            print(f"{k}: {_render(v)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `certwatch` console script."""
    parser, commands = _build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "proxy"):
        from certwatch.app.serve import run

        demo_port = args.demo_port if getattr(args, "demo", False) else None
        return run(args.command, args.config, demo_port=demo_port, log_format=args.log_format)
    action, build = commands[args.command_key]
    client = Client(args.api, args.token)
    try:
        answer = client.call(action, **build(args))
    except ApiFailure as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print_human(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
