"""Measurements: each module measures one thing and returns plain values for result rows."""

from segbench.measure.accuracy import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
