"""Runners: every measurement is ``runner(specs, config, context=ALONE) -> Iterator[row]``.

The config says what to measure (frozen, checked when built); the `segbench.runners.cells.Context`
says how the run goes (progress display, rows of a resumed run, this process's part under torchrun).
Each runner plans its work as `Cell`s and `segbench.runners.cells.measure_cells` measures them, one
at a time, catching each cell's fault into its row's ``error``. ``run`` composes ``count``,
``latency``, ``train`` and ``blocks``, and its config composes theirs. Importing this package imports
no torch (the CLI's ``--help`` stays instant); the runner modules import it when they run.
"""
