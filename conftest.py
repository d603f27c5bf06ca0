"""Shared pytest fixtures for tests/ and e2e/ (real models, MLflow server, local cluster)."""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.mlflow_server",
    "e2e.localcluster.fixture",
]
