"""The validating admission webhook: the rules that need other objects, before anything is stored.

Rules about one object alone are the CRDs' CEL rules (api/cel.py), which the API server checks
even where this webhook is not installed. What is left here: an endpoint's traffic naming a
deployment that does not exist (on update), and deleting a deployment that still has traffic.

Served by kopf with a certificate shared by all replicas (self-signed once into a Secret, or mounted) and
registered by kopf in a ValidatingWebhookConfiguration named `mlendpoints.io`.
The API server reaches it through its Service (no cluster DNS needed). Its
failure policy is Ignore: the reconciler runs the same checks and reports them
in conditions, so an operator outage never blocks deletes or garbage collection.
The handlers are persistent: a replica that exits (a rolling update) leaves the
registration in place for the one taking over.

The mutating webhook (`register_model_inputs`, in the MutatingWebhookConfiguration of the same
name) injects model inputs into Pods labelled `mlendpoints.io/inject-models: "true"`
(render/model_inputs.py). kopf turns the handler's label filter into the webhook's objectSelector,
so the API server never calls it for other pods; for labelled ones the failure policy is Fail: a
pod admitted without its inputs would run without its model.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mlendpoints.api.common import API_GROUP, API_VERSION
from mlendpoints.api.kinds import ONLINE_DEPLOYMENT, ONLINE_ENDPOINT
from mlendpoints.api.online import OnlineEndpointSpec
from mlendpoints.api.validation import endpoint_reference_errors, parse_spec, validate_deployment_delete
from mlendpoints.operator import models
from mlendpoints.operator.kube import Kube, Ref
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.operator.store import Store
from mlendpoints.render.deployment import ResolvedModel
from mlendpoints.render.model_inputs import ModelInputError, inject_model_inputs, parse_model_inputs
from mlendpoints_serving import contract

CONFIGURATION_NAME = "mlendpoints.io"
# The API server waits at most 30 s for a webhook (kopf registers timeoutSeconds 30); resolving the
# inputs' aliases must answer, or refuse, well within that.
RESOLVE_TIMEOUT_S = 20.0
Resolver = Callable[[str, str | None], Awaitable[ResolvedModel]]  # (model URI, tracking URI) -> pinned


def self_signed_certificate(hostnames: list[str]) -> tuple[bytes, bytes]:
    """PEM certificate and key for `hostnames`; the certificate is its own CA (sent as the caBundle).

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
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def shared_certificate(kube: Kube, service: str, namespace: str) -> str:
    """A directory with tls.crt/tls.key from the Secret `<service>-webhook-tls`, made once for all replicas.

    Every replica behind the Service must present the certificate the registration's caBundle names.
    """
    ref = Ref("v1", "Secret", namespace, f"{service}-webhook-tls")
    secret = await kube.get(ref)
    if secret is None:
        host = f"{service}.{namespace}.svc"
        cert, key = self_signed_certificate([host, f"{host}.cluster.local", f"{service}.{namespace}"])
        created = await kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": ref.name, "namespace": namespace},
                "data": {
                    "tls.crt": base64.b64encode(cert).decode(),
                    "tls.key": base64.b64encode(key).decode(),
                },
            }
        )
        secret = created or await kube.get(ref)  # another replica may have won the race
        if secret is None:
            raise RuntimeError(f"Secret {namespace}/{ref.name} vanished while being created")
    directory = Path(tempfile.mkdtemp(prefix="mlendpoints-webhook-"))
    for key_name in ("tls.crt", "tls.key"):
        (directory / key_name).write_bytes(base64.b64decode(secret["data"][key_name]))
    return str(directory)


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server, registered by Service reference instead of by URL."""

    def __init__(self, service: str, namespace: str, port: int, cert_dir: str) -> None:
        # A certificate signed by a CA (cert-manager's, or a user's Secret) comes with its ca.crt: that is
        # what the API server must trust. Without one, the certificate itself is the caBundle (self-signed).
        ca = Path(cert_dir) / "ca.crt"
        super().__init__(
            addr="0.0.0.0",
            port=port,
            host=f"{service}.{namespace}.svc",
            certfile=f"{cert_dir}/tls.crt",
            pkeyfile=f"{cert_dir}/tls.key",
            cafile=ca if ca.is_file() else None,
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
    """Validation that needs other objects; the CRDs' CEL rules check each object alone (api/cel.py)."""

    @kopf.on.validate(
        API_GROUP, API_VERSION, "onlineendpoints", operations=["UPDATE"],
        ignore_failures=True, persistent=True, registry=registry, id="validate-onlineendpoint",
    )  # fmt: skip
    def endpoint(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> None:
        # Only on update: on create, the traffic may name deployments created right after it (one
        # `kubectl apply` of a folder); until they exist the reconciler routes nothing and says so
        # in TrafficValid.
        parsed, errors = parse_spec(OnlineEndpointSpec, spec)
        if parsed is not None:
            known = set(store.attached_to(ONLINE_DEPLOYMENT.kind, namespace or "", name))
            errors += endpoint_reference_errors(parsed, known)
        _reject(errors)

    @kopf.on.validate(
        API_GROUP,
        API_VERSION,
        "onlinedeployments",
        operations=["DELETE"],
        ignore_failures=True,
        persistent=True,
        registry=registry,
        id="validate-onlinedeployment-delete",
    )
    def deployment_delete(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> None:
        endpoint = store.get(ONLINE_ENDPOINT.kind, namespace or "", spec.get("endpointName", ""))
        if endpoint is None or endpoint["metadata"].get("deletionTimestamp"):
            return  # the endpoint goes too (or never existed): nothing routes here any more
        parsed, _errors = parse_spec(OnlineEndpointSpec, endpoint.get("spec"))
        _reject(validate_deployment_delete(name, parsed))


def register_model_inputs(
    registry: kopf.OperatorRegistry, settings: OperatorSettings, resolve: Resolver = models.resolve
) -> None:
    """The mutating webhook: model inputs for opted-in Pods, registry URIs pinned at admission."""
    render_settings = settings.render_settings()

    @kopf.on.mutate(
        "v1", "pods", operations=["CREATE"], labels={contract.LABEL_INJECT_MODELS: "true"},
        ignore_failures=False, persistent=True, registry=registry, id="inject-model-inputs",
    )  # fmt: skip
    async def inject(body: kopf.Body, annotations: kopf.Annotations, patch: kopf.Patch, **_: Any) -> None:
        try:
            inputs = parse_model_inputs(annotations)
        except ModelInputError as exc:
            raise kopf.AdmissionError(str(exc), code=422) from None
        results = await asyncio.gather(
            *(
                _resolve_input(name, uri, settings.mlflow_tracking_uri, resolve)
                for name, uri in inputs.items()
            )
        )
        errors = [error for _, error in results if error]
        if errors:
            raise kopf.AdmissionError("; ".join(errors), code=422)
        resolved = {name: uri for name, (uri, _) in zip(inputs, results, strict=True)}
        mutated = inject_model_inputs(dict(body), resolved, render_settings)

        def apply(target: Any) -> None:  # kopf diffs the result against the pod into a JSON patch
            target["metadata"], target["spec"] = mutated["metadata"], mutated["spec"]

        patch.fns.append(apply)


async def _resolve_input(name: str, uri: str, tracking_uri: str | None, resolve: Resolver) -> tuple[str, str]:
    """(the URI to fetch, "") or ("", the reason the input is refused, naming it)."""
    where = f"annotation {contract.ANNOTATION_MODELS}, input {name!r}"
    if models.needs_registry(uri) and not tracking_uri:
        no_registry = "the operator has no MLflow tracking URI (the chart's mlflow.trackingUri)"
        return "", f"{where}: {uri} needs the MLflow registry, and {no_registry}"
    try:
        return (await asyncio.wait_for(resolve(uri, tracking_uri), RESOLVE_TIMEOUT_S)).uri, ""
    except models.ResolveError as exc:
        return "", f"{where}: cannot resolve {exc}"
    except TimeoutError:
        return "", f"{where}: the MLflow registry did not resolve {uri} within {RESOLVE_TIMEOUT_S:.0f} s"


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings, cert_dir: str) -> None:
    """Serve the webhook behind its Service with the certificate in `cert_dir`, and register it."""
    assert settings.webhook_service is not None
    kopf_settings.admission.server = ServiceWebhookServer(
        settings.webhook_service, settings.webhook_namespace, settings.webhook_port, cert_dir
    )
    kopf_settings.admission.managed = CONFIGURATION_NAME
