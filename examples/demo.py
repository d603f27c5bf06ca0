"""`make demo`: two model versions behind one local endpoint, split 80/20 with a 10% shadow mirror.

1. trains two versions of the diabetes regressor (scikit-learn's bundled dataset)
   and registers them as `diabetes` 1 and 2 in a local MLflow registry (sqlite);
2. runs `mlendpoints local up -f examples/diabetes-online/`: the operator's own
   pods (fetch, model server per deployment, router) as processes on loopback;
3. sends 200 requests and prints one prediction, the observed split, the mirror
   count and a `curl` line to paste.

    python -m examples.demo [--keep]   # --keep (or DEMO_KEEP=1) leaves it running for the curl line
    python -m examples.demo --register-to http://mlflow:5000   # only register the two versions there
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from examples.models import save_diabetes_regressor

EXAMPLE = Path(__file__).parent / "diabetes-online"
ENDPOINT = "diabetes"
REQUESTS = 200
CLI = str(Path(sys.executable).parent / "mlendpoints")
DEMO_HOME = Path(os.environ.get("MLENDPOINTS_DEMO_HOME", Path.home() / ".cache" / "mlendpoints" / "demo"))


def register_versions(work: Path, tracking_uri: str | None = None) -> str:
    """Train and register `diabetes` v1 (alpha 1.0) and v2 (alpha 0.1); return the tracking URI.

    Without `tracking_uri`, a registry in `work` (sqlite, local artifacts) is made.
    """
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name("mlendpoints-demo")
    experiment = (
        found.experiment_id
        if found
        else mlflow.create_experiment(
            "mlendpoints-demo", artifact_location=None if tracking_uri else (work / "artifacts").as_uri()
        )
    )
    for version, alpha in ((1, 1.0), (2, 0.1)):
        local = save_diabetes_regressor(work / f"diabetes-v{version}", alpha=alpha)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(local), artifact_path="model")
        mlflow.register_model(f"runs:/{run.info.run_id}/model", ENDPOINT)
    return uri


def free_port(preferred: int = 8080) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def score(uri: str, key: str, body: bytes, n: int) -> tuple[collections.Counter[str], object]:
    """Send n requests; count the deployment that answered each (x-mlendpoints-served-by)."""
    served: collections.Counter[str] = collections.Counter()
    answer: object = None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    for _ in range(n):
        req = urllib.request.Request(uri, data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
            served[resp.headers["x-mlendpoints-served-by"]] += 1
    return served, answer


def scored_requests(server_port: int) -> int:
    """Requests to /score a model server answered, from its Prometheus metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "mlendpoints_requests_total" and sample.labels.get("route") == "/score"
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mlendpoints demo")
    parser.add_argument(
        "--keep",
        action="store_true",
        default=os.environ.get("DEMO_KEEP") == "1",
        help="leave the endpoint running at the end (also DEMO_KEEP=1, e.g. `make demo DEMO_KEEP=1`)",
    )
    parser.add_argument(
        "--register-to",
        metavar="TRACKING_URI",
        help="only train and register both versions in this MLflow server",
    )
    args = parser.parse_args(argv)
    if args.register_to:
        with tempfile.TemporaryDirectory() as work:
            register_versions(Path(work), args.register_to)
        print(f"demo: registered diabetes versions 1 and 2 at {args.register_to}")
        return 0
    started = time.monotonic()
    shutil.rmtree(DEMO_HOME, ignore_errors=True)
    DEMO_HOME.mkdir(parents=True)
    print("demo: training diabetes v1 and v2 and registering them in a local MLflow registry ...", flush=True)
    tracking_uri = register_versions(DEMO_HOME)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLENDPOINTS_LOCAL_HOME": str(DEMO_HOME / "local"),
    }
    port = free_port()
    up = [CLI, "local", "up", "-f", str(EXAMPLE), "--port", str(port), "--detach"]
    print(f"demo: $ {' '.join(['mlendpoints', *up[1:]])}", flush=True)
    done = subprocess.run(up, env=env, text=True, capture_output=True)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        return 1
    print("\n".join(f"  {line}" for line in done.stdout.splitlines()), flush=True)
    try:
        state = json.loads((DEMO_HOME / "local" / "endpoints" / ENDPOINT / "state.json").read_text())
        key = state["keys"]["primaryKey"]
        uri = f"http://127.0.0.1:{port}/score"
        example = json.loads((DEMO_HOME / "diabetes-v1" / "input_example.json").read_text())
        row = {"columns": example["columns"], "data": example["data"][:1]}
        body = json.dumps({"input_data": row}, separators=(",", ":")).encode()
        served, answer = score(uri, key, body, REQUESTS)
        shadow_port = next(iter(state["deployments"]["shadow"]["instances"][0][0]["ports"].values()))
        time.sleep(0.5)  # mirror copies are sent after the live answer
        mirrored = scored_requests(shadow_port)
        print(f"demo: one prediction: {json.dumps(answer)}")
        split = ", ".join(
            f"{name} {count} ({100 * count / REQUESTS:.0f}%)" for name, count in sorted(served.items())
        )
        print(f"demo: {REQUESTS} requests served by: {split}   (configured blue 80 / green 20)")
        print(f"demo: mirrored to shadow: {mirrored} ({100 * mirrored / REQUESTS:.0f}%, configured 10%)")
        print("demo: try it yourself: paste the `try:` curl line above")
        print(f"demo: done in {time.monotonic() - started:.0f}s")
    finally:
        if args.keep:
            print(
                f"demo: the endpoint keeps running; stop it with: "
                f"MLENDPOINTS_LOCAL_HOME={DEMO_HOME / 'local'} mlendpoints local down {ENDPOINT}"
            )
        else:
            subprocess.run([CLI, "local", "down", ENDPOINT], env=env, capture_output=True)
            print("demo: endpoint stopped; `make demo DEMO_KEEP=1` keeps it running for the curl line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
