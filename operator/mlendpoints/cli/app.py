"""The command tree and the one place errors become `error: ...` + `hint: ...` lines."""

from __future__ import annotations

import sys
import traceback

import click
from rich.console import Console
from rich.markup import escape

from mlendpoints.cli.app_state import Globals
from mlendpoints.errors import explain

stderr = Console(stderr=True)


_globals = Globals()


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  mlendpoints local up -f examples/diabetes-online/
  mlendpoints status -n models
  mlendpoints invoke diabetes --request-file request.json""",
)
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.option("-n", "--namespace", help="Kubernetes namespace (default: the kubeconfig context's).")
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Path to a kubeconfig file.")
@click.option("--context", "kube_context", help="kubeconfig context to use.")
@click.version_option(package_name="mlendpoints")
@click.pass_context
def cli(
    ctx: click.Context, debug: bool, namespace: str | None, kubeconfig: str | None, kube_context: str | None
) -> None:
    """Azure ML-style online and batch endpoints for MLflow models, on a cluster or on this machine."""
    _globals.debug = debug
    _globals.namespace = namespace
    _globals.kubeconfig = kubeconfig
    _globals.context = kube_context
    ctx.obj = _globals


def _register_commands() -> None:
    from mlendpoints.cli import (
        batch_cmds,
        cluster_cmds,
        compare_cmd,
        import_cmds,
        job_cmds,
        local_cmds,
        operator_cmd,
        package_cmd,
    )

    cli.add_command(local_cmds.local)
    for command in cluster_cmds.COMMANDS:
        cli.add_command(command)
    cli.add_command(batch_cmds.batch)
    cli.add_command(job_cmds.job)
    cli.add_command(package_cmd.package)
    cli.add_command(operator_cmd.operator)
    cli.add_command(import_cmds.import_group)
    cli.add_command(compare_cmd.compare_cmd)


_register_commands()


def run(argv: list[str] | None = None) -> int:
    try:
        # Not standalone, click returns a command's `Exit(code)` instead of raising it.
        rc = cli.main(args=argv, prog_name="mlendpoints", standalone_mode=False)
        if isinstance(rc, int) and not isinstance(rc, bool):
            return rc
    except click.exceptions.Abort:
        stderr.print("aborted")
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _globals.debug:
            traceback.print_exc()
        message, hint = explain(exc)
        stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        if hint:
            stderr.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
        elif not _globals.debug:
            stderr.print("[yellow]hint:[/] rerun with --debug for the full traceback", highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
