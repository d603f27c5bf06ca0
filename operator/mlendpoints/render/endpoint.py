"""OnlineEndpoint -> keys Secret, router ConfigMap, router RBAC, router Deployment, Service, PDB."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlendpoints.api.online import DataCollector, OnlineDeploymentSpec, OnlineEndpoint, OnlineEndpointSpec
from mlendpoints.api.validation import validate_endpoint
from mlendpoints.render.common import (
    CONTAINER_SECURITY_CONTEXT,
    Object,
    RenderSettings,
    child,
    credentials,
    dump,
    grace_period,
    image_pull_secrets,
    labels,
    owner_reference,
    pod_security_context,
    prestop,
    router_name,
    server_name,
    with_default_resources,
)
from mlendpoints.render.discovery import ApiVersions
from mlendpoints_serving import contract

SERVICE_PORT = 80
SERVICE_TLS_PORT = 443  # with spec.tls
TLS_VOLUME = "tls"
# The router's own default budget for writing collected records on SIGTERM (--collector-flush-timeout-s).
ROUTER_FLUSH_S = 15
# The in-flight requests a terminating router waits for (its pods' grace period does not follow the
# deployments' requestTimeoutMs, or every new deployment would roll the routers).
ROUTER_REQUEST_BUDGET_MS = 60_000
PVC_SCHEME = "pvc://"
COLLECTOR_MOUNT_ROOT = "/var/mlendpoints/collector"  # pvc://CLAIM/PATH is mounted at <root>/CLAIM


@dataclass(frozen=True)
class Routing:
    """The split the router applies, and why the requested one was refused (if it was)."""

    traffic: dict[str, int]
    mirror: dict[str, int]
    errors: list[str] = field(default_factory=list)


def effective_routing(
    spec: OnlineEndpointSpec,
    deployments: Mapping[str, OnlineDeploymentSpec],
    applied: contract.RouterConfig | None,
) -> Routing:
    """The requested split when valid; else the one applied before if still valid; else none.

    So nothing invalid is ever routed, with or without the admission webhook.
    """
    errors = validate_endpoint(spec, deployments.keys())
    if not errors:
        return Routing(dict(sorted(spec.traffic.items())), dict(sorted(spec.mirrorTraffic.items())))
    if applied is not None:
        kept = OnlineEndpointSpec.model_construct(
            traffic=applied.traffic, mirrorTraffic=applied.mirrorTraffic
        )
        if not validate_endpoint(kept, deployments.keys()):
            return Routing(dict(applied.traffic), dict(applied.mirrorTraffic), errors)
    return Routing({}, {}, errors)  # route nothing rather than something invalid


def collector_destination(destination: str) -> tuple[str, str | None]:
    """(what the router writes to, the PVC claim to mount): pvc://CLAIM/PATH -> a path under the mount."""
    if not destination.startswith(PVC_SCHEME):
        return destination, None
    claim, _, path = destination[len(PVC_SCHEME) :].partition("/")
    return f"{COLLECTOR_MOUNT_ROOT}/{claim}/{path}".rstrip("/"), claim


def collector_route(collector: DataCollector | None) -> contract.CollectorRoute | None:
    if collector is None or not collector.enabled:
        return None
    return contract.CollectorRoute(
        destination=collector_destination(collector.destination)[0],
        request=collector.collections.request.enabled,
        response=collector.collections.response.enabled,
        samplingRate=collector.samplingRate,
        rolling=collector.rolling,
        maxBodyBytes=collector.maxBodyBytes,
        headers=[h.lower() for h in collector.headers if h.lower() != "authorization"],
    )


def collecting(deployments: Mapping[str, OnlineDeploymentSpec]) -> dict[str, DataCollector]:
    """The deployments whose requests are collected, by name."""
    return {
        name: spec.dataCollector
        for name, spec in sorted(deployments.items())
        if spec.dataCollector is not None and spec.dataCollector.enabled
    }


def router_config(
    name: str,
    namespace: str,
    spec: OnlineEndpointSpec,
    deployments: Mapping[str, OnlineDeploymentSpec],
    routing: Routing,
    model_versions: Mapping[str, str | None] | None = None,
) -> contract.RouterConfig:
    model_versions = model_versions or {}
    return contract.RouterConfig(
        endpoint=name,
        namespace=namespace,
        authMode=spec.authMode,
        modelErrors=spec.modelErrors,
        keysSecret=contract.keys_secret_name(name),
        traffic=routing.traffic,
        mirrorTraffic=routing.mirror,
        deployments={
            dep: contract.DeploymentRoute(
                service=server_name(dep),
                port=contract.SERVER_PORT,
                requestTimeoutMs=deployments[dep].requestSettings.requestTimeoutMs,
                maxConcurrentRequestsPerInstance=deployments[
                    dep
                ].requestSettings.maxConcurrentRequestsPerInstance,
                modelVersion=model_versions.get(dep),
                collector=collector_route(deployments[dep].dataCollector),
                maxQueueWaitMs=queue_wait_ms(deployments[dep]),
                autoscaled=deployments[dep].scaleSettings.type == "concurrency",
            )
            for dep in sorted(deployments)
        },
    )


DEFAULT_QUEUE_WAIT_MS = 30_000  # how long the router holds a request for a deployment scaled on load


def queue_wait_ms(spec: OnlineDeploymentSpec) -> int | None:
    """How long the router holds a request for a pod: as set, else 30 s for a deployment scaled on
    load (it may be at zero, or scaling up), else not at all (503 or 429 at once, as before)."""
    if spec.requestSettings.maxQueueWaitMs is not None:
        return spec.requestSettings.maxQueueWaitMs
    return DEFAULT_QUEUE_WAIT_MS if spec.scaleSettings.type == "concurrency" else None


def scoring_uri(name: str, namespace: str, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{name}.{namespace}.svc.cluster.local/score"


def openapi_uri(name: str, namespace: str, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{name}.{namespace}.svc.cluster.local/swagger.json"


def _owner(endpoint: OnlineEndpoint) -> Object:
    return owner_reference("OnlineEndpoint", endpoint.metadata["name"], endpoint.metadata["uid"])


def render_keys_secret(endpoint: OnlineEndpoint, primary: str, secondary: str) -> Object:
    """Created once with fresh keys and never overwritten (the apply layer only creates it)."""
    name = endpoint.metadata["name"]
    return child(
        "v1",
        "Secret",
        contract.keys_secret_name(name),
        endpoint.metadata["namespace"],
        _owner(endpoint),
        labels(name, contract.COMPONENT_ROUTER),
        {
            "type": "Opaque",
            "stringData": {contract.SECRET_PRIMARY_KEY: primary, contract.SECRET_SECONDARY_KEY: secondary},
        },
    )


def render_endpoint(
    endpoint: OnlineEndpoint,
    config: contract.RouterConfig,
    versions: ApiVersions,
    settings: RenderSettings,
    collectors: Mapping[str, DataCollector] | None = None,
) -> list[Object]:
    """Every child of the endpoint except the keys Secret, in apply order.

    With `collectors` (deployment -> its dataCollector): the router pods get the object stores'
    credentials (the operator-wide ones, as model fetching, and each collector's credentialsSecret),
    a PVC destination's claim as a volume, and may patch (only) each collecting deployment's
    collector-status ConfigMap, rendered last, where they report the destination's health."""
    collectors = collectors or {}
    name, namespace = endpoint.metadata["name"], endpoint.metadata["namespace"]
    spec = endpoint.spec
    owner = _owner(endpoint)
    router = router_name(name)
    configmap = contract.router_configmap_name(name)
    router_labels = labels(name, contract.COMPONENT_ROUTER)

    def make(api_version: str, kind: str, obj_name: str, body: Object) -> Object:
        return child(api_version, kind, obj_name, namespace, owner, router_labels, body)

    config_map = make(
        "v1", "ConfigMap", configmap, {"data": {contract.ROUTER_CONFIG_KEY: config.model_dump_json()}}
    )
    service_account = make("v1", "ServiceAccount", router, {})
    # The least the router needs: its config and keys, and the EndpointSlices of the deployments' Services.
    role = make(
        "rbac.authorization.k8s.io/v1",
        "Role",
        router,
        {
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [configmap],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [contract.keys_secret_name(name)],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
                *(
                    [
                        {
                            "apiGroups": [""],
                            "resources": ["configmaps"],
                            "resourceNames": [
                                contract.collector_status_configmap_name(d) for d in collectors
                            ],
                            "verbs": ["get", "patch"],
                        }
                    ]
                    if collectors
                    else []
                ),
            ]
        },
    )
    role_binding = make(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        router,
        {
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": router},
            "subjects": [{"kind": "ServiceAccount", "name": router, "namespace": namespace}],
        },
    )
    # With spec.tls the router's port speaks HTTPS (named so); its plain admin port serves only
    # /health, /metrics and /-/scaling, which the operator's scaler and Prometheus scrape by pod IP.
    port_name = "https" if spec.tls else "http"
    tls_args = (
        [
            contract.FLAG_ROUTER_TLS_CERT_FILE,
            f"{contract.ROUTER_TLS_MOUNT}/{contract.TLS_CERT_KEY}",
            contract.FLAG_ROUTER_TLS_KEY_FILE,
            f"{contract.ROUTER_TLS_MOUNT}/{contract.TLS_KEY_KEY}",
        ]
        if spec.tls
        else []
    )
    container = {
        "name": contract.COMPONENT_ROUTER,
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlendpoints-router"],
        "args": [
            *("--configmap", configmap, "--namespace", namespace, "--port", str(contract.ROUTER_PORT)),
            *(contract.FLAG_ROUTER_ADMIN_PORT, str(contract.ROUTER_ADMIN_PORT)),
            *tls_args,
        ],
        "ports": [
            {"name": port_name, "containerPort": contract.ROUTER_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": contract.ROUTER_ADMIN_PORT, "protocol": "TCP"},
        ],
        # /health is 503 until the keys are loaded (key auth): no request meets a router that would 401 it.
        # Probed on the scoring port, so a router whose certificate does not serve is not Ready
        # (kubelet does not verify HTTPS probes' certificates).
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": port_name, **({"scheme": "HTTPS"} if spec.tls else {})},
            "periodSeconds": 2,
        },
        "livenessProbe": {"tcpSocket": {"port": port_name}, "periodSeconds": 10, "failureThreshold": 6},
        "resources": with_default_resources(dump(spec.router.resources), settings.router_default_resources),
        "lifecycle": prestop(settings),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_volumes: list[Object] = []
    if collectors:
        pod_volumes = _collector_environment(container, collectors, settings)
    if spec.tls:
        # Kubelet refreshes a mounted Secret in place (symlink swap); the router reloads the files.
        pod_volumes.append({"name": TLS_VOLUME, "secret": {"secretName": spec.tls.secretName}})
        container["volumeMounts"] = [
            *container.get("volumeMounts", []),
            {"name": TLS_VOLUME, "mountPath": contract.ROUTER_TLS_MOUNT, "readOnly": True},
        ]
    deployment = make(
        "apps/v1",
        "Deployment",
        router,
        {
            "spec": {
                "replicas": spec.router.replicas,
                "selector": {"matchLabels": router_labels},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": router_labels},
                    "spec": {
                        "serviceAccountName": router,
                        "securityContext": pod_security_context(settings),
                        "containers": [container],
                        # Fixed, not from the deployments' timeouts: adding a deployment must not
                        # roll the routers. A router that has drained exits sooner anyway.
                        "terminationGracePeriodSeconds": grace_period(
                            settings, ROUTER_REQUEST_BUDGET_MS, ROUTER_FLUSH_S
                        ),
                        **(
                            {"imagePullSecrets": image_pull_secrets(settings)}
                            if settings.image_pull_secrets
                            else {}
                        ),
                        "nodeSelector": spec.router.nodeSelector,
                        "tolerations": [dump(t) for t in spec.router.tolerations],
                        **({"volumes": pod_volumes} if pod_volumes else {}),
                    },
                },
            }
        },
    )
    service = make(
        "v1",
        "Service",
        name,
        {
            "spec": {
                "type": spec.service.type,
                "selector": router_labels,
                "ports": [
                    {
                        "name": port_name,
                        "port": SERVICE_TLS_PORT if spec.tls else SERVICE_PORT,
                        "targetPort": port_name,
                        "protocol": "TCP",
                        **({"appProtocol": "https"} if spec.tls else {}),
                    }
                ],
            }
        },
    )
    if spec.service.annotations:
        service["metadata"]["annotations"].update(spec.service.annotations)
    pdb = make(
        versions.policy,
        "PodDisruptionBudget",
        router,
        {"spec": {"maxUnavailable": 1, "selector": {"matchLabels": router_labels}}},
    )
    # Labelled as the deployment's (component server): a change reconciles the OnlineDeployment,
    # which turns the router pods' reports into its DataCollectorReady condition. No `data` is
    # rendered, so the operator's apply never overwrites the routers' keys.
    status_maps = [
        child(
            "v1",
            "ConfigMap",
            contract.collector_status_configmap_name(dep),
            namespace,
            owner,
            labels(name, contract.COMPONENT_SERVER, dep),
            {},
        )
        for dep in collectors
    ]
    return [config_map, service_account, role, role_binding, deployment, service, pdb, *status_maps]


def _collector_environment(
    container: Object, collectors: Mapping[str, DataCollector], settings: RenderSettings
) -> list[Object]:
    """Fill the router container for collection; the pod's volumes."""
    creds = credentials(settings)
    container["env"] = [
        # The collector names its files after the pod.
        {"name": contract.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *creds.env,
    ]
    secrets = sorted({c.credentialsSecret for c in collectors.values() if c.credentialsSecret})
    env_from = [*creds.env_from, *({"secretRef": {"name": secret}} for secret in secrets)]
    if env_from:
        container["envFrom"] = env_from
    claims = sorted(
        {claim for c in collectors.values() if (claim := collector_destination(c.destination)[1])}
    )
    mounts = [
        *creds.mounts,
        *(
            {"name": f"collector-{i}", "mountPath": f"{COLLECTOR_MOUNT_ROOT}/{claim}"}
            for i, claim in enumerate(claims)
        ),
    ]
    if mounts:
        container["volumeMounts"] = mounts
    return [
        *creds.volumes,
        *(
            {"name": f"collector-{i}", "persistentVolumeClaim": {"claimName": claim}}
            for i, claim in enumerate(claims)
        ),
    ]
