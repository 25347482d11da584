"""``segbench list``: the registered architectures and blocks, and plugins that failed to load."""

from __future__ import annotations

import json
import sys

from segbench.cli.app import command
from segbench.cli.options import Format, check_format

COLUMNS = ("name", "kind", "family", "plugin", "default_size", "num_classes", "params", "reference")
RUNTIME_COLUMNS = ("name", "plugin", "precisions", "switches", "available")


@command("list")
def list_models(fmt: Format = "table") -> None:
    """List registered models and blocks (family, default size, classes, parameter count) and runtimes
    (what they run, whether they can run here and why not)."""
    from segbench.inventory import spec_entries
    from segbench.output.tables import print_table

    check_format(fmt, ("table", "json"))
    entries = spec_entries()
    if fmt == "json":
        sys.stdout.write(json.dumps(entries, indent=1) + "\n")
        return
    print_table([e for e in entries if e["name"] and e["kind"] != "runtime"], COLUMNS, title="Registered architectures")
    print_table([e for e in entries if e.get("kind") == "runtime"], RUNTIME_COLUMNS, title="Runtimes")
    failed = [e for e in entries if not e["name"]]
    if failed:
        print_table(failed, ("plugin", "error"), title="Plugins that failed to load")
