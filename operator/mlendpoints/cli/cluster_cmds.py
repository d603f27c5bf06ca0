"""Commands against a cluster (kubeconfig, -n/--namespace): status, invoke, keys, logs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlendpoints.api.kinds import ONLINE_DEPLOYMENT, ONLINE_ENDPOINT
from mlendpoints.cli.app_state import Globals, cluster_options
from mlendpoints.client import KEY_FIELDS, Answer, Cluster, Route, score
from mlendpoints.errors import UserError
from mlendpoints_serving.contract import COMPONENT_ROUTER, COMPONENT_SERVER

console = Console()
CONTAINERS = {"fetch": "fetch-model", "server": COMPONENT_SERVER, "router": COMPONENT_ROUTER}


def cluster_of(ctx: click.Context) -> Cluster:
    opts: Globals = ctx.find_root().obj
    return Cluster(opts.kubeconfig, opts.context, opts.namespace)


def _conditions(obj: dict[str, Any]) -> Text:
    """Ready first; anything not True is shown with its reason and message, in red."""
    text = Text()
    for cond in obj.get("status", {}).get("conditions") or []:
        ok = cond.get("status") == "True"
        healthy = ok != (cond.get("type") == "Degraded")
        if text:
            text.append(" ")
        text.append(f"{cond['type']}={cond.get('status')}", style="green" if healthy else "red")
        if not healthy and (cond.get("reason") or cond.get("message")):
            text.append(f" ({cond.get('reason', '')}: {cond.get('message', '')})", style="red")
    return text or Text("-", style="dim")


@click.command()
@cluster_options
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show endpoints, their deployments, traffic, mirror, ready replicas, model versions and conditions.

    \b
    Example:
      mlendpoints status -n models
    """
    cluster = cluster_of(ctx)
    endpoints = cluster.list_resources(ONLINE_ENDPOINT)
    deployments = cluster.list_resources(ONLINE_DEPLOYMENT)
    table = Table(title=f"namespace {cluster.namespace}", title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("endpoint", "state", "deployment", "traffic", "mirror", "ready", "model", "conditions"):
        table.add_column(header, overflow="fold")
    for ep in endpoints:
        name = ep["metadata"]["name"]
        spec, ep_status = ep.get("spec", {}), ep.get("status", {})
        table.add_row(
            Text(name, style="bold"),
            ep_status.get("provisioningState") or "-",
            "", "", "", "", "",
            _conditions(ep),
        )  # fmt: skip
        for dep in sorted(
            (d for d in deployments if d.get("spec", {}).get("endpointName") == name),
            key=lambda d: str(d["metadata"]["name"]),
        ):
            dep_name = dep["metadata"]["name"]
            dep_status = dep.get("status", {})
            mirror = spec.get("mirrorTraffic", {})
            replicas = dep_status.get("replicas", 0)
            ready = dep_status.get("readyReplicas", 0)
            version = dep_status.get("resolvedModelVersion")
            model = dep_status.get("modelUri") or dep["spec"].get("model", "")
            table.add_row(
                "", "",
                dep_name,
                f"{spec.get('traffic', {}).get(dep_name, 0)}%",
                f"{mirror[dep_name]}%" if dep_name in mirror else "-",
                Text(f"{ready}/{replicas}", style="green" if replicas and ready == replicas else "yellow"),
                f"{model} (v{version})" if version else model,
                _conditions(dep),
            )  # fmt: skip
    if not endpoints:
        console.print(f"no online endpoints in namespace {cluster.namespace}")
        return
    console.print(table)


def _show_answer(answer: Answer) -> None:
    try:
        console.print_json(answer.body)
    except json.JSONDecodeError:
        console.print(answer.body, highlight=False)
    if answer.status >= 400:
        raise UserError(f"the endpoint answered {answer.status}", "the body above says why")
    console.print(f"served by: {answer.served_by or 'unknown'}", style="dim")


@click.command()
@cluster_options
@click.argument("endpoint")
@click.option(
    "--request-file", "-r", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON body, e.g. {"input_data": {"columns": [...], "data": [[...]]}}.',
)  # fmt: skip
@click.option("--deployment", "-d", help="Send to this deployment, whatever its traffic share.")
@click.option("--local", "local_", is_flag=True, help="Invoke the local endpoint of this name (`local up`).")
@click.option(
    "--ca-file", envvar="MLENDPOINTS_CA_FILE", type=click.Path(exists=True, dir_okay=False),
    help="CA bundle (PEM) to verify an HTTPS endpoint (spec.tls); default: the system's (or SSL_CERT_FILE).",
)  # fmt: skip
@click.option(
    "--token", envvar="MLENDPOINTS_TOKEN", show_envvar=True,
    help="authMode token: the Kubernetes bearer token to send (e.g. `kubectl create token SA`); "
    "default: the kubeconfig user's token, when it has one.",
)  # fmt: skip
@click.pass_context
def invoke(
    ctx: click.Context,
    endpoint: str,
    request_file: Path,
    deployment: str | None,
    local_: bool,
    ca_file: str | None,
    token: str | None,
) -> None:
    """Score a request through the endpoint's router, with its key (or a Kubernetes token with authMode
    token); print the answer and who served it.

    From outside the cluster it goes through a port-forward to a router pod (or straight to the
    Service when this machine can reach it).

    \b
    Example:
      mlendpoints invoke diabetes --request-file request.json
      mlendpoints invoke diabetes -r request.json --deployment green
      mlendpoints invoke diabetes -r request.json --local
    """
    body = request_file.read_bytes()
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        raise UserError(f"{request_file} is not JSON: {exc}", "the body must be a JSON document") from exc
    if local_:
        from mlendpoints.local.state import LocalSettings, Store

        state = Store(LocalSettings().home).load(endpoint)
        if state is None or not state.running():
            raise UserError(
                f"no running local endpoint {endpoint!r}", "start it with `mlendpoints local up -f ...`"
            )
        key = state.keys["primaryKey"] if state.auth_mode == "key" else None
        _show_answer(score(Route("127.0.0.1", state.port, "loopback"), key, body, deployment))
        return
    cluster = cluster_of(ctx)
    ep = cluster.endpoint(endpoint)
    mode = ep.get("spec", {}).get("authMode", "key")
    if mode == "key":
        key = cluster.keys(endpoint)[KEY_FIELDS["primary"]]
    elif mode == "token":
        key = token or cluster.bearer_token()
        if not key:
            raise UserError(
                f"endpoint {endpoint!r} takes a Kubernetes token (authMode token), and the kubeconfig "
                "user has none",
                'pass --token (e.g. --token "$(kubectl create token SA)" for a ServiceAccount that '
                "RBAC lets create onlineendpoints/score)",
            )
    else:
        key = None
    with cluster.route(endpoint, ca_file) as route:
        console.print(f"via {route.via}" + (" (HTTPS)" if route.tls else ""), style="dim")
        _show_answer(score(route, key, body, deployment))


@click.command(name="get-credentials")
@cluster_options
@click.argument("endpoint")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def get_credentials(ctx: click.Context, endpoint: str, output: str) -> None:
    """Print the endpoint's primary and secondary keys.

    \b
    Example:
      mlendpoints get-credentials diabetes -o json
    """
    keys = cluster_of(ctx).keys(endpoint)
    if output == "json":
        click.echo(json.dumps(keys))
        return
    for field, value in sorted(keys.items()):
        click.echo(f"{field}: {value}")


@click.command(name="regenerate-keys")
@cluster_options
@click.argument("endpoint")
@click.option(
    "--key-type", type=click.Choice(["primary", "secondary"]), required=True, help="The key to replace."
)
@click.pass_context
def regenerate_keys(ctx: click.Context, endpoint: str, key_type: str) -> None:
    """Replace one key of the endpoint; the other stays valid, so clients can switch without downtime.

    \b
    Example:
      mlendpoints regenerate-keys diabetes --key-type secondary
    """
    cluster_of(ctx).regenerate_key(endpoint, key_type)
    console.print(f"{key_type} key of {endpoint} regenerated; the router picks it up within seconds")
    console.print(f"see it with: mlendpoints get-credentials {endpoint}", style="dim")


@click.command()
@cluster_options
@click.argument("endpoint")
@click.option("--deployment", "-d", help="This deployment's pods (default: the router's).")
@click.option(
    "--container", "-c", type=click.Choice(sorted(CONTAINERS)),
    help="fetch (the model download), server or router (default: server with --deployment, else router).",
)  # fmt: skip
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=int, default=100, show_default=True, help="Lines of history per pod.")
@click.pass_context
def logs(
    ctx: click.Context, endpoint: str, deployment: str | None, container: str | None, follow: bool, tail: int
) -> None:
    """Print (or follow) the logs of an endpoint's pods, each line prefixed with its pod.

    \b
    Example:
      mlendpoints logs diabetes --deployment blue --container fetch
      mlendpoints logs diabetes -f
    """
    cluster = cluster_of(ctx)
    cluster.endpoint(endpoint)
    container = container or ("server" if deployment else "router")
    component = COMPONENT_ROUTER if container == "router" else COMPONENT_SERVER
    if component == COMPONENT_ROUTER and deployment:
        raise UserError("--container router shows the endpoint's router; it takes no --deployment", None)
    pods = cluster.pods(endpoint, deployment, component)
    if not pods:
        where = f"deployment {deployment}" if deployment else f"endpoint {endpoint}'s router"
        raise UserError(f"no {component} pods for {where}", "see `mlendpoints status` for what runs")
    lock = threading.Lock()
    failures: list[BaseException] = []

    def stream(pod: Any) -> None:
        try:
            resp: Any = cluster.core.read_namespaced_pod_log(
                pod.metadata.name, cluster.namespace, container=CONTAINERS[container],
                follow=follow, tail_lines=tail, _preload_content=False,
            )  # fmt: skip
            for raw in resp.stream():
                for line in raw.decode(errors="replace").splitlines():
                    with lock:
                        console.print(
                            Text.assemble((f"[{pod.metadata.name}] ", "cyan"), line), soft_wrap=True
                        )
        except Exception as exc:  # reported once all streams ended
            failures.append(exc)

    threads = [threading.Thread(target=stream, args=(p,), daemon=True) for p in pods]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        return
    if failures:
        raise failures[0]


COMMANDS: list[click.Command] = [status, invoke, get_credentials, regenerate_keys, logs]
