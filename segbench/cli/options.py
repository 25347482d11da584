"""Options shared by several commands, defined once, and the parsers that turn their text into values.

Parsers raise UserError when the text does not parse, saying what is accepted; the app turns that into
exit code 2. The values themselves are checked once, by the runners' configs (`segbench.checks`).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from segbench.errors import UserError
from segbench.output.tables import FORMATS
from segbench.runners.defaults import PROCESSES, TARGET, TIMING, TRAIN, Timing

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")

Models = Annotated[
    str | None,
    typer.Option("--models", "-m", help="Comma list of names or globs (fcn*), or 'all'. Default: all models."),
]
Format = Annotated[str, typer.Option("--format", "-f", help=f"Output format: {', '.join(FORMATS)}.")]
Out = Annotated[
    Path, typer.Option("--out", help="Folder for <command>-<run id>.jsonl (while running) and .json/.csv/.md.")
]
NoSave = Annotated[bool, typer.Option("--no-save", help="Do not write result files.")]
Resume = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="A result file (.json, .csv or a killed run's .jsonl) of this command: measure only the cells "
        "it lacks and add them to it.",
    ),
]
Sizes = Annotated[
    str | None,
    typer.Option("--size", help="HxW or a comma list (512x1024,256x512). Default: each model's own."),
]
BatchSizes = Annotated[str, typer.Option("--batch-size", "-b", help="Batch size or a comma list (1,8).")]
Device = Annotated[str, typer.Option("--device", "-d", help="cpu, cuda or cuda:N.")]
NumClasses = Annotated[int | None, typer.Option("--num-classes", help="Class count (default: each model's own).")]
Warmup = Annotated[
    int | None,
    typer.Option(
        "--warmup",
        help=f"Untimed calls per row. Default: {TIMING['cpu']['warmup']} CPU, {TIMING['cuda']['warmup']} CUDA.",
    ),
]
Iters = Annotated[
    int | None,
    typer.Option("--iters", help="Timed calls per row, exactly. Default: adaptive (see --target and --budget)."),
]
Budget = Annotated[
    float | None,
    typer.Option(
        "--budget",
        help=f"Adaptive timing: seconds of timed calls per row at most. Default: {TIMING['cpu']['budget_s']:g} CPU, "
        f"{TIMING['cuda']['budget_s']:g} CUDA.",
    ),
]
Target = Annotated[
    float | None,
    typer.Option(
        "--target",
        help=f"Adaptive timing: stop when the 95% interval of each median (and speed-up) is within +-TARGET "
        f"(relative). Default: {TARGET:g}.",
    ),
]
Threads = Annotated[int | None, typer.Option("--threads", help="torch CPU threads (default: torch's own).")]
Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        help="Time each cell in N fresh worker processes; the interval then covers a rerun. Default: "
        f"{PROCESSES['cpu']} CPU (the third skipped when two agree), {PROCESSES['cuda']} CUDA; "
        "run's per-model latency: 1.",
    ),
]
Dataset = Annotated[
    str, typer.Option("--dataset", help="synthetic, folder:PATH, voc:PATH, cityscapes:PATH (or a plugin's).")
]
DatasetClasses = Annotated[
    int | None,
    typer.Option("--num-classes", help="Class count of the dataset (folder: inferred from the masks when not given)."),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the weights, data order and augmentation.")]
Steps = Annotated[
    int | None,
    typer.Option(
        "--steps", help=f"Training steps; 0 only evaluates. Default: {TRAIN['cpu'][0]} CPU, {TRAIN['cuda'][0]} CUDA."
    ),
]
Precisions = Annotated[
    str,
    typer.Option(
        "--precision",
        help="Comma list of fp32, fp16, bf16 (torch: model and input cast), int8 (onnxruntime, openvino).",
    ),
]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="Add channels_last rows.")]
Compile = Annotated[bool, typer.Option("--compile", help="Add torch.compile rows (compile time reported apart).")]
CudaGraph = Annotated[bool, typer.Option("--cuda-graph", help="Add CUDA-graph rows (CUDA only).")]
CompileMode = Annotated[
    str,
    typer.Option(
        "--compile-mode",
        help="torch.compile mode of the --compile rows (inference freezing on): default, "
        "max-autotune-no-cudagraphs; reduce-overhead and max-autotune capture CUDA graphs themselves "
        "(not with --cuda-graph).",
    ),
]


Runtimes = Annotated[
    str,
    typer.Option(
        "--runtime",
        "-r",
        help="Comma list of runtimes (see segbench list), or 'all'. fp32 PyTorch eager is the reference.",
    ),
]
FoldBN = Annotated[bool, typer.Option("--fold-bn", help="Add rows with BatchNorm folded into the conv before it.")]


@dataclass(frozen=True)
class Output:
    """Where a command's rows go: the stdout format, the results folder (``no_save``: none) and the
    result file a run resumes. The format is checked here, once. ``settings``: the command's other
    options in words (`grouped`), which its rows record and ``--resume`` must match.

    The paths are made absolute here, before any plugin code runs: one that changes the working
    directory must not send the results elsewhere.
    """

    format: str = "table"
    out: Path = Path("results")
    no_save: bool = False
    resume: Path | None = None
    settings: str | None = None

    def __post_init__(self) -> None:
        check_format(self.format)
        object.__setattr__(self, "out", Path(os.path.abspath(self.out)))
        if self.resume is not None:
            object.__setattr__(self, "resume", Path(os.path.abspath(self.resume)))

    @property
    def folder(self) -> Path | None:
        """The folder of new result files (None with --no-save)."""
        return None if self.no_save else self.out


ProtocolName = Annotated[
    str,
    typer.Option(
        "--protocol",
        help="How mIoU (and --end-to-end) runs a frame, as mmsegmentation: whole, slide (--window, --stride) "
        "or multiscale (--scales, --flip).",
    ),
]
Window = Annotated[str | None, typer.Option("--window", help="slide: the window HxW (the network's input size).")]
Stride = Annotated[str | None, typer.Option("--stride", help="slide: HxW between windows, at most the window.")]
Scales = Annotated[
    str | None,
    typer.Option("--scales", help="multiscale: comma list of scales of --size. Default: 0.5,0.75,1,1.25,1.5,1.75."),
]
Flip = Annotated[bool, typer.Option("--flip", help="multiscale: each scale also mirrored left-right.")]
EndToEnd = Annotated[
    bool,
    typer.Option(
        "--end-to-end",
        help="Also time frame in, mask out: uint8 frame -> normalise, resize, to device (preprocess) -> model "
        "(the --protocol) -> upsample, argmax, to host (postprocess).",
    ),
]
SourceSize = Annotated[
    str | None, typer.Option("--source-size", help="--end-to-end: the frames' HxW. Default: --size.")
]


@dataclass(frozen=True)
class Evaluation:
    """The evaluation protocol options as given; `parsed` is the checked protocol
    (`segbench.measure.protocols.EvalProtocol`, UserError on bad input)."""

    protocol: str = "whole"
    window: str | None = None
    stride: str | None = None
    scales: str | None = None
    flip: bool = False

    def parsed(self) -> Any:
        from segbench.measure.protocols import EvalProtocol

        return EvalProtocol(
            self.protocol,
            window=parse_size(self.window) if self.window is not None else None,
            stride=parse_size(self.stride) if self.stride is not None else None,
            scales=parse_scales(self.scales) if self.scales is not None else None,
            flip=self.flip,
        )


@dataclass(frozen=True)
class Variants:
    """The --runtime and variant options as given (latency, run); `runtimes` and `parsed` check them."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    cuda_graph: bool = False
    fold_bn: bool = False
    runtime: str = "torch"

    def runtimes(self) -> list[str]:
        """The runtime names of --runtime (the registry checks them)."""
        return parse_names(self.runtime)

    def parsed(self) -> list:
        """The variants of --precision and the switches (`variants_of`)."""
        return variants_of(
            self.precision, self.channels_last, self.compile, self.cuda_graph, self.fold_bn, self.compile_mode
        )


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.5,1,1.5"`` -> (0.5, 1.0, 1.5); the protocol checks the values."""
    try:
        return tuple(float(part) for part in _items(text, "--scales", "numbers > 0, e.g. 0.5,1.0,1.5"))
    except ValueError:
        raise UserError(f"bad --scales {text!r}: expected numbers > 0, e.g. 0.5,1.0,1.5") from None


#: The options behind a command parameter typed `Timing`, `Output`, `Variants` or `Evaluation`, in --help order,
#: as (the object's field, Typer annotation, default).
GROUPS: dict[type, tuple[tuple[str, Any, Any], ...]] = {
    Timing: (
        ("threads", Threads, None),
        ("warmup", Warmup, None),
        ("iters", Iters, None),
        ("budget_s", Budget, None),
        ("target", Target, None),
        ("processes", Processes, None),
    ),
    Output: (
        ("format", Format, "table"),
        ("out", Out, Path("results")),
        ("no_save", NoSave, False),
        ("resume", Resume, None),
    ),
    Variants: (
        ("precision", Precisions, "fp32"),
        ("channels_last", ChannelsLast, False),
        ("compile", Compile, False),
        ("compile_mode", CompileMode, "default"),
        ("cuda_graph", CudaGraph, False),
        ("fold_bn", FoldBN, False),
        ("runtime", Runtimes, "torch"),
    ),
    Evaluation: (
        ("protocol", ProtocolName, "whole"),
        ("window", Window, None),
        ("stride", Stride, None),
        ("scales", Scales, None),
        ("flip", Flip, False),
    ),
}


def grouped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as Typer should see it: each parameter typed as a key of `GROUPS` becomes its group's
    options (`GROUPS`), and ``fn`` gets the object built from their values. So every command that
    times or writes results declares those options once, here."""
    hints = typing.get_type_hints(fn, include_extras=True)
    groups = {name: hint for name, hint in hints.items() if hint in GROUPS}
    parameters = []
    for parameter in inspect.signature(fn).parameters.values():
        group = groups.get(parameter.name)
        if group is None:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[parameter.name]))
            continue
        parameters += [
            inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for field, annotation, default in GROUPS[group]
        ]

    @functools.wraps(fn)
    def call(**options: Any) -> Any:
        options = {name: absolute(name, value) for name, value in options.items()}
        for name, group in groups.items():
            options[name] = group(**{field: options.pop(field) for field, _, _ in GROUPS[group]})
        settings = settings_of(options)
        return fn(**{k: replace(v, settings=settings) if isinstance(v, Output) else v for k, v in options.items()})

    call.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in parameters}
    return call


#: Options that name files as text (``{model}`` templates), besides those typed `Path`.
PATH_TEXT = frozenset({"save", "weights"})


def absolute(name: str, value: Any) -> Any:
    """A path the user gave, made absolute before any plugin code runs: plugin code that changes the
    working directory must not move where results, checkpoints or traces go (``-``, stdout, stays)."""
    if (isinstance(value, Path) or (name in PATH_TEXT and isinstance(value, str))) and str(value) != "-":
        return type(value)(os.path.abspath(value))
    return value


#: Options that may change between a run and its ``--resume``: which models, and where the rows go.
RESUMABLE = frozenset({"models"})


def settings_of(options: dict[str, Any]) -> str:
    """A command's options but `RESUMABLE` ones and its `Output`, in words: ``batch_size=1; by='operator'; ...``."""
    return "; ".join(
        f"{name}={value!r}"
        for name, value in sorted(options.items())
        if name not in RESUMABLE and not isinstance(value, Output)
    )


def variants_of(
    precision: str, channels_last: bool, compile: bool, cuda_graph: bool, fold_bn: bool, compile_mode: str = "default"
) -> list:
    """The variants of --precision and the switches (`segbench.measure.session.expand_variants`)."""
    from segbench.checks import check_precisions
    from segbench.measure.session import check_compile_modes, expand_variants

    precisions = check_precisions([p.strip() for p in precision.split(",") if p.strip()])
    if compile_mode != "default" and not compile:
        raise UserError(f"--compile-mode {compile_mode} needs --compile")
    variants = expand_variants(
        precisions,
        compile_mode=compile_mode,
        channels_last=channels_last,
        compile=compile,
        cuda_graph=cuda_graph,
        fold_bn=fold_bn,
    )
    check_compile_modes(variants)
    return variants


def parse_names(text: str) -> list[str]:
    """``"torch, onnxruntime"`` -> ["torch", "onnxruntime"] (the registry checks the names)."""
    return [name.strip() for name in text.split(",") if name.strip()] or [text]


TrainTime = Annotated[
    float | None,
    typer.Option(
        "--train-time",
        help="Train each model for this many seconds (conv probe, step timing and steps; not evaluation) "
        "instead of a number of steps. The row records the steps reached: --steps with them repeats the mIoU.",
    ),
]
ConvBackend = Annotated[
    str,
    typer.Option(
        "--conv-backend",
        help="CPU convolution kernels for training: auto (a short probe picks oneDNN or native per layer), "
        "onednn, native, or native:LAYER,... (a row's train_conv_backend, to repeat it exactly).",
    ),
]
Init = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="vgg16:PATH: start FCN backbones from a VGG16 classifier checkpoint (torchvision layout); "
        "fc6/fc7 from its first two fully connected layers. Default: from scratch.",
    ),
]
KernelSizes = Annotated[str, typer.Option("--kernel-sizes", "-k", help="Comma list of odd kernel sizes.")]
Channels = Annotated[str, typer.Option("--channels", "-c", help="Comma list of channel counts (in = out).")]


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> (512, 1024); the config checks the sides (`segbench.checks.check_sizes`)."""
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"bad size {text!r}: expected HxW with positive integers, e.g. 512x1024")
    return int(match[1]), int(match[2])


def parse_sizes(text: str | None) -> list[tuple[int, int]] | None:
    """``"512x1024,256x512"`` -> [(512, 1024), (256, 512)]; None stays None (each model's default)."""
    if text is None:
        return None
    return [parse_size(part) for part in _items(text, "size", "HxW,HxW,...")]


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,8"`` -> [1, 8]; the config checks the values."""
    values = []
    for part in _items(text, what, "a comma list of integers"):
        try:
            values.append(int(part))
        except ValueError:
            raise UserError(f"bad {what} {part!r}: expected integers >= 1, e.g. 1,8") from None
    return values


def check_format(fmt: str, accepted: tuple[str, ...] = FORMATS) -> str:
    if fmt not in accepted:
        raise UserError(f"bad format {fmt!r}: accepted {', '.join(accepted)}")
    return fmt


def _items(text: str, what: str, accepted: str) -> list[str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise UserError(f"bad {what} {text!r}: expected {accepted}")
    return items
