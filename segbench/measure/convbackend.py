"""The CPU convolution backend of each layer for training: oneDNN (torch's default) or torch's native kernels.

Why choose: oneDNN is fast almost everywhere, but where a CPU's instruction set has no JIT kernel for
a shape, oneDNN falls back to its reference loops (on AVX2, FCN's fc6 weight gradient: 7x7, 512 ->
4096, padding 3, on a 4x4 map; docs/training.md gives the measured times), while native depthwise convolutions (Fast-SCNN) are several times slower than oneDNN's.
Which layers fall back depends on the CPU and the oneDNN build, so the choice is measured, as cuDNN's
benchmark mode does on GPUs, never keyed to a CPU model.

How a choice acts: ``torch.backends.mkldnn.enabled`` is one process-wide flag read by every op when it
runs, the backward node included. A layer's choice is set around its forward call (module hooks) and
around its own backward node (hooks on ``output.grad_fn``, public ``torch.autograd.graph.Node`` API).

How it is measured (`probe`): the conv layers' shapes come from one forward pass of a ``meta`` twin.
Each distinct layer big enough to matter is timed forward + backward with native kernels in this
process, then with oneDNN in a child process that is stopped as soon as oneDNN has lost (a reference
kernel cannot be interrupted in-process). A layer runs native only when oneDNN takes at least
``DECISIVE`` times as long and ``MIN_GAIN_S`` more: a fallback, not noise, so the choice does not
flip between runs on one machine. The choice is a `Plan`, written into the row as text that
``--conv-backend`` accepts back (an exact replay).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.errors import UserError
from segbench.measure.flags import mkldnn

ONEDNN, NATIVE, AUTO = "onednn", "native", "auto"
#: A layer runs native only when oneDNN takes at least DECISIVE times as long as native and at least
#: MIN_GAIN_S longer per forward + backward: the signature of a fallback kernel, far beyond what load
#: on a shared machine does to a healthy layer, so the choice does not flip between runs
#: (docs/training.md gives the measured ratios).
DECISIVE = 5.0
MIN_GAIN_S = 0.25
#: Layers of fewer multiply-accumulates per forward keep oneDNN untimed: even a reference kernel at
#: 0.05 GMAC/s (slower than oneDNN's fallback for fc6) would lose less than MIN_GAIN_S over
#: forward and backward (3 x MACs).
SMALL_MACS = 4_000_000
#: Calls per layer and backend; the fastest counts (the first includes oneDNN's primitive creation).
CALLS = 2
#: Extra seconds a child's call may take (primitive creation, weight reorders) before it is stopped.
SLACK_S = 2.0
#: The torch classes that are probed; other (custom) conv modules keep oneDNN.
CONV_CLASSES = {
    cls.__name__: cls
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
}


@dataclass(frozen=True)
class Plan:
    """Which conv layers run native: all (``native``), none (``onednn``) or the named ones.

    ``str(plan)`` is what the row records and what `parse_plan` reads back:
    ``onednn``, ``native`` or ``native:NAME,NAME`` (module names as in ``named_modules()``).
    """

    native: tuple[str, ...] = ()
    everything: bool = False

    def __str__(self) -> str:
        if self.everything:
            return NATIVE
        return f"{NATIVE}:{','.join(self.native)}" if self.native else ONEDNN

    def layers(self, model: nn.Module) -> list[str]:
        """The names of ``model``'s conv layers that run native (UserError for a name it lacks)."""
        convs = conv_names(model)
        if self.everything:
            return convs
        missing = [name for name in self.native if name not in convs]
        if missing:
            raise UserError(
                f"--conv-backend: {missing[0]!r} is not a conv layer of {type(model).__name__} "
                f"(its conv layers: {', '.join(convs[:6])}{', ...' if len(convs) > 6 else ''})"
            )
        return list(self.native)


def parse_plan(text: str) -> Plan | None:
    """``auto`` -> None (measure); ``onednn``, ``native``, ``native:NAME,...`` -> that `Plan`."""
    text = text.strip()
    if text == AUTO:
        return None
    if text in (ONEDNN, NATIVE):
        return Plan(everything=text == NATIVE)
    kind, _, names = text.partition(":")
    layers = tuple(n.strip() for n in names.split(",") if n.strip())
    if kind != NATIVE or not layers:
        raise UserError(
            f"bad --conv-backend {text!r}: accepted auto, onednn, native, or native:LAYER,... "
            "(a row's train_conv_backend)"
        )
    return Plan(native=layers)


def conv_names(model: nn.Module) -> list[str]:
    """Names of every convolution module of ``model`` (torch's and subclasses), in order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]


class _Toggle:
    """Sets the oneDNN flag on enter and restores the previous value on exit (a stack: re-entrant)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.saved: list[bool] = []

    def enter(self, *_: Any) -> None:
        self.saved.append(mkldnn.enabled)
        mkldnn.enabled = self.enabled

    def exit(self, *_: Any) -> None:
        mkldnn.enabled = self.saved.pop() if self.saved else True


def _hooks(conv: nn.Module) -> list[Any]:
    """Run ``conv`` with native kernels, forward and backward; returns removable hook handles."""
    forward, backward = _Toggle(False), _Toggle(False)

    def after(module: nn.Module, args: Any, output: Any) -> None:
        forward.exit()
        node = output.grad_fn if isinstance(output, torch.Tensor) else None
        if node is not None:  # this call's backward node: the flag is read again when it runs
            node.register_prehook(backward.enter)
            node.register_hook(backward.exit)

    return [conv.register_forward_pre_hook(forward.enter), conv.register_forward_hook(after)]


@contextlib.contextmanager
def use_plan(model: nn.Module, plan: Plan) -> Iterator[None]:
    """Run ``model``'s conv layers as ``plan`` says while inside; the flag and hooks restored after."""
    modules = dict(model.named_modules())
    handles = [h for name in plan.layers(model) for h in _hooks(modules[name])]
    saved = mkldnn.enabled
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        mkldnn.enabled = saved


# ---- the probe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One distinct conv call of a training step: how to rebuild the module and its input and output."""

    cls: str
    options: tuple[tuple[str, Any], ...]
    input_shape: tuple[int, ...]
    input_grad: bool
    output_shape: tuple[int, ...]

    def job(self) -> dict[str, Any]:
        return {
            "cls": self.cls,
            "options": dict(self.options),
            "input": self.input_shape,
            "grad": self.input_grad,
            "output": self.output_shape,
        }

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the forward call (a transposed conv's kernel meets each input pixel)."""
        options = dict(self.options)
        shape = self.input_shape if self.cls.startswith("ConvTranspose") else self.output_shape
        per_pixel = options["in_channels"] * options["out_channels"] // options["groups"]
        return math.prod(shape[:1] + shape[2:]) * per_pixel * math.prod(options["kernel_size"])

    @property
    def native_is_gemm(self) -> bool:
        """Native kernels are im2col + GEMM for one group; grouped convs loop over groups (always slow)."""
        return dict(self.options)["groups"] == 1


def _options(conv: nn.modules.conv._ConvNd) -> tuple[tuple[str, Any], ...]:
    options = {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }
    if conv.transposed:
        options["output_padding"] = conv.output_padding
    return tuple(options.items())


def conv_layers(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Layer]:
    """Each torch conv module's call in a training-mode forward of a ``meta`` twin (no compute, no RNG)."""
    from segbench.measure.macs import meta_twin

    twin = meta_twin(model)
    found: dict[str, Layer] = {}
    names = {id(m): name for name, m in twin.named_modules()}

    def record(module: nn.Module, args: tuple, output: Any) -> None:
        assert isinstance(module, nn.modules.conv._ConvNd)  # hooked on conv modules only
        found.setdefault(
            names[id(module)],
            Layer(
                type(module).__name__,
                _options(module),
                tuple(args[0].shape),
                args[0].requires_grad,
                tuple(output.shape),
            ),
        )

    handles = [m.register_forward_hook(record) for m in twin.modules() if type(m) in CONV_CLASSES.values()]
    try:
        twin.train()
        twin(torch.empty(tuple(input_shape), device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return found


def _time_layer(layer: Mapping[str, Any], onednn: bool) -> Iterator[float]:
    """Seconds of each of ``CALLS`` forward + backward calls of a fresh layer."""
    conv = CONV_CLASSES[layer["cls"]](**layer["options"])
    x = torch.randn(layer["input"], requires_grad=layer["grad"])
    grad = torch.randn(layer["output"])
    saved = mkldnn.enabled
    try:
        for _ in range(CALLS):
            mkldnn.enabled = onednn
            start = time.perf_counter()
            conv(x).backward(grad)
            seconds = time.perf_counter() - start
            mkldnn.enabled = saved
            yield seconds
    finally:
        mkldnn.enabled = saved


class _Child:
    """A fresh Python process that times layers with oneDNN, one line per call."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])  # this segbench, whatever is installed
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "segbench.measure.convbackend", str(torch.get_num_threads())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.pending = b""  # read from the pipe, not yet split into lines
        if self.read(timeout=None) is None:  # it writes a line once torch is imported
            raise RuntimeError("the conv-backend probe's child process failed to start")

    def read(self, timeout: float | None) -> Any:
        """The child's next line as JSON, or None if it did not come within ``timeout`` seconds.

        Reads the pipe's file descriptor directly: a buffered reader could hold a line that
        ``select`` no longer sees.
        """
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = None if timeout is None else time.perf_counter() + timeout
        while b"\n" not in self.pending:
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and (left <= 0 or not select.select([fd], [], [], left)[0]):
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def time(self, layer: Layer, timeout: float) -> float | None:
        """oneDNN seconds of ``layer``, or None when a call passed ``timeout`` (the child is then ended)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(layer.job()) + "\n")
        self.process.stdin.flush()
        times = [self.read(timeout) for _ in range(CALLS)]
        if None in times:
            self.close()
            return None
        return min(times)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@dataclass(frozen=True)
class Probe:
    """A measured `Plan`, the probe's wall time, and (native, oneDNN) seconds per timed layer.

    oneDNN is None where its call was stopped (it had lost); layers left untimed are not listed.
    """

    plan: Plan
    seconds: float
    timings: dict[str, tuple[float, float | None]]


def probe(model: nn.Module, input_shape: Sequence[int]) -> Probe:
    """Time the conv layers that could matter both ways and choose each one's backend.

    Layers under ``SMALL_MACS`` and grouped convs keep oneDNN untimed. Each other distinct layer is
    timed native in this process (im2col + GEMM: no fallback to fear), then at once with oneDNN in a
    child process whose call is stopped once it passes what would make native win (the child is then
    restarted for the next layer).
    """
    start = time.perf_counter()
    distinct: dict[Layer, list[str]] = {}
    for name, layer in conv_layers(model, input_shape).items():
        if layer.macs >= SMALL_MACS and layer.native_is_gemm:
            distinct.setdefault(layer, []).append(name)
    timings: dict[Layer, tuple[float, float | None]] = {}
    child: _Child | None = None
    try:
        for layer in sorted(distinct, key=lambda layer: layer.macs):  # the biggest, likeliest to be stopped, last
            native = min(_time_layer(layer.job(), onednn=False))  # right before oneDNN: the same machine load
            if child is None or child.process.poll() is not None:
                child = _Child()
            lost = max(DECISIVE * native, native + MIN_GAIN_S)  # oneDNN slower than this: native wins
            timings[layer] = (native, child.time(layer, timeout=lost + SLACK_S))
    finally:
        if child is not None:
            child.close()
    chosen = {name for layer, names in distinct.items() if _native_wins(*timings[layer]) for name in names}
    every = conv_names(model)
    plan = Plan(everything=True) if set(every) <= chosen else Plan(native=tuple(n for n in every if n in chosen))
    per_name = {name: timings[layer] for layer, names in distinct.items() for name in names}
    return Probe(plan, time.perf_counter() - start, per_name)


def _native_wins(native: float, onednn: float | None) -> bool:
    if onednn is None:  # stopped: it had lost
        return True
    return onednn >= DECISIVE * native and onednn - native >= MIN_GAIN_S


def _serve(threads: int) -> None:
    """The child's loop: read a layer per line, answer its oneDNN timings.

    A small conv first starts the thread pool and oneDNN, so no layer's first call pays for them.
    """
    torch.set_num_threads(threads)
    warm_up = {
        "cls": "Conv2d",
        "options": {"in_channels": 8, "out_channels": 8, "kernel_size": 3},
        "input": (2, 8, 16, 16),
        "grad": True,
        "output": (2, 8, 14, 14),
    }
    list(_time_layer(warm_up, onednn=True))
    print("{}", flush=True)
    for line in sys.stdin:
        for seconds in _time_layer(json.loads(line), onednn=True):
            print(seconds, flush=True)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
