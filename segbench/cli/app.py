"""The Typer application and the one place that turns errors into one-line messages: a UserError or a
usage error (unknown option, bad value, unknown command) exits 2, an OSError (a write to a full disk or a
closed stdout) exits 1; none shows a traceback (``SEGBENCH_DEBUG=1`` does)."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from segbench import __version__
from segbench.cli.options import grouped
from segbench.errors import UserError
from segbench.foreign import printable


class OneLineErrors(TyperGroup):
    """The app's command group: a usage error is one line, ``segbench: error: ...``, and exit 2, like
    every other bad input (click would print a ``Usage:`` / ``Try ...`` / ``Error:`` block).

    Typer raises usage errors as `typer.TyperException` when not in standalone mode; this runs the
    group that way and does what standalone mode does with the rest (exit codes, Ctrl-C, ``Abort``).
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        where = {"args": args, "prog_name": prog_name, "complete_var": complete_var, **extra}
        if not standalone_mode:
            return super().main(standalone_mode=False, windows_expand_args=windows_expand_args, **where)
        try:
            code = super().main(standalone_mode=False, windows_expand_args=windows_expand_args, **where)
        except typer.Abort:
            typer.echo("segbench: aborted", err=True)
            sys.exit(1)
        except typer.TyperException as exc:
            if os.environ.get("SEGBENCH_DEBUG") == "1":
                raise
            typer.echo(f"segbench: error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def one_line(text: str) -> str:
    """A message on one line, safe to show: outside text (a plugin's error, torch's, a path) may span
    several lines or hold terminal control sequences."""
    return " ".join(printable(text).split())


app = typer.Typer(
    name="segbench",
    cls=OneLineErrors,
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
            except (UserError, OSError) as exc:
                if os.environ.get("SEGBENCH_DEBUG") == "1":
                    raise
                typer.echo(f"segbench: error: {one_line(_message(exc))}", err=True)
                raise typer.Exit(2 if isinstance(exc, UserError) else 1) from None

        return app.command(name, **kwargs)(run)

    return decorate


def _message(exc: Exception) -> str:
    """A UserError's own message; an OSError's file and reason (a write to a full disk or closed stdout)."""
    if not isinstance(exc, OSError):
        return str(exc)
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if exc.errno in _STREAM_ERRORS:  # no file named: the failed write was stdout's
        mute_stdout()
        return f"cannot write to stdout: {exc.strerror or exc}"
    return f"{exc.strerror or exc}"


#: What a write to stdout fails with: a closed pipe, a full device (/dev/full) or quota.
_STREAM_ERRORS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EDQUOT})


def mute_stdout() -> None:
    """After stdout failed (closed pipe, full device), point it at /dev/null: Python's flush at exit
    would fail again and print its own traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


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
