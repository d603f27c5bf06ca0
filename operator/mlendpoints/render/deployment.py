"""OnlineDeployment -> Deployment (fetch init container + model server), Service, PDB, HPA."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from mlendpoints.api.online import BatchingSettings, OnlineDeployment, OnlineDeploymentSpec, ProbeSettings
from mlendpoints.render import gpu
from mlendpoints.render.common import (
    CODE_DIR,
    CONTAINER_SECURITY_CONTEXT,
    MODEL_URI_ANNOTATION,
    MODEL_VERSION_ANNOTATION,
    TMP_DIR,
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
    server_name,
    with_default_resources,
)
from mlendpoints.render.discovery import ApiVersions
from mlendpoints_serving import contract

# A slow model load (large artifacts, a virtualenv build) gets up to 10 minutes before liveness applies.
STARTUP_PERIOD_S = 5
STARTUP_FAILURES = 120
STARTUP_BUDGET_S = STARTUP_PERIOD_S * STARTUP_FAILURES


@dataclass(frozen=True)
class ResolvedModel:
    """The URI the pods fetch (registry aliases and /latest pinned to a version) and that version."""

    uri: str
    version: str | None = None


def uses_gpu(spec: OnlineDeploymentSpec) -> bool:
    return gpu.gpu_count(spec.resources) > 0


def image_for(spec: OnlineDeploymentSpec, settings: RenderSettings) -> str:
    if spec.image:
        return spec.image
    return settings.serving_image_gpu if uses_gpu(spec) else settings.serving_image


def _probe(path: str, probe: ProbeSettings) -> Object:
    return {
        "httpGet": {"path": path, "port": "http"},
        "initialDelaySeconds": probe.initialDelay,
        "periodSeconds": probe.period,
        "timeoutSeconds": probe.timeout,
        "successThreshold": probe.successThreshold,
        "failureThreshold": probe.failureThreshold,
    }


def model_dir(spec: OnlineDeploymentSpec) -> str:
    """Where the model's files are: the mount, or with codeConfiguration.modelFolder a folder of that
    name in it, so that a scoring script finds them at AZUREML_MODEL_DIR/<folder>, as under Azure ML."""
    code = spec.codeConfiguration
    if code is None or code.modelFolder is None:
        return spec.modelMountPath
    return posixpath.join(spec.modelMountPath, code.modelFolder)


def server_args(spec: OnlineDeploymentSpec) -> list[str]:
    gpus = gpu.gpu_count(spec.resources)
    args = [
        "--model-dir", model_dir(spec),
        "--port", str(contract.SERVER_PORT),
        "--request-timeout-ms", str(spec.requestSettings.requestTimeoutMs),
        "--env-manager", spec.envManager,
    ]  # fmt: skip
    if spec.workers is not None:
        args += ["--workers", str(spec.workers)]
    elif gpus:
        args += ["--workers", str(gpus)]  # one per GPU (worker i loads on GPU i)
    # No batching section: the server's default (--batching auto: row-independent models batch).
    batching = spec.batching
    if batching is None and gpus and spec.codeConfiguration is None:
        batching = BatchingSettings(maxBatchSize=gpu.GPU_DEFAULT_MAX_BATCH_SIZE)
    if batching is not None and not batching.enabled:
        args += ["--batching", "off"]
    elif batching is not None:
        args += ["--batching", "on"]
        args += ["--max-batch-size", str(batching.maxBatchSize)]
        args += ["--max-batch-time-ms", str(batching.maxBatchTimeMs)]
    if spec.codeConfiguration is not None:
        args += ["--scoring-script", f"{CODE_DIR}/{spec.codeConfiguration.scoringScript}"]
        if model_dir(spec) != spec.modelMountPath:  # Azure's layout: the model in a folder of the mount
            args += [contract.FLAG_AZUREML_MODEL_DIR, spec.modelMountPath]
    return args


def render_deployment(
    deployment: OnlineDeployment, model: ResolvedModel, versions: ApiVersions, settings: RenderSettings
) -> list[Object]:
    """Every child of the OnlineDeployment, in apply order."""
    name, namespace = deployment.metadata["name"], deployment.metadata["namespace"]
    spec = deployment.spec
    owner = owner_reference("OnlineDeployment", name, deployment.metadata["uid"])
    server_labels = labels(spec.endpointName, contract.COMPONENT_SERVER, name)
    obj_name = server_name(name)
    image = image_for(spec, settings)
    gpus = gpu.gpu_count(spec.resources)
    resources = with_default_resources(gpu.container_resources(spec.resources), settings.default_resources)
    creds = credentials(settings)
    mlflow_env, env_from = creds.env, creds.env_from
    # The root filesystem is read-only: HOME and temp files go to an emptyDir.
    writable_env = [{"name": "HOME", "value": TMP_DIR}, {"name": "TMPDIR", "value": TMP_DIR}]

    def make(api_version: str, kind: str, body: Object) -> Object:
        return child(api_version, kind, obj_name, namespace, owner, server_labels, body)

    mounts = [
        {"name": "model", "mountPath": spec.modelMountPath},
        {"name": "tmp", "mountPath": TMP_DIR},
        *creds.mounts,
    ]
    volumes: list[Object] = [
        {"name": "model", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        *creds.volumes,
    ]
    if spec.codeConfiguration is not None:
        volumes.append({"name": "code", "configMap": {"name": spec.codeConfiguration.configMap}})
    fetch = {
        "name": "fetch-model",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlendpoints-fetch"],
        "args": ["--model-uri", model.uri, "--dest", model_dir(spec)],
        "env": writable_env + mlflow_env,
        "envFrom": env_from,
        "resources": gpu.without_gpu(resources),  # the fetch needs no GPU
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    user_env = [dump(e) for e in spec.env]
    server_env = [
        {"name": contract.ENV_MODEL_DIR, "value": model_dir(spec)},
        {"name": contract.ENV_AZUREML_MODEL_DIR, "value": spec.modelMountPath},
        *writable_env,
        *mlflow_env,
        *gpu.gpu_env(user_env, gpus),
        *user_env,
    ]
    # Held requests wait for a pod scaled on load: see it ready within a second of its model loading.
    on_demand = spec.scaleSettings.type == "concurrency"
    startup_period = 1 if on_demand else STARTUP_PERIOD_S
    server = {
        "name": contract.COMPONENT_SERVER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlendpoints-serve"],
        "args": server_args(spec),
        "env": server_env,
        "envFrom": env_from,
        "ports": [{"name": "http", "containerPort": contract.SERVER_PORT, "protocol": "TCP"}],
        "resources": resources,
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": startup_period,
            "timeoutSeconds": readiness_probe(spec).timeout,
            "failureThreshold": STARTUP_BUDGET_S // startup_period,
        },
        "readinessProbe": _probe("/health", readiness_probe(spec)),
        "livenessProbe": _probe("/", spec.livenessProbe),
        "lifecycle": prestop(settings),
        "volumeMounts": mounts
        + ([{"name": "code", "mountPath": CODE_DIR, "readOnly": True}] if spec.codeConfiguration else []),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if on_demand:
        # A pod that held requests wait for: the server fetches the model itself, saving a container
        # start and a Python start (seconds here); the failure line is the same as the fetch's.
        server["args"] = [*server["args"], "--fetch-model-uri", model.uri]
    pod_spec: Object = {
        "securityContext": pod_security_context(settings),
        "containers": [server],
        "volumes": volumes,
        "terminationGracePeriodSeconds": grace_period(settings, spec.requestSettings.requestTimeoutMs),
        "nodeSelector": spec.nodeSelector,
        "tolerations": gpu.tolerations(spec.tolerations, gpus),
    }
    if not on_demand:
        pod_spec["initContainers"] = [fetch]
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = image_pull_secrets(settings)
    if spec.affinity is not None:
        pod_spec["affinity"] = dump(spec.affinity)
    if spec.serviceAccountName:
        pod_spec["serviceAccountName"] = spec.serviceAccountName
    else:
        pod_spec["automountServiceAccountToken"] = False  # the server never talks to the API

    hpa = spec.scaleSettings.type == "targetUtilization"
    autoscaled = spec.scaleSettings.type != "default"
    template_annotations = {MODEL_URI_ANNOTATION: model.uri}
    if model.version is not None:
        template_annotations[MODEL_VERSION_ANNOTATION] = model.version
    deployment_spec: Object = {
        "selector": {"matchLabels": server_labels},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "template": {
            "metadata": {"labels": server_labels, "annotations": template_annotations},
            "spec": pod_spec,
        },
    }
    if not autoscaled:  # else the HPA, or the operator's scaler, owns the replica count
        deployment_spec["replicas"] = spec.instanceCount
    children = [
        make("apps/v1", "Deployment", {"spec": deployment_spec}),
        make(
            "v1",
            "Service",
            {
                "spec": {
                    "type": "ClusterIP",
                    "selector": server_labels,
                    "ports": [
                        {
                            "name": "http",
                            "port": contract.SERVER_PORT,
                            "targetPort": "http",
                            "protocol": "TCP",
                        }
                    ],
                }
            },
        ),
    ]
    if settings.network_policies:
        children.append(
            make("networking.k8s.io/v1", "NetworkPolicy", {"spec": network_policy_spec(name, spec, settings)})
        )
    min_replicas = spec.scaleSettings.minInstances if autoscaled else spec.instanceCount
    if min_replicas >= 2:
        children.append(
            make(
                versions.policy,
                "PodDisruptionBudget",
                {"spec": {"maxUnavailable": 1, "selector": {"matchLabels": server_labels}}},
            )
        )
    if hpa:
        children.append(
            make(versions.autoscaling, "HorizontalPodAutoscaler", {"spec": _hpa_spec(obj_name, spec)})
        )
    return children


# Scaled on load, a pod is awaited by held requests: probe readiness every second from the start
# (Azure's defaults, 10 s then every 10 s, would make every start from zero take 10 s or more).
FAST_READINESS = ProbeSettings(initialDelay=0, period=1, timeout=1, successThreshold=1, failureThreshold=3)


def readiness_probe(spec: OnlineDeploymentSpec) -> ProbeSettings:
    """The readiness probe as set; unset, FAST_READINESS for a deployment scaled on load, else Azure's
    defaults. (Unset means absent: the CRD gives it no default, so the API server cannot fill it in.)"""
    if spec.readinessProbe is not None:
        return spec.readinessProbe
    return FAST_READINESS if spec.scaleSettings.type == "concurrency" else ProbeSettings()


def network_policy_spec(name: str, spec: OnlineDeploymentSpec, settings: RenderSettings) -> Object:
    """Model servers answer their endpoint's routers only (the router does auth, split and mirror:
    a pod that calls a server directly skips all three), and metrics scrapers named in settings."""
    server_port = [{"port": contract.SERVER_PORT, "protocol": "TCP"}]
    routers = {"podSelector": {"matchLabels": labels(spec.endpointName, contract.COMPONENT_ROUTER)}}
    ingress: list[Object] = [{"from": [routers], "ports": server_port}]
    if settings.metrics_from:
        ingress.append({"from": list(settings.metrics_from), "ports": server_port})
    return {
        "podSelector": {"matchLabels": labels(spec.endpointName, contract.COMPONENT_SERVER, name)},
        "policyTypes": ["Ingress"],
        "ingress": ingress,
    }


def _hpa_spec(target: str, spec: OnlineDeploymentSpec) -> Object:
    scale = spec.scaleSettings
    # autoscaling/v2 and v2beta2 share this shape. Up at once (window 0); down only to the highest
    # recommendation of the last stableWindowSeconds (the HPA's own default, 300 s, unless set).
    policies = [{"type": "Percent", "value": 100, "periodSeconds": scale.pollingInterval}]
    up = {"stabilizationWindowSeconds": 0, "policies": policies}
    down = {"stabilizationWindowSeconds": scale.stable_window_seconds(), "policies": policies}
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "minReplicas": scale.minInstances,
        "maxReplicas": scale.maxInstances,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": scale.targetUtilizationPercentage,
                    },
                },
            }
        ],
        "behavior": {"scaleUp": up, "scaleDown": down},
    }
