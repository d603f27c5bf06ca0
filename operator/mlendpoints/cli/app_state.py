"""Options every command sees (`ctx.obj` of the root group)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Globals:
    debug: bool = False
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None


def _setter(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        root = ctx.find_root()
        if value is not None:
            if root.obj is None:
                root.obj = Globals()
            setattr(root.obj, field, value)

    return store


def cluster_options(command: F) -> F:
    """-n/--namespace, --kubeconfig and --context, accepted after the command name too."""
    for decorator in (
        click.option(
            "--context", expose_value=False, callback=_setter("context"), help="kubeconfig context."
        ),
        click.option(
            "--kubeconfig",
            expose_value=False,
            callback=_setter("kubeconfig"),
            help="Path to a kubeconfig file.",
        ),
        click.option(
            "-n",
            "--namespace",
            expose_value=False,
            callback=_setter("namespace"),
            help="Namespace (default: the kubeconfig context's).",
        ),
    ):
        command = decorator(command)
    return command
