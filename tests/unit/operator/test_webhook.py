"""The webhook server: registered by Service reference, with a certificate the API server will accept."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from pathlib import Path
from typing import Any

from mlendpoints.operator.webhook import ServiceWebhookServer, self_signed_certificate
from tests.fixtures.servers import free_port

HOST = "mlendpoints-operator.mlendpoints-system.svc"


def test_webhook_registers_by_service_with_a_cert_valid_for_its_dns_name(tmp_path: Path) -> None:
    port = free_port()
    cert, key = self_signed_certificate([HOST, f"{HOST}.cluster.local"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)

    async def first_config() -> Any:
        server = ServiceWebhookServer(
            "mlendpoints-operator", "mlendpoints-system", port, cert_dir=str(tmp_path)
        )

        async def never_called(*_: Any, **__: Any) -> Any:
            raise AssertionError("no request is sent")

        configs = server(never_called)
        config = await configs.__anext__()
        ca = base64.b64decode(config["caBundle"])
        # The API server dials the Service and verifies the name <service>.<namespace>.svc.
        context = ssl.create_default_context(cadata=ca.decode())
        loop = asyncio.get_running_loop()

        def handshake() -> str:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(
                    raw, server_hostname="mlendpoints-operator.mlendpoints-system.svc"
                ) as tls,
            ):
                return str(tls.version())

        version = await loop.run_in_executor(None, handshake)
        await configs.aclose()
        return config, version

    config, version = asyncio.run(first_config())
    assert config["service"] == {
        "name": "mlendpoints-operator",
        "namespace": "mlendpoints-system",
        "port": port,
        "path": "",
    }
    assert "url" not in config
    assert version.startswith("TLS")


def test_a_ca_signed_certificate_registers_its_ca_as_the_bundle(tmp_path: Path) -> None:
    """cert-manager and users' Secrets carry ca.crt: the API server must trust the CA, not the leaf."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_pem, ca_key_pem = self_signed_certificate(["test-ca"])
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "ca.crt").write_bytes(ca_pem)

    async def first_config() -> Any:
        server = ServiceWebhookServer(
            "mlendpoints-operator", "mlendpoints-system", free_port(), str(tmp_path)
        )

        async def never_called(*_: Any, **__: Any) -> Any:
            raise AssertionError("no request is sent")

        configs = server(never_called)
        config = await configs.__anext__()
        await configs.aclose()
        return config

    assert base64.b64decode(asyncio.run(first_config())["caBundle"]) == ca_pem
