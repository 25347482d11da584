"""Measurement primitives: each module measures one thing and returns plain values for result rows.

Nothing here knows about rows, runners or output; importing the package imports no torch.
"""
