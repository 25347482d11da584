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
    from segbench.output.tables import print_terminal_table
    from segbench.rows.environment import environment
    from segbench.runners.profile import cached_roofs

    check_format(fmt, ("table", "json"))
    facts = {**environment(), "roofline_ceilings": cached_roofs()}
    if fmt == "json":
        sys.stdout.write(json.dumps([facts], indent=1) + "\n")
        return
    cells = [[key, ", ".join(value) if isinstance(value, list) else str(value)] for key, value in facts.items()]
    print_terminal_table(["key", "value"], cells, title="segbench environment")
