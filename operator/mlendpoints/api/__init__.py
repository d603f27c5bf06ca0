"""The mlendpoints.io/v1alpha1 API: pydantic models are the one source of truth; the CRDs are generated."""

from mlendpoints.api.batch import BatchDeployment, BatchEndpoint, BatchJob
from mlendpoints.api.common import API_GROUP, API_VERSION, GROUP_VERSION
from mlendpoints.api.online import OnlineDeployment, OnlineEndpoint

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "BatchDeployment",
    "BatchEndpoint",
    "BatchJob",
    "OnlineDeployment",
    "OnlineEndpoint",
]
