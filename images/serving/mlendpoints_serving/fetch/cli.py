"""`mlendpoints-fetch --model-uri URI --dest DIR`: the init container that puts the model in place.

MLflow URIs (models:/, runs:/) go through MLflow's artifact download (and the usual
MLFLOW_* auth env vars); everything else (s3://, gs://, abfss://, wasbs://, https://,
local or PVC paths) through fsspec. A tar.gz/zip is unpacked; a single pickled
estimator is wrapped as an MLflow sklearn model. The result must be an MLflow model.
With `--mode input` (a model input of any pod) nothing is unpacked, wrapped or required: a
folder arrives as is and a single file as DIR/<filename>, so the input is always a directory.
A record (resolved URI, registry version, checksum) is written next to it; a second
run that downloads the same content leaves the destination untouched.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from mlendpoints_serving import runtime
from mlendpoints_serving.contract import ENV_PREFIX_FETCH, FETCH_MODE_MODEL
from mlendpoints_serving.fetching import COMPONENT, FetchError, fetch, log


class FetchSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX_FETCH, cli_kebab_case=True, cli_prog_name=COMPONENT, protected_namespaces=()
    )

    model_uri: str = Field(
        description="models:/name/version|@alias|/latest, runs:/, s3://, gs://, "
        "abfss://, wasbs://, https://, or a local path"
    )
    dest: Path = Field(description="directory the MLflow model is written to")
    mode: Literal["model", "input"] = Field(
        default=FETCH_MODE_MODEL,
        description="model: an MLflow model is required (archives unpacked, a pickle wrapped); "
        "input: whatever the URI names, as is, a single file as DEST/<filename>",
    )
    log_level: str = "info"


def main(argv: list[str] | None = None) -> int:
    try:
        settings = CliApp.run(FetchSettings, cli_args=argv if argv is not None else sys.argv[1:])
    except ValidationError as exc:
        runtime.fatal(COMPONENT, f"invalid arguments: {exc}", code=2)
    runtime.setup_logging(settings.log_level)
    try:
        record, changed = fetch(settings.model_uri, settings.dest, settings.mode)
    except FetchError as exc:
        runtime.fatal(COMPONENT, str(exc))
    log.info(
        "model in place" if changed else "model unchanged, nothing to do",
        extra={"fields": {**asdict(record), "dest": str(settings.dest), "changed": changed}},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
