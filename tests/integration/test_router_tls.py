"""TLS at the router (spec.tls), as a real process in file mode in front of a real backend: HTTPS
verified against the CA, plain HTTP refused on the TLS port, the plain admin port serving only the
router's own paths, and the certificate reloaded from a kubelet-style mount (new directory, then an
atomic symlink swap) without a restart, a corrupt replacement leaving the previous one serving."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlendpoints.client import Route, Tls, score
from tests.fixtures.servers import free_port, running
from tests.fixtures.tls_certs import Issued, issue, served_serial
from tests.integration.router_support import REPO, ROUTER, Backends, until

RELOAD_S = 0.5


class Mount:
    """A Secret volume as kubelet lays it out: tls.crt -> ..data/tls.crt, ..data -> ..<version>."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0
        root.mkdir()
        for name in ("tls.crt", "tls.key"):
            (root / name).symlink_to(Path("..data") / name)

    def publish(self, cert: bytes, key: bytes) -> None:
        self.version += 1
        new = self.root / f"..v{self.version}"
        new.mkdir()
        (new / "tls.crt").write_bytes(cert)
        (new / "tls.key").write_bytes(key)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(new.name)
        os.replace(tmp, self.root / "..data")  # the atomic swap

    def publish_issued(self, issued: Issued) -> None:
        self.publish(issued.cert.read_bytes(), issued.key.read_bytes())


def peer_serial(port: int, ca: Path) -> int:
    """The serial of the certificate a new connection is shown (verified against `ca`)."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return served_serial(der)


def verifies_with(port: int, ca: Path) -> bool:
    try:
        peer_serial(port, ca)
    except ssl.SSLCertVerificationError:
        return False
    return True


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    with contextlib.ExitStack() as stack:
        yield Backends(stack, tmp_path)


def test_router_serves_https_and_reloads_its_certificate(tmp_path: Path, backends: Backends) -> None:
    first = issue(tmp_path / "ca1", "first CA", ["127.0.0.1", "localhost"])
    second = issue(tmp_path / "ca2", "second CA", ["127.0.0.1", "localhost"])
    mount = Mount(tmp_path / "tls")
    mount.publish_issued(first)
    blue = backends.start("blue")
    config = {"endpoint": "e", "authMode": "none", "deployments": {"blue": {"backends": [blue]}}}
    config["traffic"] = {"blue": 100}
    (tmp_path / "router.json").write_text(json.dumps(config))
    port, admin = free_port(), free_port()
    argv = [
        *ROUTER,
        *("--config", str(tmp_path / "router.json"), "--host", "127.0.0.1", "--port", str(port)),
        *("--admin-port", str(admin), "--tls-reload-interval-s", str(RELOAD_S)),
        *("--tls-cert-file", str(mount.root / "tls.crt"), "--tls-key-file", str(mount.root / "tls.key")),
    ]
    log = tmp_path / "router.log"
    with running(argv, ready_url=f"http://127.0.0.1:{admin}/health", log=log, cwd=REPO):
        base = f"https://127.0.0.1:{port}"
        # Verified against the first CA: the prediction comes back from the deployment.
        with httpx.Client(verify=ssl.create_default_context(cafile=str(first.ca)), timeout=10) as kept:
            response = kept.post(base + "/score", json={"input_data": [[1, 2]]})
            assert response.status_code == 200, response.text
            assert response.json()["backend"] == "blue"
            assert json.loads(response.json()["body"]) == {"input_data": [[1, 2]]}
            assert kept.get(base + "/health").status_code == 200  # own paths over HTTPS too
            # The CLI's and MLflow plugin's client: verified against the CA bundle, for the name given.
            tls = Tls("localhost", str(first.ca))
            answer = score(
                Route("127.0.0.1", port, "loopback", tls=tls), None, b'{"input_data": [[5]]}', None
            )
            assert (answer.status, answer.served_by) == (200, "blue")
            with pytest.raises(ssl.SSLCertVerificationError):
                score(
                    Route("127.0.0.1", port, "loopback", tls=Tls("localhost", str(second.ca))),
                    None,
                    b"{}",
                    None,
                )

            # Plain HTTP to the TLS port gets no answer.
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            # The admin port is plain HTTP and serves only the router's own paths.
            assert httpx.get(f"http://127.0.0.1:{admin}/-/scaling", timeout=5).status_code == 200
            refused = httpx.post(f"http://127.0.0.1:{admin}/score", json={}, timeout=5)
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "not_found"

            # The Secret changes: new connections get the second CA's certificate within the interval.
            assert peer_serial(port, first.ca) == first.serial
            mount.publish_issued(second)
            took = until(lambda: verifies_with(port, second.ca), within=5 * RELOAD_S + 2)
            assert took < 4 * RELOAD_S + 1
            assert peer_serial(port, second.ca) == second.serial
            assert not verifies_with(port, first.ca)
            with httpx.Client(verify=ssl.create_default_context(cafile=str(second.ca)), timeout=10) as new:
                assert new.post(base + "/score", json={"input_data": [[3]]}).status_code == 200
            # The connection opened before the swap is untouched.
            assert kept.post(base + "/score", json={"input_data": [[4]]}).status_code == 200

        # A corrupt replacement: logged, counted, and the second certificate keeps serving.
        mount.publish(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n", second.key.read_bytes())
        metrics = f"http://127.0.0.1:{admin}/metrics"
        until(lambda: 'tls_reloads_total{result="failed"} 1.0' in httpx.get(metrics).text, within=5)
        time.sleep(2 * RELOAD_S)
        assert peer_serial(port, second.ca) == second.serial
        assert 'tls_reloads_total{result="ok"} 1.0' in httpx.get(metrics).text
        assert "new TLS certificate does not load; keeping the previous one" in log.read_text()

        # A key that does not match the certificate is refused the same way.
        mount.publish(first.cert.read_bytes(), second.key.read_bytes())
        until(lambda: 'tls_reloads_total{result="failed"} 2.0' in httpx.get(metrics).text, within=5)
        assert peer_serial(port, second.ca) == second.serial


def test_router_refuses_to_start_with_a_bad_certificate(tmp_path: Path) -> None:
    issued = issue(tmp_path / "ca", "CA", ["127.0.0.1"])
    (tmp_path / "bad.crt").write_text("garbage")
    (tmp_path / "router.json").write_text(json.dumps({"endpoint": "e", "authMode": "none"}))
    argv = [
        *ROUTER,
        *("--config", str(tmp_path / "router.json"), "--port", str(free_port()), "--host", "127.0.0.1"),
        *("--tls-cert-file", str(tmp_path / "bad.crt"), "--tls-key-file", str(issued.key)),
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot load the TLS certificate" in done.stdout + done.stderr
