"""Measurement primitives: each module measures one thing and returns plain values, not result rows.

Nothing here knows about rows, runners, output or the runtimes (``segbench.runtimes`` sits above and
imports ``session``, ``faults`` and ``quiet`` from here); importing the package imports no torch.
"""
