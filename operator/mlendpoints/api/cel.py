"""CEL rules (`x-kubernetes-validations`) that the API server checks, generated into the CRDs.

Each rule mirrors one check of `validation.py`, which local mode and the
reconciler run: for the same input, the API server's message is the text that
follows "FIELD: " in validation's message, and the API server names the field
(`e2e/test_cel.py` checks every rule against a real API server). So `kubectl
apply` of an invalid resource fails with a message naming the field even where
the admission webhook is not installed; the webhook keeps what needs other
objects (a traffic entry naming a missing deployment, deleting a deployment
with live traffic).

Rules need bounded inputs to fit the API server's cost budget: every map or
string they walk has a `maxProperties`/`maxLength`, and numbers go into
messages through `format()` (the cost estimator takes `string(int)` as unbounded).
"""

from __future__ import annotations

from typing import Any

from mlendpoints.api import uris


def rule(rule: str, message_expression: str, *, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "messageExpression": message_expression}
    if field_path:
        out["fieldPath"] = field_path
    return out


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` for a pydantic field or model."""
    return {"x-kubernetes-validations": list(rules)}


def _quoted(expr: str) -> str:
    """Python's repr() of a plain string, as validation.py's messages show values."""
    return f'"\'" + {expr} + "\'"'


TRAFFIC_SUM = rule(
    "self.map(k, self[k]).sum() in [0, 100]",
    "'percentages sum to %d, must be 0 or 100'.format([self.map(k, self[k]).sum()])",
)

MIRROR_NOT_LIVE = rule(
    "!has(self.mirrorTraffic) || !has(self.traffic) || "
    "self.mirrorTraffic.all(k, !(k in self.traffic) || self.traffic[k] == 0)",
    "'mirrors to a deployment with %d%% live traffic, must have 0'.format("
    "[self.mirrorTraffic.filter(k, k in self.traffic && self.traffic[k] > 0).map(k, self.traffic[k])[0]])",
    field_path=".mirrorTraffic",
)

MODEL_URI = rule(
    f"self.matches(r'{uris.ANY_MODEL_URI}')",
    f"{_quoted('self')} + (self.startsWith('models:') ? ' is not a registry URI; {uris.MODELS_URI_HINT}' : "
    f"self.startsWith('runs:') ? ' is not a run URI; {uris.RUNS_URI_HINT}' : "
    f"' is not a model URI; {uris.ANY_URI_HINT}')",
)

ABSOLUTE_PATH = rule("self.startsWith('/')", f"{_quoted('self')} + ' must be an absolute path'")

MIN_NOT_ABOVE_MAX = rule(
    "!has(self.type) || self.type == 'default' || self.minInstances <= self.maxInstances",
    "'minInstances %d exceeds maxInstances %d'.format([self.minInstances, self.maxInstances])",
)

ZERO_ONLY_WITH_CONCURRENCY = rule(
    "!has(self.minInstances) || self.minInstances >= 1 || (has(self.type) && self.type == 'concurrency')",
    "'minInstances 0 (scale to zero) needs type concurrency'",
)

CPU_REQUEST_FOR_UTILIZATION = rule(
    "!has(self.scaleSettings.type) || self.scaleSettings.type != 'targetUtilization' || "
    "(has(self.resources.requests) && 'cpu' in self.resources.requests)",
    "'cpu: required by scaleSettings.type targetUtilization'",
    field_path=".resources.requests",
)


NO_AUTHORIZATION_HEADER = rule(
    "!self.exists(h, h.lowerAscii() == 'authorization')",
    "'Authorization is never collected; remove it'",
)


def dns_label_name(max_length: int, pattern: str) -> dict[str, str]:
    """On the resource's root, where only CEL sees metadata.name: it must be a DNS label."""
    return rule(
        f"self.metadata.name.size() <= {max_length} && self.metadata.name.matches('{pattern}')",
        f"self.metadata.name.size() > {max_length} ? "
        f"'metadata.name: \\'%s\\' is %d characters, at most {max_length} allowed'"
        ".format([self.metadata.name, self.metadata.name.size()]) : "
        "'metadata.name: \\'%s\\' must be a DNS label (lower-case letters, digits and \\'-\\')'"
        ".format([self.metadata.name])",
    )
