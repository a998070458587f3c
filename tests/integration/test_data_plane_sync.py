"""API changes and the data plane: a change the proxy does not take is refused and undone."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certwatch.api.http import create_app
from certwatch.app.service import Service
from offload.workers import ProxyControl
from tests.certfactory import make_pki
from tests.conftest import Api, make_config
from tests.support import free_port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Api, ProxyControl]]:
    """An API whose service drives a real one-worker proxy with a short acknowledgement wait."""
    with ProxyControl(1, ack_timeout=1.0) as proxy:
        service = Service(make_config(tmp_path), data_plane=proxy)
        service.sync_data_plane()
        with TestClient(create_app(service)) as client:
            yield Api(client), proxy
        service.close()


def test_unanswered_change_is_503_and_changes_nothing(served: tuple[Api, ProxyControl]) -> None:
    """With the worker stopped, CreateListener is 503 ProxyUnavailable; once the worker runs
    again, the refused listener is neither stored nor served and later changes work."""
    api, proxy = served
    leaf = make_pki().leaf("a.example.com")
    cert = api.ok("UploadCertificate", **leaf.upload_params("a"))["CertificateId"]
    lb = api.ok("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
    sg = api.ok("CreateServerGroup", ServerGroupName="g")["ServerGroupId"]
    (pid,) = proxy.worker_pids()
    port = free_port()
    os.kill(pid, signal.SIGSTOP)
    try:
        api.fails(
            "CreateListener",
            "ProxyUnavailable",
            503,
            LoadBalancerId=lb,
            ServerGroupId=sg,
            ListenerPort=port,
            CertificateIds=[cert],
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert api.ok("ListListeners")["Listeners"] == []
    api.ok("CreateLoadBalancer", LoadBalancerName="after")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
