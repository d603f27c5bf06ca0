"""The validating admission webhook: the rules a structural schema cannot express, before anything is stored.

Served by kopf with a self-signed certificate (or one mounted from a Secret) and
registered by kopf in a ValidatingWebhookConfiguration named `mlendpoints.io`.
The API server reaches it through its Service (no cluster DNS needed). Its
failure policy is Ignore: the reconciler runs the same checks and reports them
in conditions, so an operator outage never blocks deletes or garbage collection.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mlendpoints.api.batch import BatchDeploymentSpec
from mlendpoints.api.common import API_GROUP, API_VERSION
from mlendpoints.api.online import OnlineDeploymentSpec, OnlineEndpointSpec
from mlendpoints.api.validation import (
    parse_spec,
    validate_deployment,
    validate_deployment_delete,
    validate_endpoint,
    validate_model_uri,
    validate_name,
)
from mlendpoints.operator.reconcile import Store
from mlendpoints.operator.settings import OperatorSettings

CONFIGURATION_NAME = "mlendpoints.io"


def self_signed_certificate(directory: Path, hostnames: list[str]) -> None:
    """Write tls.crt/tls.key for `hostnames` (the certificate is its own CA, sent as the caBundle).

    kopf's own generator goes through oscrypto, which cannot parse OpenSSL 3.0.10+ version strings
    (wbond/oscrypto#75), so the certificate is made with `cryptography` instead.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server, registered by Service reference instead of by URL."""

    def __init__(self, service: str, namespace: str, port: int, cert_dir: str | None) -> None:
        host = f"{service}.{namespace}.svc"
        if cert_dir is None:
            cert_dir = tempfile.mkdtemp(prefix="mlendpoints-webhook-")
            self_signed_certificate(Path(cert_dir), [host, f"{host}.cluster.local", f"{service}.{namespace}"])
        super().__init__(
            addr="0.0.0.0",
            port=port,
            host=host,
            certfile=f"{cert_dir}/tls.crt",
            pkeyfile=f"{cert_dir}/tls.key",
        )
        self.service = service
        self.namespace = namespace

    async def __call__(self, fn: Any) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for config in super().__call__(fn):
            yield kopf.WebhookClientConfig(
                caBundle=config.get("caBundle"),
                service={"name": self.service, "namespace": self.namespace, "port": self.port, "path": ""},
            )


def _reject(errors: list[str]) -> None:
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)


def register(registry: kopf.OperatorRegistry, store: Store) -> None:
    """Validation handlers for the online kinds (and the model URI of batch deployments)."""

    @kopf.on.validate(
        API_GROUP, API_VERSION, "onlineendpoints", operations=["CREATE", "UPDATE"],
        ignore_failures=True, registry=registry,
    )  # fmt: skip
    def endpoint(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> None:
        parsed, errors = parse_spec(OnlineEndpointSpec, spec)
        errors = validate_name(name) + errors
        if parsed is not None:
            errors += validate_endpoint(parsed, set(store.deployments_of(namespace or "", name)))
        _reject(errors)

    @kopf.on.validate(
        API_GROUP, API_VERSION, "onlinedeployments", operations=["CREATE", "UPDATE"],
        ignore_failures=True, registry=registry,
    )  # fmt: skip
    def deployment(spec: kopf.Spec, name: str, **_: Any) -> None:
        parsed, errors = parse_spec(OnlineDeploymentSpec, spec)
        if parsed is not None:
            errors += validate_deployment(name, parsed)
        _reject(errors)

    @kopf.on.validate(
        API_GROUP,
        API_VERSION,
        "onlinedeployments",
        operations=["DELETE"],
        ignore_failures=True,
        registry=registry,
    )
    def deployment_delete(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> None:
        endpoint = store.endpoints.get((namespace or "", spec.get("endpointName", "")))
        if endpoint is None or endpoint["metadata"].get("deletionTimestamp"):
            return  # the endpoint goes too (or never existed): nothing routes here any more
        parsed, _errors = parse_spec(OnlineEndpointSpec, endpoint.get("spec"))
        _reject(validate_deployment_delete(name, parsed))

    @kopf.on.validate(
        API_GROUP, API_VERSION, "batchdeployments", operations=["CREATE", "UPDATE"],
        ignore_failures=True, registry=registry,
    )  # fmt: skip
    def batch_deployment(spec: kopf.Spec, **_: Any) -> None:
        parsed, errors = parse_spec(BatchDeploymentSpec, spec)
        if parsed is not None:
            errors += validate_model_uri(parsed.model)
        _reject(errors)


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> bool:
    """Serve and register the webhook when the operator runs behind a Service; whether it does."""
    if not settings.webhook_service:
        return False
    kopf_settings.admission.server = ServiceWebhookServer(
        settings.webhook_service, settings.webhook_namespace, settings.webhook_port, settings.webhook_cert_dir
    )
    kopf_settings.admission.managed = CONFIGURATION_NAME
    return True
