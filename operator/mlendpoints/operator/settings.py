"""Operator settings, declared once, read from MLENDPOINTS_* environment variables at start-up."""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlendpoints.render.common import RenderSettings

# What users get by default; the local cluster's tests set mlendpoints/serving:dev.
PUBLIC_SERVING_IMAGE = "ghcr.io/mlendpoints/serving:0.1.0"
PUBLIC_SERVING_IMAGE_GPU = "ghcr.io/mlendpoints/serving:0.1.0-cuda"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLENDPOINTS_", extra="ignore")

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch (JSON list); empty: the whole cluster."
    )
    serving_image: str = Field(
        default=PUBLIC_SERVING_IMAGE, description="Image of model servers and routers."
    )
    serving_image_gpu: str = Field(default=PUBLIC_SERVING_IMAGE_GPU, description="Image for GPU deployments.")
    image_pull_policy: str = Field(default="IfNotPresent", description="Pull policy of rendered containers.")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server, for resolving models:/ URIs (operator and pods)."
    )
    mlflow_credentials_secret: str | None = Field(
        default=None, description="Secret of MLFLOW_* variables in each resource's namespace, given to pods."
    )
    s3_credentials_secret: str | None = Field(
        default=None, description="Secret of AWS_* variables in each resource's namespace, for s3:// URIs."
    )
    azure_credentials_secret: str | None = Field(
        default=None,
        description="Secret of AZURE_STORAGE_*/AZURE_CLIENT_* variables in each namespace (abfss:// URIs).",
    )
    gcs_credentials_secret: str | None = Field(
        default=None, description="Secret with a service-account key.json in each namespace, for gs:// URIs."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Secrets (JSON list) for pulling the serving image, on every pod rendered.",
    )
    network_policies: bool = Field(
        default=True,
        description="A NetworkPolicy per OnlineDeployment: its servers answer its endpoint's routers only.",
    )
    metrics_from: list[dict[str, Any]] = Field(
        default_factory=list,
        description="NetworkPolicy peers (JSON list) that may also reach model servers, to scrape /metrics.",
    )
    prestop_seconds: int = Field(
        default=5, ge=0, description="preStop sleep of model servers and routers: EndpointSlice propagation."
    )
    default_resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        description="Requests/limits (JSON) of model servers and batch instances where their spec sets none.",
    )
    router_default_resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        description="Requests/limits (JSON) of routers where the endpoint's spec sets none.",
    )
    router_auth_cluster_role: str = Field(
        default="mlendpoints-router-auth-delegator",
        description="authMode token: the ClusterRole (tokenreviews and subjectaccessreviews create) bound "
        "to each such endpoint's router ServiceAccount (the chart's <release>-router-auth-delegator).",
    )
    field_manager: str = Field(default="mlendpoints", description="Server-side apply field manager.")
    health_port: int = Field(default=8080, description="Port of /healthz.")
    metrics_port: int = Field(default=9090, description="Port of Prometheus /metrics; 0 turns it off.")
    webhook_service: str | None = Field(
        default=None,
        description="Service (in webhook_namespace) fronting the admission webhook; unset: no webhook.",
    )
    webhook_namespace: str = Field(default="mlendpoints-system", description="Namespace of the operator.")
    webhook_port: int = Field(default=9443, description="Port the webhook server listens on.")
    webhook_cert_dir: str | None = Field(
        default=None,
        description="tls.crt/tls.key to serve; unset: one self-signed into the Secret <service>-webhook-tls.",
    )
    peering_name: str = Field(default="mlendpoints", description="KopfPeering object for one active replica.")
    peering_priority: int = Field(
        default_factory=lambda: random.randint(1, 2**30),
        description="Distinct per replica, so exactly one replica is active.",
    )
    standalone: bool = Field(default=False, description="No peering (one replica, or tests).")
    resync_seconds: float = Field(
        default=600.0, gt=0, description="Level-based safety net: re-reconcile all."
    )
    scale_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the scaler reads the routers' load (type concurrency)."
    )
    api_concurrency: int = Field(default=16, ge=1, description="Concurrent requests to the API server.")
    log_level: str = Field(default="info", description="debug, info, warning or error.")

    def render_settings(self) -> RenderSettings:
        return RenderSettings(
            serving_image=self.serving_image,
            serving_image_gpu=self.serving_image_gpu,
            image_pull_policy=self.image_pull_policy,
            mlflow_tracking_uri=self.mlflow_tracking_uri,
            mlflow_credentials_secret=self.mlflow_credentials_secret,
            s3_credentials_secret=self.s3_credentials_secret,
            azure_credentials_secret=self.azure_credentials_secret,
            gcs_credentials_secret=self.gcs_credentials_secret,
            image_pull_secrets=tuple(self.image_pull_secrets),
            network_policies=self.network_policies,
            metrics_from=tuple(self.metrics_from),
            prestop_seconds=self.prestop_seconds,
            default_resources=self.default_resources,
            router_default_resources=self.router_default_resources,
        )
