"""A small PyTorch model saved with `mlflow.pytorch`: an MLP classifying scikit-learn's bundled wine data.

Used by the PyTorch serving tests (tests/integration/test_server_torch.py) and by the GPU device
check (bench/gpu_check.sh), which builds it on the GPU machine with that machine's torch. Only
torch.nn's own layers, so that loading it needs no code of this project: the standardisation is a
first Linear layer with fixed weights.

    python -m examples.torch_models DEST [HIDDEN] [--behaving] [--pickle] [--columns]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 13  # wine: 13 chemical measurements, 3 cultivars
CLASSES = 3
# Rows whose first feature is past these make the behaving model raise what CUDA raises.
OOM_MARKER = 1.0e6
DEVICE_ASSERT_MARKER = -1.0e6


def wine() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def train_mlp(hidden: int = 64, epochs: int = 300, seed: int = 0) -> Any:
    """torch.nn.Sequential: standardise (fixed Linear), Linear-ReLU-Linear-ReLU-Linear; logits out."""
    import torch

    torch.manual_seed(seed)
    x, y = wine()
    mean, std = x.mean(axis=0), x.std(axis=0)
    scale = torch.nn.Linear(FEATURES, FEATURES)
    with torch.no_grad():
        scale.weight.copy_(torch.diag(torch.from_numpy(1.0 / std)))
        scale.bias.copy_(torch.from_numpy(-mean / std))
    scale.requires_grad_(False)
    model = torch.nn.Sequential(
        scale,
        torch.nn.Linear(FEATURES, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, CLASSES),
    )
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    return model.eval()


def _behaving(inner: Any) -> Any:
    """The MLP, raising CUDA's out-of-memory error or a device-side assert on marked rows (even on a CPU)."""
    import torch

    class Behaving(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            if bool((x[:, 0] >= OOM_MARKER).any()):
                raise torch.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 40.00 GiB. GPU 0 has a total capacity of 139.8 GiB"
                )
            if bool((x[:, 0] <= DEVICE_ASSERT_MARKER).any()):
                raise torch.AcceleratorError("CUDA error: device-side assert triggered")
            return self.inner(x)

    return Behaving(inner)


def save_wine_mlp(
    dest: Path,
    behaving: bool = False,
    serialization_format: str | None = None,
    columns: bool = False,
    hidden: int = 64,
    epochs: int = 300,
) -> Path:
    """The MLflow model directory; kept if already there. Signature: a float32 tensor [-1, 13] -> [-1, 3],
    or with `columns` the 13 wine columns as doubles (what a CSV file reads as: the batch driver's input).

    serialization_format: MLflow's default is "pt2" (torch.export), which stays on the device it was
    saved on; "pickle" loads on any device (the GPU check serves one model on both). `columns` implies
    "pickle" (MLflow exports pt2 from tensor examples only)."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    dest = Path(dest)
    if (dest / "MLmodel").exists():
        return dest
    model = train_mlp(hidden=hidden, epochs=epochs)
    if behaving:
        import cloudpickle

        serialization_format = "pickle"  # a torch.export graph cannot raise on data
        model = _behaving(model)
        # The class is local to this module: pickle it by value, so the server needs no project code.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    x, _ = wine()
    with torch.no_grad():
        out = model(torch.from_numpy(x[:5])).numpy()
    example: Any = x[:5]
    if columns:
        import pandas as pd
        from sklearn.datasets import load_wine

        names = [str(n) for n in load_wine().feature_names]
        example = pd.DataFrame(x[:5].astype(np.float64), columns=names)
        serialization_format = "pickle"
    mlflow.pytorch.save_model(
        model,
        str(dest),
        signature=infer_signature(example, out),
        input_example=example[:2],
        serialization_format=serialization_format,
        # Inferring requirements would import the model in a subprocess; these are what it needs.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
    return dest


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    fmt = "pickle" if "--pickle" in sys.argv else None
    hidden = int(args[1]) if len(args) > 1 else 64
    dest = Path(args[0] if args else "build/models/wine-mlp")
    print(save_wine_mlp(dest, "--behaving" in sys.argv, fmt, "--columns" in sys.argv, hidden))
