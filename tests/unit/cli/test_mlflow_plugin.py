"""The MLflow deployments plugin's pure parts: registration, target URIs, settings, traffic rebalancing."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from mlendpoints import mlflow_plugin
from mlendpoints.mlflow_plugin import _deployment_spec, _input_data, _namespace, rebalance


def test_registered_under_the_mlflow_deployments_entry_point() -> None:
    client = get_deploy_client("mlendpoints:/models")
    assert isinstance(client, mlflow_plugin.MlendpointsDeploymentClient)
    assert client._namespace == "models"
    assert "instance_count" in mlflow_plugin.target_help()


def test_target_uris() -> None:
    assert _namespace("mlendpoints") is None
    assert _namespace("mlendpoints:/prod") == "prod"
    with pytest.raises(MlflowException, match="expected 'mlendpoints'"):
        _namespace("mlendpoints:/")


def test_settings_become_the_spec_and_unknown_ones_are_named() -> None:
    spec = _deployment_spec(
        {
            "endpoint": "e",
            "instance_count": "2",
            "request_timeout_ms": "900",
            "max_batch_size": "16",
            "workers": "1",
        }
    )
    assert spec == {
        "instanceCount": 2,
        "workers": 1,
        "requestSettings": {"requestTimeoutMs": 900},
        "batching": {"maxBatchSize": 16},
    }
    assert _deployment_spec({"batching": "false"}) == {"batching": {"enabled": False}}
    with pytest.raises(MlflowException, match="-C batching='maybe': expected true or false"):
        _deployment_spec({"batching": "maybe"})
    with pytest.raises(MlflowException, match="unknown -C settings: instnace_count"):
        _deployment_spec({"instnace_count": "2"})
    with pytest.raises(MlflowException, match="-C instance_count='two': expected an integer"):
        _deployment_spec({"instance_count": "two"})


def test_rebalance_examples() -> None:
    assert rebalance({}, "blue", 100) == {"blue": 100}
    assert rebalance({"blue": 100}, "green", 20) == {"blue": 80, "green": 20}
    assert rebalance({"blue": 60, "green": 40}, "green", 0) == {"blue": 100}
    assert rebalance({"a": 50, "b": 30, "c": 20}, "d", 10) == {"a": 45, "b": 27, "c": 18, "d": 10}
    assert rebalance({"a": 1, "b": 1, "c": 1}, "d", 0) == {"a": 34, "b": 33, "c": 33}  # remainder to one
    with pytest.raises(MlflowException, match="no other deployment"):
        rebalance({}, "blue", 50)


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 100), min_size=1, max_size=5),
    st.integers(0, 99),
)
def test_rebalance_always_sums_to_100(weights: dict[str, int], share: int) -> None:
    new = rebalance(weights, "z", share)
    assert sum(new.values()) == 100
    assert new.get("z", 0) == share
    assert all(v >= 0 for v in new.values())


def test_dataframes_go_as_split_orient() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    assert _input_data(frame) == {"columns": ["a", "b"], "data": [[1.0, 3.0], [2.0, 4.0]]}
    assert _input_data({"input_data": [1, 2]}) == [1, 2]
