"""Runners: every measurement is ``runner(specs, config) -> Iterator[row]``.

Each runner plans its work as `Cell`s and `segbench.runners.cells.measure_cells` measures them, one
at a time, catching each cell's fault into its row's ``error``. ``run`` is a composition of
``count``, ``latency`` and ``train``. Importing this package imports no torch (the CLI's ``--help``
stays instant); the runner modules import it when they run.
"""
