"""Third-party chatter kept off the terminal: what MAC counters, the ONNX exporter and the quantizer
print, warn and log must never reach stdout (``--format json``) or the user's stderr."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow prints, warnings and log lines (every logger) while the block runs; errors still raise."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
