"""The ``segbench`` command line: one module per command, all on one Typer app.

Importing a command module registers it; the order below is the order of ``segbench --help``.
"""

from segbench.cli import (  # noqa: F401
    blocks,
    check,
    compare,
    env_cmd,
    flops,
    history,
    latency,
    list_cmd,
    load,
    profile,
    report,
    run,
    train,
)
from segbench.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
