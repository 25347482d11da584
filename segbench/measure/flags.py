"""Typed access to two process-wide torch flags that torch's stubs type as descriptors, not bools.

``torch.backends.mkldnn.enabled`` is a ``ContextProp`` and ``torch.utils.deterministic`` a module whose
class torch swaps at import; reading and assigning them through these views is what torch documents,
and lets mypy check the values.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.utils.deterministic


class _OneDNN(Protocol):
    enabled: bool


class _Deterministic(Protocol):
    fill_uninitialized_memory: bool


#: ``torch.backends.mkldnn``: ``mkldnn.enabled`` switches PyTorch's oneDNN (mkldnn) kernels.
mkldnn = cast(_OneDNN, torch.backends.mkldnn)
#: ``torch.utils.deterministic``: whether deterministic mode fills fresh memory with NaN.
deterministic = cast(_Deterministic, torch.utils.deterministic)
