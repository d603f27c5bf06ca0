"""A fitted scikit-learn linear regressor's predict() as its one matrix product, without the per-call checks.

scikit-learn 1.9 spends ~200 us validating the input of every predict() (dataframe-library
probes, dtype and finiteness checks, the fitted check) around a product that takes ~4 us for
a batch of 17 rows: most of the inference thread's time on a linear model. The server has
already checked what the validation checks (the signature's columns, in order, of one
numeric dtype: ServedModel._sklearn_array_predict), so for the linear regressors whose
predict() is exactly `LinearModel._decision_function` the kernel computes what it computes
(`X @ coef_ + intercept_`, or `X @ coef_.T` for several targets) on the same array.

What validation adds that is left is its refusal of NaN and infinity: such input goes to the
estimator's own predict(), which raises its own error (a 400 naming the columns, as before).
The caller uses the kernel only after probes give bit-identical output both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# scikit-learn's regressors whose predict() is LinearModel.predict, or a method that only calls it
# (read in scikit-learn 1.9's source). Lasso and ElasticNet are not: their _decision_function is
# their own (sparse input), and the check below would refuse them anyway.
LINEAR_REGRESSORS = frozenset(
    {
        "ARDRegression",
        "ElasticNetCV",
        "HuberRegressor",
        "Lars",
        "LarsCV",
        "LassoCV",
        "LassoLars",
        "LassoLarsCV",
        "LassoLarsIC",
        "LinearRegression",
        "OrthogonalMatchingPursuit",
        "OrthogonalMatchingPursuitCV",
        "QuantileRegressor",
        "Ridge",
        "RidgeCV",
        "TheilSenRegressor",
    }
)


def linear(estimator: Any, predict_fn: str) -> Callable[[Any], Any] | None:
    """`estimator.predict` as its matrix product, or None when it is not a plain linear regressor's."""
    if predict_fn != "predict" or type(estimator).__name__ not in LINEAR_REGRESSORS:
        return None
    try:
        from sklearn.linear_model._base import LinearModel
    except ImportError:
        return None
    cls = type(estimator)
    if not cls.__module__.startswith("sklearn.linear_model.") or not isinstance(estimator, LinearModel):
        return None
    if getattr(cls, "_decision_function", None) is not LinearModel._decision_function:
        return None
    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.ndim not in (1, 2) or intercept is None:
        return None
    full = estimator.predict

    def predict(x: np.ndarray[Any, Any]) -> Any:
        if x.dtype.kind in "fc" and not np.isfinite(x).all():
            return full(x)  # its own refusal, word for word
        # As _decision_function: the transpose taken at each call, a view like the one it takes.
        return x @ (coef if coef.ndim == 1 else coef.T) + intercept

    return predict
