"""The ``segbench`` command line: one module per command, all on one Typer app."""

from segbench.cli import env_cmd, list_cmd  # noqa: F401  (registers the commands)
from segbench.cli import compare, report, run  # noqa: F401  (issue 7)
from segbench.cli import latency  # noqa: F401  (issue 6)
from segbench.cli import train  # noqa: F401  (issue 8)
from segbench.cli import blocks, flops  # noqa: F401  (issue 5)
from segbench.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
