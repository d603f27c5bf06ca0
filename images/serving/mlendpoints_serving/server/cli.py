"""`mlendpoints-serve`: bind the port, start N worker processes (each loads the model), supervise them.

The parent binds the socket and forks before importing anything heavy; each worker
runs uvicorn (uvloop) over the shared socket, with http1's protocol straight to the app's core.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from typing import TYPE_CHECKING

from mlendpoints_serving import runtime
from mlendpoints_serving.contract import ENV_AML_CORS_ORIGINS
from mlendpoints_serving.server.settings import ServeSettings

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

COMPONENT = "mlendpoints-serve"
log = logging.getLogger("mlendpoints.serve")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_worker(
    settings: ServeSettings,
    sock: socket.socket,
    workers_loaded: Synchronized[int] | None = None,
    worker: int = 0,
) -> int:
    """Serve until told to stop; 1 when the model failed to load (the reason is in the termination log)."""
    import uvicorn

    from mlendpoints_serving.server.app import ServerApp
    from mlendpoints_serving.server.http1 import Http1Protocol
    from mlendpoints_serving.server.metrics import Metrics

    failure: list[str] = []

    def on_load_failed(reason: str) -> None:
        failure.append(reason)
        server.should_exit = True

    def on_fatal(reason: str) -> None:
        # A stuck prediction, a lost GPU: the inference thread would hold up a normal exit.
        runtime.abort(COMPONENT, reason)

    app = ServerApp(settings, Metrics(), on_load_failed, workers_loaded, on_fatal, worker)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        # Our HTTP/1.1 protocol on httptools, straight to the app's core (http1.py): uvicorn's own
        # request cycle cost more than the prediction of a small request.
        http=Http1Protocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        # No X-Forwarded-* rewriting: the client address is never used, and the middleware would be
        # one more coroutine and header scan on every request (2% of the server's samples on loopback).
        proxy_headers=False,
        timeout_keep_alive=75,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if failure:
        runtime.fatal(COMPONENT, failure[0])
    return 0


def supervise(settings: ServeSettings, sock: socket.socket) -> int:
    """Fork the workers; when one exits, stop the others and exit with its status (the pod restarts)."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "")
    if not os.environ["PROMETHEUS_MULTIPROC_DIR"]:
        settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix="mlendpoints-metrics-", dir=settings.metrics_dir
        )
    workers_loaded = multiprocessing.Value("i", 0)
    children: list[int] = []
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                code = run_worker(settings, sock, workers_loaded, index)
            except SystemExit as exc:  # runtime.fatal: the reason is already on the termination log
                code = exc.code if isinstance(exc.code, int) else 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pid, status = os.wait()
    code = os.waitstatus_to_exitcode(status)
    children.remove(pid)
    forward(signal.SIGTERM, None)
    for child in children:
        os.waitpid(child, 0)
    return code if code > 0 else 0


def without_option(args: list[str], option: str) -> list[str]:
    """`args` less `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError
    from pydantic_settings import CliApp

    try:
        settings = CliApp.run(ServeSettings, cli_args=argv if argv is not None else sys.argv[1:])
    except ValidationError as exc:
        runtime.fatal(COMPONENT, f"invalid settings: {exc}", code=2)
    runtime.setup_logging(settings.log_level)
    if settings.fetch_model_uri:
        from mlendpoints_serving import fetching

        try:
            fetching.fetch(settings.fetch_model_uri, settings.model_dir)
        except fetching.FetchError as exc:
            runtime.fatal(fetching.COMPONENT, str(exc))  # the same failure line as the init container's
    if settings.env_manager == "virtualenv":
        from mlendpoints_serving.server.deps import virtualenv_python

        try:
            python = virtualenv_python(settings.model_dir, settings.env_cache_dir)
        except Exception as exc:
            runtime.fatal(COMPONENT, f"cannot build the model environment: {exc}")
        os.environ["MLENDPOINTS_SERVE_ENV_MANAGER"] = "local"  # the re-executed server serves in place
        args = without_option(argv if argv is not None else sys.argv[1:], "--env-manager")
        args = without_option(args, "--fetch-model-uri")  # fetched already
        os.execv(str(python), [str(python), "-m", "mlendpoints_serving.server.cli", *args])
    if not settings.scoring_script and not (settings.model_dir / "MLmodel").is_file():
        runtime.fatal(COMPONENT, f"{settings.model_dir} is not an MLflow model directory (no MLmodel file)")
    cors = os.environ.get(ENV_AML_CORS_ORIGINS)
    if settings.scoring_script is not None and cors:
        from mlendpoints_serving.server.azure_cors import AzureCors

        try:
            AzureCors(cors)
        except ValueError as exc:
            runtime.fatal(COMPONENT, str(exc))
    if settings.scoring_script is not None:
        from mlendpoints_serving.server.app import scoring_timeout_ms

        try:
            scoring_timeout_ms(os.environ)
        except ValueError as exc:
            runtime.fatal(COMPONENT, str(exc))
    if settings.scoring_script is None:
        from mlendpoints_serving.server.deps import log_mismatches

        log_mismatches(settings.model_dir)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        runtime.fatal(COMPONENT, f"cannot listen on {settings.host}:{settings.port}: {exc}")
    log.info(
        "serving",
        extra={
            "fields": {
                "port": settings.port,
                "workers": settings.workers,
                "model_dir": str(settings.model_dir),
            }
        },
    )
    if settings.workers == 1:
        return run_worker(settings, sock)
    return supervise(settings, sock)


if __name__ == "__main__":
    sys.exit(main())
