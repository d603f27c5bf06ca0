"""`mlendpoints operator run`: the operator process (what the operator image runs)."""

from __future__ import annotations

import click


@click.group(
    epilog="""\b
Examples:
  MLENDPOINTS_SERVING_IMAGE=mlendpoints/serving:dev mlendpoints operator run""",
)
def operator() -> None:
    """Run the mlendpoints operator."""


@operator.command(
    epilog="""\b
Examples:
  mlendpoints operator run          # settings come from MLENDPOINTS_* environment variables""",
)
def run() -> None:
    """Reconcile mlendpoints resources in the current cluster until stopped (settings from env)."""
    from mlendpoints.operator.main import main

    main()
