"""``segbench env``: the facts that decide whether two benchmark runs are comparable."""

from __future__ import annotations

import json
import sys

from segbench.cli.app import command
from segbench.cli.options import Format, check_format


@command("env")
def env(fmt: Format = "table") -> None:
    """Show versions, devices, CPU, threads, TF32 and cudnn.benchmark flags, and this machine's cached
    roofline ceilings (measured by ``segbench profile``)."""
    from rich.console import Console
    from rich.table import Table

    from segbench.rows.environment import environment
    from segbench.runners.profile import cached_roofs

    check_format(fmt, ("table", "json"))
    facts = {**environment(), "roofline_ceilings": cached_roofs()}
    if fmt == "json":
        sys.stdout.write(json.dumps([facts], indent=1) + "\n")
        return
    table = Table("key", "value", title="segbench environment")
    for key, value in facts.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    Console().print(table)
