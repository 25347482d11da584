"""The Typer application and the one place that turns a UserError into a one-line message + exit 2."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from segbench import __version__
from segbench.cli.options import grouped
from segbench.errors import UserError

app = typer.Typer(
    name="segbench",
    help="Benchmark semantic-segmentation networks side by side: params, MACs, latency, memory, mIoU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # usage errors as plain one-line click messages, not boxes
)


def command(name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` that reports a UserError as one line on stderr and exits 2.

    ``SEGBENCH_DEBUG=1`` lets the exception through with its traceback. A parameter typed `Timing` or
    `Output` stands for its group of options (`segbench.cli.options.grouped`).
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        typed = grouped(fn)

        @functools.wraps(typed)
        def run(*args: Any, **kw: Any) -> Any:
            try:
                return typed(*args, **kw)
            except UserError as exc:
                if os.environ.get("SEGBENCH_DEBUG") == "1":
                    raise
                typer.echo(f"segbench: error: {exc}", err=True)
                raise typer.Exit(2) from None

        return app.command(name, **kwargs)(run)

    return decorate


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"segbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Benchmark semantic-segmentation networks side by side."""
