"""Model URI syntax, shared by the Python validators and the CRDs' CEL rules.

One regular expression per scheme family; each is valid in both Python's `re`
and RE2, which CEL's `matches()` uses, so the API server and `validation.py`
accept exactly the same URIs.
"""

from __future__ import annotations

MODELS_URI = r"models:/(?P<name>[^/@]+)(?:/(?P<version>[1-9][0-9]*|latest)|@(?P<alias>[A-Za-z0-9_-]+))"
RUNS_URI = r"runs:/[0-9a-zA-Z]+/.+"
REMOTE_URI = r"(s3|gs|abfss|wasbs|https?)://[^/\s]+(/\S*)?"
LOCAL_URI = r"(file://)?/\S*"
# Every accepted model URI, anchored. Strings starting with models: or runs: can
# only match their own alternative, as validation.py's scheme dispatch expects.
ANY_MODEL_URI = (
    "^("
    + "|".join(
        p.replace("?P<name>", "").replace("?P<version>", "").replace("?P<alias>", "")
        for p in (MODELS_URI, RUNS_URI, REMOTE_URI, LOCAL_URI)
    )
    + ")$"
)
MODEL_URI_MAX = 2048

MODELS_URI_HINT = "expected models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest"
RUNS_URI_HINT = "expected runs:/RUN_ID/PATH"
ANY_URI_HINT = "expected models:/, runs:/, s3://, gs://, abfss://, wasbs://, http(s):// or an absolute path"
