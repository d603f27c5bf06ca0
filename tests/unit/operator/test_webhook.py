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
