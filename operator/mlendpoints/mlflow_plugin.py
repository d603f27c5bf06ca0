"""MLflow deployments plugin: `mlflow deployments ... -t mlendpoints[:/<namespace>]`.

MLflow's deployment is an `OnlineDeployment`, its endpoint an `OnlineEndpoint`.
Settings come as `-C key=value`:

    endpoint=NAME                     the OnlineEndpoint (created, key auth, when missing)
    instance_count=N                  spec.instanceCount
    traffic=P                         this deployment's live share; the others are scaled to 100-P
    request_timeout_ms=, max_concurrent_requests_per_instance=, workers=, max_batch_size=,
    max_batch_time_ms=, batching=true|false (unset: the server batches row-independent models),
    env_manager=local|virtualenv, image=
    wait=true|false (true), timeout=SECONDS (600)

and for endpoints: traffic='{"blue": 80, "green": 20}', mirror_traffic='{"shadow": 10}', auth_mode=key|none.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException

from mlendpoints.api.kinds import ONLINE_DEPLOYMENT, ONLINE_ENDPOINT
from mlendpoints.client import KEY_FIELDS, Answer, Cluster, score
from mlendpoints.errors import UserError, explain

TARGET = "mlendpoints"
FLAVOR = "python_function"
DEFAULT_WAIT_TIMEOUT_S = 600.0

_INT_SETTINGS = {"instance_count": ("instanceCount",), "workers": ("workers",)}
_REQUEST_SETTINGS = {
    "request_timeout_ms": "requestTimeoutMs",
    "max_concurrent_requests_per_instance": "maxConcurrentRequestsPerInstance",
}
_BATCHING = {"max_batch_size": "maxBatchSize", "max_batch_time_ms": "maxBatchTimeMs"}
_KNOWN = {
    "endpoint",
    "traffic",
    "wait",
    "timeout",
    "env_manager",
    "image",
    "batching",
    *_INT_SETTINGS,
    *_REQUEST_SETTINGS,
    *_BATCHING,
}


def target_help() -> str:
    return __doc__ or ""


def _namespace(target_uri: str) -> str | None:
    if target_uri == TARGET:
        return None
    prefix = f"{TARGET}:/"
    if target_uri.startswith(prefix) and target_uri[len(prefix) :].strip("/"):
        return target_uri[len(prefix) :].strip("/")
    raise MlflowException(f"target {target_uri!r}: expected {TARGET!r} or '{TARGET}:/<namespace>'")


def _int(config: dict[str, Any], key: str) -> int:
    try:
        return int(config[key])
    except (TypeError, ValueError) as exc:
        raise MlflowException(f"-C {key}={config[key]!r}: expected an integer") from exc


def _json_map(config: dict[str, Any], key: str) -> dict[str, int]:
    value = config[key]
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
        return {str(k): int(v) for k, v in dict(parsed).items()}
    except (TypeError, ValueError) as exc:
        raise MlflowException(f'-C {key}={value!r}: expected JSON like {{"blue": 80, "green": 20}}') from exc


def _deployment_spec(config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - _KNOWN)
    if unknown:
        raise MlflowException(
            f"unknown -C settings: {', '.join(unknown)}; see `mlflow deployments help -t {TARGET}`"
        )
    spec: dict[str, Any] = {}
    for key, (field,) in _INT_SETTINGS.items():
        if key in config:
            spec[field] = _int(config, key)
    request = {field: _int(config, key) for key, field in _REQUEST_SETTINGS.items() if key in config}
    if request:
        spec["requestSettings"] = request
    batching: dict[str, Any] = {field: _int(config, key) for key, field in _BATCHING.items() if key in config}
    if "batching" in config:
        value = str(config["batching"]).lower()
        if value not in ("true", "false"):
            raise MlflowException(f"-C batching={config['batching']!r}: expected true or false")
        batching["enabled"] = value == "true"
    if batching:
        spec["batching"] = batching
    if "env_manager" in config:
        spec["envManager"] = config["env_manager"]
    if "image" in config:
        spec["image"] = config["image"]
    return spec


def rebalance(traffic: dict[str, int], name: str, share: int) -> dict[str, int]:
    """`name` gets `share`%; the other deployments keep their proportions in the remaining 100-share%."""
    if not 0 <= share <= 100:
        raise MlflowException(f"-C traffic={share}: expected 0-100")
    others = {k: v for k, v in traffic.items() if k != name and v > 0}
    rest = 100 - share
    if not others:
        if rest:
            raise MlflowException(
                f"-C traffic={share}: no other deployment with traffic takes the other {rest}%"
            )
        return {name: share}
    total = sum(others.values())
    scaled = {k: rest * v // total for k, v in others.items()}
    # Hand the rounding remainder to the largest share so the sum is exactly 100.
    largest = max(scaled, key=lambda k: others[k])
    scaled[largest] += rest - sum(scaled.values())
    return {**scaled, **({name: share} if share else {})}


class MlendpointsDeploymentClient(BaseDeploymentClient):
    """OnlineDeployments and OnlineEndpoints of one namespace, through the Kubernetes API."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self._namespace = _namespace(target_uri)
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            try:
                self._cluster = Cluster(None, None, self._namespace)
            except UserError as exc:
                raise MlflowException(f"{exc.message} ({exc.hint})") from exc
        return self._cluster

    # --- deployments -------------------------------------------------------------
    def create_deployment(
        self, name: str, model_uri: str, flavor: str | None = None, config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        config = dict(config or {})
        _check_flavor(flavor)
        endpoint = endpoint or config.get("endpoint")
        if not endpoint:
            raise MlflowException("which endpoint? pass --endpoint NAME or -C endpoint=NAME")
        if endpoint not in {e["metadata"]["name"] for e in self.cluster.list_resources(ONLINE_ENDPOINT)}:
            self.cluster.create(ONLINE_ENDPOINT, endpoint, {"authMode": "key"})
        spec = {"endpointName": endpoint, "model": model_uri, **_deployment_spec(config)}
        created = self._call(lambda: self.cluster.create(ONLINE_DEPLOYMENT, name, spec))
        self._wait(name, created, config)
        if "traffic" in config:
            self._set_traffic(endpoint, name, _int(config, "traffic"))
        return {"name": name, "flavor": FLAVOR, "endpoint": endpoint, "model_uri": model_uri}

    def update_deployment(
        self, name: str, model_uri: str | None = None, flavor: str | None = None,
        config: dict[str, Any] | None = None, endpoint: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        config = dict(config or {})
        _check_flavor(flavor)
        current = self._call(lambda: self.cluster.get(ONLINE_DEPLOYMENT, name))
        spec = _deployment_spec(config)
        if model_uri:
            spec["model"] = model_uri
        updated = (
            self._call(lambda: self.cluster.patch_spec(ONLINE_DEPLOYMENT, name, spec)) if spec else current
        )
        if spec:
            self._wait(name, updated, config)
        if "traffic" in config:
            self._set_traffic(current["spec"]["endpointName"], name, _int(config, "traffic"))
        return {"name": name, "flavor": FLAVOR, "endpoint": current["spec"]["endpointName"]}

    def delete_deployment(
        self, name: str, config: dict[str, Any] | None = None, endpoint: str | None = None
    ) -> None:
        """Takes the deployment out of the endpoint's traffic and mirror first (the webhook requires it)."""
        current = self._call(lambda: self.cluster.get(ONLINE_DEPLOYMENT, name))
        endpoint_name = current["spec"]["endpointName"]
        try:
            ep = self.cluster.endpoint(endpoint_name)
        except UserError:
            ep = None
        if ep is not None:
            spec = ep.get("spec", {})
            traffic = dict(spec.get("traffic") or {})
            patch: dict[str, Any] = {}
            if traffic.get(name, 0) > 0:
                others = {k: v for k, v in traffic.items() if k != name and v > 0}
                new = rebalance(traffic, name, 0) if others else {}
                patch["traffic"] = {**{k: None for k in traffic if k not in new}, **new}
            elif name in traffic:
                patch["traffic"] = {name: None}
            if name in (spec.get("mirrorTraffic") or {}):
                patch["mirrorTraffic"] = {name: None}
            if patch:
                self._call(lambda: self.cluster.patch_spec(ONLINE_ENDPOINT, endpoint_name, patch))
        self._call(lambda: self.cluster.delete(ONLINE_DEPLOYMENT, name))

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        items = self._call(lambda: self.cluster.list_resources(ONLINE_DEPLOYMENT))
        return [_describe_deployment(d) for d in items if endpoint in (None, d["spec"].get("endpointName"))]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        return _describe_deployment(self._call(lambda: self.cluster.get(ONLINE_DEPLOYMENT, name)))

    def predict(
        self, deployment_name: str | None = None, inputs: Any = None, endpoint: str | None = None
    ) -> PredictionsResponse:
        """Scores through the endpoint's router; a deployment name pins the request to that deployment."""
        if endpoint is None:
            if deployment_name is None:
                raise MlflowException("predict needs a deployment name or an endpoint")
            endpoint = self.get_deployment(deployment_name)["endpoint"]
        body = json.dumps({"input_data": _input_data(inputs)}).encode()
        cluster = self.cluster
        ep = self._call(lambda: cluster.endpoint(endpoint))
        mode = ep.get("spec", {}).get("authMode", "key")
        key = None
        if mode == "key":
            key = self._call(lambda: cluster.keys(endpoint))[KEY_FIELDS["primary"]]
        elif mode == "token":  # MLENDPOINTS_TOKEN, else the kubeconfig user's token (as `invoke`)
            key = os.environ.get("MLENDPOINTS_TOKEN") or cluster.bearer_token()

        def send() -> Answer:
            with cluster.route(endpoint) as route:
                return score(route, key, body, deployment_name)

        answer: Answer = self._call(send)
        if answer.status >= 400:
            raise MlflowException(f"endpoint {endpoint} answered {answer.status}: {answer.body}")
        return PredictionsResponse({"predictions": json.loads(answer.body), "served_by": answer.served_by})

    # --- endpoints ---------------------------------------------------------------
    def create_endpoint(self, name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        created = self._call(lambda: self.cluster.create(ONLINE_ENDPOINT, name, _endpoint_spec(config or {})))
        return _describe_endpoint(created)

    def update_endpoint(self, endpoint: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = _endpoint_spec(config or {})
        current = self._call(lambda: self.cluster.endpoint(endpoint))
        # Replace the maps whole: a merge patch would keep deployments the user left out.
        for field in ("traffic", "mirrorTraffic"):
            if field in spec:
                old = current.get("spec", {}).get(field) or {}
                spec[field] = {**{k: None for k in old if k not in spec[field]}, **spec[field]}
        return _describe_endpoint(
            self._call(lambda: self.cluster.patch_spec(ONLINE_ENDPOINT, endpoint, spec))
        )

    def delete_endpoint(self, endpoint: str) -> None:
        self._call(lambda: self.cluster.delete(ONLINE_ENDPOINT, endpoint))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [
            _describe_endpoint(e) for e in self._call(lambda: self.cluster.list_resources(ONLINE_ENDPOINT))
        ]

    def get_endpoint(self, endpoint: str) -> dict[str, Any]:
        return _describe_endpoint(self._call(lambda: self.cluster.endpoint(endpoint)))

    # --- helpers -----------------------------------------------------------------
    def _call(self, fn: Any) -> Any:
        """Kubernetes and user errors as MlflowException, which MLflow's CLI prints as one line."""
        try:
            return fn()
        except MlflowException:
            raise
        except Exception as exc:
            message, hint = explain(exc)
            raise MlflowException(f"{message}" + (f" ({hint})" if hint else "")) from exc

    def _set_traffic(self, endpoint: str, name: str, share: int) -> None:
        current = self._call(lambda: self.cluster.endpoint(endpoint)).get("spec", {}).get("traffic") or {}
        new = rebalance(dict(current), name, share)
        patch = {**{k: None for k in current if k not in new}, **new}
        self._call(lambda: self.cluster.patch_spec(ONLINE_ENDPOINT, endpoint, {"traffic": patch}))

    def _wait(self, name: str, obj: dict[str, Any], config: dict[str, Any]) -> None:
        """Until Ready at the new generation, with progress on stderr; a failure raises with its reason."""
        if str(config.get("wait", "true")).lower() in ("false", "0", "no"):
            return
        from rich.console import Console

        timeout = float(config.get("timeout", DEFAULT_WAIT_TIMEOUT_S))
        generation = obj.get("metadata", {}).get("generation", 0)
        deadline = time.monotonic() + timeout
        with Console(stderr=True).status(f"{name}: waiting for Ready") as status:
            while True:
                current = self._call(lambda: self.cluster.get(ONLINE_DEPLOYMENT, name))
                st = current.get("status", {})
                conditions = {c["type"]: c for c in st.get("conditions") or []}
                ready = conditions.get("Ready", {})
                observed = st.get("observedGeneration") or 0
                status.update(
                    f"{name}: {st.get('readyReplicas', 0)}/{st.get('replicas', 0)} ready"
                    f" ({ready.get('reason') or 'pending'}: {ready.get('message') or '...'})"
                )
                if observed >= generation and ready.get("status") == "True":
                    return
                degraded = conditions.get("Degraded", {})
                if observed >= generation and degraded.get("status") == "True":
                    raise MlflowException(
                        f"deployment {name} failed: {degraded.get('message') or degraded.get('reason')}"
                    )
                if time.monotonic() > deadline:
                    raise MlflowException(
                        f"deployment {name} not Ready after {timeout:.0f}s: "
                        f"{ready.get('message') or 'no status'}"
                    )
                time.sleep(1.0)


def _check_flavor(flavor: str | None) -> None:
    if flavor not in (None, FLAVOR):
        raise MlflowException(f"flavor {flavor!r} is not supported; mlendpoints serves {FLAVOR!r} models")


def _endpoint_spec(config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - {"traffic", "mirror_traffic", "auth_mode", "description"})
    if unknown:
        raise MlflowException(f"unknown endpoint -C settings: {', '.join(unknown)}")
    spec: dict[str, Any] = {}
    if "traffic" in config:
        spec["traffic"] = _json_map(config, "traffic")
    if "mirror_traffic" in config:
        spec["mirrorTraffic"] = _json_map(config, "mirror_traffic")
    if "auth_mode" in config:
        spec["authMode"] = config["auth_mode"]
    if "description" in config:
        spec["description"] = config["description"]
    return spec


def _input_data(inputs: Any) -> Any:
    """A DataFrame goes as split orient (the Azure ML /score contract); dicts and lists as given."""
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        split = json.loads(inputs.to_json(orient="split", index=False))
        return {"columns": split["columns"], "data": split["data"]}
    if isinstance(inputs, dict) and "input_data" in inputs:
        return inputs["input_data"]
    return inputs


def _describe_deployment(obj: dict[str, Any]) -> dict[str, Any]:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    return {
        "name": obj["metadata"]["name"],
        "flavor": FLAVOR,
        "endpoint": spec.get("endpointName"),
        "model_uri": spec.get("model"),
        "resolved_model_version": status.get("resolvedModelVersion"),
        "instance_count": spec.get("instanceCount", 1),
        "ready_replicas": status.get("readyReplicas", 0),
        "conditions": status.get("conditions", []),
    }


def _describe_endpoint(obj: dict[str, Any]) -> dict[str, Any]:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    return {
        "name": obj["metadata"]["name"],
        "auth_mode": spec.get("authMode", "key"),
        "traffic": spec.get("traffic", {}),
        "mirror_traffic": spec.get("mirrorTraffic", {}),
        "scoring_uri": status.get("scoringUri"),
        "provisioning_state": status.get("provisioningState"),
        "conditions": status.get("conditions", []),
    }


def run_local(
    name: str, model_uri: str, flavor: str | None = None, config: dict[str, Any] | None = None
) -> None:
    """`mlflow deployments run-local -t mlendpoints`: a one-deployment endpoint, `mlendpoints local up`."""
    from mlendpoints.cli import main

    _check_flavor(flavor)
    config = dict(config or {})
    port = str(config.pop("port", "8080"))
    spec = {"endpointName": name, "model": model_uri, **_deployment_spec(config)}
    manifests = [
        {"apiVersion": "mlendpoints.io/v1alpha1", "kind": "OnlineEndpoint", "metadata": {"name": name},
         "spec": {"traffic": {name: 100}}},
        {"apiVersion": "mlendpoints.io/v1alpha1", "kind": "OnlineDeployment", "metadata": {"name": name},
         "spec": spec},
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mlendpoints-run-local-") as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text("\n---\n".join(json.dumps(m) for m in manifests))  # JSON documents are YAML
        code = main(["local", "up", "-f", str(path), "--port", port])
    if code != 0:
        raise MlflowException(f"mlendpoints local up exited with {code}")
