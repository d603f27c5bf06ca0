"""The transport-free scoring core: load an MLflow model, decode and validate input
against its signature, predict without MLflow re-enforcing, encode output.

No HTTP here: the model server and the batch driver both build on this package.
"""

from mlendpoints_serving.model.core import ModelInput, ServedModel, load
from mlendpoints_serving.model.errors import DeviceLost, DeviceOutOfMemory, InputError, ModelError

__all__ = [
    "DeviceLost",
    "DeviceOutOfMemory",
    "InputError",
    "ModelError",
    "ModelInput",
    "ServedModel",
    "load",
]
