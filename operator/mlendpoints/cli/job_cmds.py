"""`mlendpoints job run`: a command with MLflow model inputs, as a Kubernetes Job (Azure's command jobs).

    mlendpoints job run --image IMG --input model=models:/diabetes@champion -- \\
        python evaluate.py --model '${{inputs.model}}'

creates a Job (render/command_job.py) whose pod the operator's model-inputs webhook fills in,
shows a progress line while the pod waits and fetches its inputs, streams the command's logs,
and exits with the command's exit status. Why it did not run is one line: the webhook's
refusal (the Job's FailedCreate event), a fetch that failed (its termination message), or a pod
that cannot start (its waiting reason).
"""

from __future__ import annotations

import time
from typing import Any

import click
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from rich.markup import escape

from mlendpoints.cli.app_state import cluster_options
from mlendpoints.cli.cluster_cmds import cluster_of
from mlendpoints.client import Cluster
from mlendpoints.errors import UserError
from mlendpoints.render.command_job import MAIN_CONTAINER, CommandJobError, render_command_job
from mlendpoints.render.model_inputs import FETCH_PREFIX

console = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)
POLL_S = 1.0
# Reasons a waiting container will not get past by itself.
STUCK = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError", "RunContainerError")  # fmt: skip


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise UserError(
                f"{option} {value!r}: expected NAME=VALUE", f"e.g. {option} model=models:/diabetes@champion"
            )
        out[key] = rest
    return out


class JobFailed(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Follower:
    """Follows one Job's pod: the progress line, then the main container's logs, then its result."""

    def __init__(self, cluster: Cluster, name: str, timeout: float) -> None:
        self.cluster, self.name, self.timeout = cluster, name, timeout
        self.ns = cluster.namespace
        # The client's typed models add nothing here: the pod is read as the API returns it.
        self.core: Any = cluster.core

    def _pod(self) -> Any | None:
        pods = self.core.list_namespaced_pod(self.ns, label_selector=f"job-name={self.name}").items
        return max(pods, key=lambda p: p.metadata.creation_timestamp) if pods else None

    def _refusal(self) -> str | None:
        """The Job controller's FailedCreate event: e.g. the webhook refused the pod."""
        events = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.kind=Job,involvedObject.name={self.name}"
        ).items
        failed = [e for e in events if e.reason == "FailedCreate"]
        return str(failed[-1].message) if failed else None

    def wait_for_main(self, status: Any) -> Any:
        """Wait until the main container runs or ended; raise JobFailed if the pod cannot get there."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pod = self._pod()
            if pod is None:
                refused = self._refusal()
                if refused:
                    raise JobFailed(f"the pod was not created: {refused}")
                status.update(f"job {self.name}: waiting for its pod")
            else:
                line, done = self._pod_state(pod)
                status.update(f"job {self.name}: {line}")
                if done:
                    return pod
            time.sleep(POLL_S)
        raise JobFailed(f"the pod did not start within {self.timeout:.0f}s")

    def _pod_state(self, pod: Any) -> tuple[str, bool]:
        st = pod.status
        for cs in st.init_container_statuses or []:
            name = cs.name.removeprefix(FETCH_PREFIX) if cs.name.startswith(FETCH_PREFIX) else cs.name
            what = f"model input {name}" if cs.name.startswith(FETCH_PREFIX) else f"init container {name}"
            term = cs.state.terminated if cs.state else None
            if term is not None and term.exit_code != 0:
                reason = (term.message or term.reason or f"exit code {term.exit_code}").strip()
                raise JobFailed(f"{what} failed: {reason}")
            waiting = cs.state.waiting if cs.state else None
            if waiting is not None and waiting.reason in STUCK:
                raise JobFailed(f"{what} cannot start: {waiting.reason}: {waiting.message or ''}".strip())
            if cs.state and cs.state.running:
                return f"fetching {what}", False
        for cs in st.container_statuses or []:
            if cs.name != MAIN_CONTAINER or cs.state is None:
                continue
            if cs.state.running or cs.state.terminated:
                return "running", True
            waiting = cs.state.waiting
            if waiting and waiting.reason in STUCK:
                raise JobFailed(f"{MAIN_CONTAINER} cannot start: {waiting.reason}: {waiting.message or ''}")
        if st.phase == "Pending" and not st.init_container_statuses and not st.container_statuses:
            unschedulable = next((c for c in st.conditions or [] if c.reason == "Unschedulable"), None)
            return (f"pending: {unschedulable.message}" if unschedulable else "pod pending"), False
        return f"pod {st.phase.lower()}", False

    def stream_logs(self, pod: Any) -> None:
        resp = self.core.read_namespaced_pod_log(
            pod.metadata.name, self.ns, container=MAIN_CONTAINER, follow=True, _preload_content=False
        )
        try:
            for chunk in resp.stream(4096):
                console.file.write(chunk.decode(errors="replace"))
                console.file.flush()
        finally:
            resp.release_conn()

    def result(self, pod_name: str) -> int:
        """The main container's exit code, once it terminated (the log stream may end a little earlier)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pod = self.core.read_namespaced_pod(pod_name, self.ns)
            for cs in pod.status.container_statuses or []:
                if cs.name == MAIN_CONTAINER and cs.state and cs.state.terminated:
                    term = cs.state.terminated
                    if term.exit_code != 0:
                        detail = (term.reason or "").strip()
                        raise JobFailed(
                            f"the command exited with code {term.exit_code} ({detail})", term.exit_code
                        )
                    return 0
            time.sleep(POLL_S)
        raise JobFailed("the command's container did not report its end")


@click.group()
def job() -> None:
    """Run a command in the cluster with MLflow models as inputs (Azure ML's command jobs).

    \b
    Example:
      mlendpoints job run --image mlendpoints/serving:dev --input model=models:/diabetes@champion \\
          -- python -c 'import sys; print(sys.argv)' '${{inputs.model}}'
    """


@job.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@cluster_options
@click.option("--image", required=True, help="Container image of the command.")
@click.option(
    "--input", "inputs", multiple=True, metavar="NAME=URI",
    help="A model input (repeatable): mounted read-only at /var/mlendpoints/inputs/NAME; "
    "'${{inputs.NAME}}' in the command is its directory.",
)  # fmt: skip
@click.option(
    "--env", "envs", multiple=True, metavar="KEY=VALUE", help="An environment variable (repeatable)."
)
@click.option("--name", help="The Job's name (default: mlendpoints-job- and a random suffix).")
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True, help="Pod retries.")
@click.option(
    "--run-as-user", type=click.IntRange(min=1), default=1000, show_default=True, help="Non-root uid."
)
@click.option(
    "--timeout", type=float, default=600, show_default=True, help="Seconds the pod may take to start."
)
@click.option("--no-wait", is_flag=True, help="Return once the Job is created.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_context
def run(
    ctx: click.Context,
    image: str,
    inputs: tuple[str, ...],
    envs: tuple[str, ...],
    name: str | None,
    retries: int,
    run_as_user: int,
    timeout: float,
    no_wait: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in a Job with model inputs; stream its logs; exit with its exit status.

    \b
    Example:
      mlendpoints job run --image mlendpoints/serving:dev --input model=models:/diabetes@champion \\
          -- python evaluate.py --model '${{inputs.model}}'
    """
    try:  # everything checked before the cluster is asked anything
        body = render_command_job(
            image, list(command), _pairs(inputs, "--input"), name=name,
            env=_pairs(envs, "--env"), retries=retries, run_as_user=run_as_user,
        )  # fmt: skip
    except CommandJobError as exc:
        raise UserError(str(exc), "see mlendpoints job run --help") from None
    cluster = cluster_of(ctx)
    batch: Any = client.BatchV1Api(cluster.api)
    try:
        created = batch.create_namespaced_job(cluster.namespace, body)
    except ApiException as exc:
        raise UserError(f"the Job was not created: {exc.reason}: {exc.body}", None) from None
    job_name = created.metadata.name
    console.print(f"job [bold]{job_name}[/] created in namespace {cluster.namespace}", highlight=False)
    logs = f"kubectl -n {cluster.namespace} logs job/{job_name} -c {MAIN_CONTAINER}"
    if no_wait:
        console.print(f"follow it with: {logs} -f", highlight=False)
        return
    follower = Follower(cluster, job_name, timeout)
    started = time.monotonic()
    try:
        with console.status(f"job {job_name}: waiting for its pod") as status:
            pod = follower.wait_for_main(status)
        follower.stream_logs(pod)
        follower.result(pod.metadata.name)
    except JobFailed as exc:
        stderr.print(f"[bold red]job {job_name} failed:[/] {escape(exc.message)}", highlight=False)
        raise click.exceptions.Exit(exc.code) from None
    except KeyboardInterrupt:
        console.print(f"\nstopped following; the job goes on: {logs} -f", highlight=False)
        raise click.exceptions.Exit(130) from None
    console.print(
        f"[bold green]job {job_name} succeeded[/] in {time.monotonic() - started:.0f}s", highlight=False
    )
