"""A model's output as columns of the output file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlendpoints_serving.batch.scoring import predictions_frame


def test_prediction_shapes_become_columns():
    assert list(predictions_frame(np.array([1.0, 2.0])).columns) == ["prediction"]
    assert predictions_frame(np.array([[1.0], [2.0]]))["prediction"].tolist() == [1.0, 2.0]
    two = predictions_frame(np.array([[1, 2], [3, 4]]))
    assert list(two.columns) == ["prediction_0", "prediction_1"] and two["prediction_1"].tolist() == [2, 4]
    assert predictions_frame(np.float64(3.5))["prediction"].tolist() == [3.5]
    named = predictions_frame(pd.DataFrame({"label": [1], 0: [2]}, index=[7]))
    assert list(named.columns) == ["label", "0"] and named.index.tolist() == [0]
    assert list(predictions_frame(pd.Series([1, 2], name="score")).columns) == ["score"]
    assert predictions_frame(np.zeros((2, 2, 2)))["prediction"].tolist()[0] == [[0.0, 0.0], [0.0, 0.0]]


def test_only_fork_safe_flavors_are_loaded_once_for_all_workers(diabetes_model, tensor_model, tmp_path):
    from mlendpoints_serving.batch.forkserver import fork_safe

    assert fork_safe(str(diabetes_model)), "sklearn: loading starts no thread"
    assert not fork_safe(str(tensor_model)), "custom pyfunc code: loaded in each worker"
    assert not fork_safe(str(tmp_path))
