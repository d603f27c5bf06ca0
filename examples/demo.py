"""`make demo`: train a small MLflow model, serve it locally, score a sample request.

Uses only this machine: the model is the diabetes Ridge regressor from
scikit-learn's bundled dataset, served by `mlendpoints-serve` on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from examples.models import save_diabetes_regressor
from tests.fixtures.servers import free_port, running


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="mlendpoints-demo-"))
    try:
        print("demo: training the diabetes regressor (scikit-learn's bundled dataset) ...", flush=True)
        model_dir = save_diabetes_regressor(work / "model")
        port = free_port()
        serve = shutil.which("mlendpoints-serve", path=str(Path(sys.executable).parent)) or "mlendpoints-serve"
        argv = [serve, "--model-dir", str(model_dir), "--port", str(port), "--workers", "1"]
        started = time.monotonic()
        with running(argv, ready_url=f"http://127.0.0.1:{port}/health", timeout=60, log=work / "serve.log"):
            print(f"demo: model server ready in {time.monotonic() - started:.1f}s", flush=True)
            example = json.loads((model_dir / "input_example.json").read_text())
            body = json.dumps({"input_data": example}).encode()
            scoring_uri = f"http://127.0.0.1:{port}/score"
            req = urllib.request.Request(scoring_uri, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer = json.loads(resp.read())
            print(f"demo: scoring URI: {scoring_uri}")
            print(f"demo: request:  {body.decode()}")
            print(f"demo: response: {json.dumps(answer)}")
        return 0
    except subprocess.SubprocessError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
