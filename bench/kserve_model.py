"""The KServe anchor: a minimal `kserve.Model` serving the benchmark's diabetes model.

Run by bench.serving with the Python of its own venv (kserve pins packages this project's
constraints do not allow, e.g. pandas 2), never imported by the project:

    python bench/kserve_model.py --model_dir DIR --http_port PORT

V1 protocol, `POST /v1/models/model:predict` with `{"instances": [[...]]}`; one worker, no
gRPC, no per-request latency log line (KServe's quietest logging).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Any

import kserve  # type: ignore[import-not-found]
import numpy as np
import skops.io  # type: ignore[import-not-found]


class Diabetes(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.estimator: Any = None
        self.load()

    def load(self) -> bool:
        # The same file mlendpoints-serve loads (MLflow's sklearn flavour, skops format).
        self.estimator = skops.io.load(self.model_dir / "model.skops")
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        rows = np.asarray(payload["instances"], dtype=np.float64)
        return {"predictions": self.estimator.predict(rows).tolist()}


def main() -> None:
    warnings.filterwarnings("ignore")  # "X does not have valid feature names", once per process anyway
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    server = kserve.ModelServer(
        http_port=args.http_port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    # Quiet: no access log line per request (KServe configures uvicorn.access at INFO).
    for name in ("uvicorn.access", "kserve", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([Diabetes(args.model_name, Path(args.model_dir))])


if __name__ == "__main__":
    main()
