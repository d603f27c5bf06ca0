"""`mlendpoints compare ENDPOINT`: shadow (mirror) answers against live ones, from collected records."""

from __future__ import annotations

import json

import click
from rich import box
from rich.console import Console
from rich.table import Table

from mlendpoints.cli.app_state import Globals, cluster_options
from mlendpoints.compare import PairReport, compare, parse_since
from mlendpoints.errors import UserError

console = Console()


def _cluster_destinations(ctx: click.Context, endpoint: str) -> list[str]:
    from mlendpoints.client import Cluster

    opts: Globals = ctx.find_root().obj
    cluster = Cluster(opts.kubeconfig, opts.context, opts.namespace)
    destinations = []
    for dep in cluster.deployments_of(endpoint):
        collector = dep.get("spec", {}).get("dataCollector") or {}
        if collector.get("enabled", True) and collector.get("destination"):
            destinations.append(str(collector["destination"]))
    if not destinations:
        raise UserError(
            f"no deployment of endpoint {endpoint!r} has a dataCollector with a destination",
            "set spec.dataCollector on its deployments, or give --destination URI",
        )
    if any(d.startswith("pvc://") for d in destinations):
        raise UserError(
            "records on a PersistentVolumeClaim cannot be read from this machine",
            "give --destination with a path where the volume is mounted here",
        )
    return destinations


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _statuses(counts: dict[str, int]) -> str:
    return " ".join(f"{status}:{n}" for status, n in counts.items()) or "-"


def _latency(values: dict[str, float | None]) -> str:
    return f"{_num(values.get('p50'))} / {_num(values.get('p99'))}"


def render_table(endpoint: str, since: str, reports: list[PairReport]) -> Table:
    table = Table(title=f"endpoint {endpoint}, last {since}", title_justify="left", box=box.SIMPLE_HEAD)
    for header in (
        "live", "mirror", "compared", "agreement", "label agreement", "mean |diff|", "max |diff|",
        "status live", "status mirror", "live ms p50/p99", "mirror ms p50/p99",
    ):  # fmt: skip
        table.add_column(header, overflow="fold")
    for r in reports:
        table.add_row(
            r.live, r.mirror, str(r.compared), _pct(r.agreement), _pct(r.label_agreement),
            _num(r.mean_abs_diff), _num(r.max_abs_diff), _statuses(r.live_status),
            _statuses(r.mirror_status), _latency(r.live_latency_ms), _latency(r.mirror_latency_ms),
        )  # fmt: skip
    return table


@click.command(name="compare")
@click.argument("endpoint")
@click.option("--since", default="1h", show_default=True, help="Window: a number and s, m, h or d.")
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    help="Where the records are (the dataCollector destination; repeatable). "
    "Default: the destinations of the endpoint's deployments in the cluster.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@cluster_options
@click.pass_context
def compare_cmd(
    ctx: click.Context, endpoint: str, since: str, destinations: tuple[str, ...], as_json: bool
) -> None:
    """Join mirror answers to live ones by request id and report their agreement, per deployment pair.

    Agreement: labels (strings, integers, booleans) exactly equal and numbers within 1e-9; for numbers
    also the mean and max absolute difference; status codes; latency p50 and p99.

    \b
    Examples:
      mlendpoints compare diabetes --since 1h
      mlendpoints compare diabetes --destination /tmp/records --json
    """
    window = parse_since(since)
    sources = list(destinations) or _cluster_destinations(ctx, endpoint)
    reports = compare(endpoint, sources, window)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2))
        return
    if not reports:
        console.print(f"no mirrored request of endpoint {endpoint} was collected in the last {since}")
        return
    console.print(render_table(endpoint, since, reports))
