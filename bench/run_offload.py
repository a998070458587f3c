"""Serve one benchmark listener with certwatch's offload proxy until SIGTERM.

Run by bench.proxy_bench as its own process so its whole process tree (this
process plus the ProxyControl workers) can be accounted from /proc. Prints
"READY" on stdout once every worker serves the listener.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    """Parse options, start ProxyControl, apply one snapshot, wait for a signal, stop."""
    p = argparse.ArgumentParser(prog="python -m bench.run_offload")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chain", type=Path, required=True, help="PEM: leaf then intermediates")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--name", default="bench.example")
    p.add_argument("--backend-port", type=int, required=True)
    p.add_argument("--max-seconds", type=float, default=3600.0)
    args = p.parse_args(argv)

    from offload.spec import Backend, CertChain, ListenerSpec, Snapshot
    from offload.workers import ProxyControl

    spec = ListenerSpec(
        listener_id="lsn-bench",
        address="127.0.0.1",
        port=args.port,
        default_cert=CertChain(args.chain.read_text(), args.key.read_text(), (args.name,)),
        backends=(Backend("127.0.0.1", args.backend_port, 100),),
        tls_versions=("TLSv1.2", "TLSv1.3"),
        ciphers=(),
        idle_timeout=900.0,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    control = ProxyControl(workers=args.workers, ack_timeout=10.0)
    control.start()
    try:
        control.apply(Snapshot(revision=1, listeners=(spec,)))
        print("READY", flush=True)
        stop.wait(args.max_seconds)
    finally:
        control.stop(drain_timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
