"""`mlendpoints local ...`: the same YAML as the cluster, as processes on this machine."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlendpoints.cli.logs import follow_files
from mlendpoints.errors import UserError
from mlendpoints.local import endpoint as local_endpoint
from mlendpoints.local import manifests
from mlendpoints.local.runner import alive, failure_reason
from mlendpoints.local.state import DeploymentState, EndpointState, LocalSettings, Store

console = Console()


def _store() -> Store:
    return Store(LocalSettings().home)


def _existing(store: Store, name: str) -> EndpointState:
    state = store.load(name)
    if state is None:
        known = ", ".join(s.endpoint for s in store.endpoints()) or "none"
        raise UserError(
            f"no local endpoint {name!r} (known: {known})", "start it with `mlendpoints local up -f ...`"
        )
    return state


def print_ready(state: EndpointState, request_hint: str) -> None:
    key = state.keys["primaryKey"] if state.auth_mode == "key" else None
    console.print(f"[bold green]endpoint {state.endpoint} is ready[/]")
    console.print(f"  scoring URI: {state.scoring_uri}")
    if key:
        console.print(f"  key:         {key}")
    auth = f" -H 'Authorization: Bearer {key}'" if key else ""
    console.print(
        f"  try:         curl -s {state.scoring_uri}{auth}"
        f" -H 'Content-Type: application/json' {request_hint}",
        soft_wrap=True,
        highlight=False,
    )


@click.group()
def local() -> None:
    """Run endpoints on this machine: no Docker, no cluster.

    \b
    Example:
      mlendpoints local up -f examples/diabetes-online/
    """


@local.command()
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="YAML file or directory (repeatable): one OnlineEndpoint and its OnlineDeployments "
    "(or their Azure ML CLI v2 YAML).",
)
@click.option(
    "--port", type=int, default=None, help="Loopback port of the scoring URI (default 8080, or the current)."
)
@click.option(
    "--detach", is_flag=True, help="Return once ready and leave it running (stop with `local down`)."
)
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for Ready.")
def up(files: tuple[Path, ...], port: int | None, detach: bool, timeout: float) -> None:
    """Start (or update) a local endpoint from the YAML you would `kubectl apply`.

    Runs the pods the operator would render as processes: the model fetch,
    one model server per instance, then the router. Running it again applies
    your edits: a traffic change is applied without a restart, a changed
    deployment is rolled over with no downtime. Ctrl-C stops everything.

    \b
    Example:
      mlendpoints local up -f examples/diabetes-online/ --port 8080
      mlendpoints local up -f endpoint.yaml -f blue.yaml --detach
    """
    store = _store()
    loaded = manifests.load(list(files))
    for finding in (finding for manifest in loaded for finding in manifest.findings):
        console.print(f"[yellow]warning:[/] {escape(finding.line())}", highlight=False, soft_wrap=True)
    name = manifests.select_endpoint(loaded).name
    previous = store.load(name)
    started_here = previous is None or not previous.running()
    _stop_on_signals()
    try:
        state = local_endpoint.up(list(files), store, port=port, timeout=timeout, console=console)
    except KeyboardInterrupt:
        # Ctrl-C while starting: stop what this run started, leave nothing behind.
        if started_here:
            console.print(f"\nstopping {name} ...")
            local_endpoint.down(store, name)
        raise
    print_ready(state, local_endpoint.request_hint(state, store))
    supervised_elsewhere = state.supervisor_pid is not None and alive(state.supervisor_pid)
    if detach or supervised_elsewhere:
        if not detach:
            console.print(
                f"(applied to the endpoint run by process {state.supervisor_pid}; it keeps running)"
            )
        else:
            console.print(f"running in the background; stop it with: mlendpoints local down {state.endpoint}")
        return
    _supervise(store, state.endpoint)


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT both raise KeyboardInterrupt, so one cleanup path handles them."""

    def stop_on(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)


def _supervise(store: Store, name: str) -> None:
    """Stay in the foreground until Ctrl-C (or SIGTERM), reporting containers that exit; then stop all."""
    local_endpoint.claim_supervisor(store, name)
    console.print("press Ctrl-C to stop")
    reported: set[int] = set()
    counts: dict[str, int] = {}
    try:
        while True:
            state = store.load(name)
            if state is None:  # `local down` from another shell
                console.print(f"endpoint {name} was stopped")
                return
            for dep_name, dep in state.deployments.items():
                count = len(dep.instances)
                if dep.scaling is not None and counts.get(dep_name, count) != count:
                    console.print(f"{dep_name}: {count} instance(s) ({dep.scale_reason})", highlight=False)
                counts[dep_name] = count
            for proc in state.processes():
                if proc.pid not in reported and not alive(proc.pid):
                    reported.add(proc.pid)
                    reason = failure_reason(proc.log, proc.termination_log)
                    console.print(
                        f"[red]{proc.pod}/{proc.container} exited:[/] {escape(reason)}",
                        highlight=False,
                    )
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print(f"\nstopping {name} ...")
        local_endpoint.down(store, name)
        console.print("stopped")


@local.command(name="ls")
def ls() -> None:
    """List local endpoints, their deployments and state.

    \b
    Example:
      mlendpoints local ls
    """
    table = Table(
        "endpoint",
        "state",
        "scoring URI",
        "deployment",
        "traffic",
        "ready",
        "desired",
        "model",
        box=box.SIMPLE,
    )
    for state in _store().endpoints():
        status = "running" if state.running() else "stopped"
        names = sorted(state.deployments) or ["-"]
        for i, name in enumerate(names):
            dep = state.deployments.get(name)
            share = state.traffic.get(name, 0)
            mirror = state.mirror_traffic.get(name)
            ready = sum(1 for pod in dep.instances if all(alive(p.pid) for p in pod)) if dep else 0
            table.add_row(
                state.endpoint if i == 0 else "",
                status if i == 0 else "",
                state.scoring_uri if i == 0 else "",
                name,
                f"mirror {mirror}%" if mirror else f"{share}%",
                f"{ready}/{len(dep.instances)}" if dep else "-",
                _desired(dep) if dep else "-",
                dep.model_uri if dep else "-",
            )
    if not table.row_count:
        console.print("no local endpoints; start one with `mlendpoints local up -f ...`")
        return
    console.print(table)


def _desired(dep: DeploymentState) -> str:
    """Instances wanted; scaled on load, with the scaler's last reason (e.g. `0 (scale-to-zero)`)."""
    if dep.desired is None:
        return "-"
    if dep.scaling is None:
        return str(dep.desired)
    return f"{dep.desired} ({dep.scale_reason or 'on load'})"


@local.command()
@click.argument("name")
@click.option(
    "--deployment",
    "-d",
    help="Only this deployment's pods, or `router` or `scaler` (default: every pod, router, scaler).",
)
@click.option("--container", "-c", help="Only this container (e.g. fetch, server, router).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=int, default=50, show_default=True, help="Lines of history per container.")
def logs(name: str, deployment: str | None, container: str | None, follow: bool, tail: int) -> None:
    """Show the logs of a local endpoint's processes.

    \b
    Example:
      mlendpoints local logs diabetes --deployment blue -f
    """
    store = _store()
    state = _existing(store, name)
    if (
        deployment is not None
        and deployment not in state.deployments
        and deployment not in ("router", "scaler")
    ):
        raise UserError(
            f"endpoint {name} has no deployment {deployment!r}",
            f"deployments: {', '.join(sorted(state.deployments))}",
        )
    files = local_endpoint.log_files(store, state, deployment=deployment, container=container)
    if not files:
        raise UserError(f"no logs match in {store.endpoint_dir(name)}", "drop --container or --deployment")
    follow_files(files, tail=tail, follow=follow, console=console)


@local.command()
@click.argument("name")
def down(name: str) -> None:
    """Stop a local endpoint and remove its state (the model cache stays).

    \b
    Example:
      mlendpoints local down diabetes
    """
    store = _store()
    _existing(store, name)
    local_endpoint.down(store, name)
    console.print(f"stopped {name}")
