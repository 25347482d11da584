"""Specs of what plugins register (models and blocks, datasets, runtimes), and the lookup over them.

A spec holds a factory plus facts about the architecture, never a built model (timm's registry idea):
listing hundreds of models must not build them.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from segbench.errors import UserError
from segbench.foreign import foreign_code, one_line

if TYPE_CHECKING:
    import torch
    from torch import nn

_NAME = re.compile(r"[a-z][a-z0-9_]*")
Kind = Literal["model", "block"]


@dataclass(frozen=True)
class ModelSpec:
    """One architecture (kind ``model``) or building block (kind ``block``) a plugin offers.

    ``builder(num_classes=..., **options)`` returns a plain ``nn.Module``. Blocks take no class count:
    their builder gets ``default_options`` overridden by the caller's options (kernel_size, in_channels,
    out_channels, stride), and their input has ``in_channels`` channels instead of 3.
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    default_size: tuple[int, int]
    default_num_classes: int | None
    description: str
    reference: str = ""
    kind: Kind = "model"
    default_options: Mapping[str, Any] = field(default_factory=dict)
    plugin: str = ""

    def options(self, **overrides: Any) -> dict[str, Any]:
        """The builder options in effect: defaults overridden by the caller's."""
        return {**self.default_options, **overrides}

    def build(self, num_classes: int | None = None, **options: Any) -> nn.Module:
        options = self.options(**options)
        if self.kind == "block":
            return self.builder(**options)
        return self.builder(num_classes=num_classes or self.default_num_classes, **options)

    def input_channels(self, **options: Any) -> int:
        return int(self.options(**options).get("in_channels", 3))

    def validate(self) -> None:
        """Raise ValueError when a plugin hands over a malformed spec."""
        if not valid_name(self.name):
            raise ValueError(f"model name {self.name!r} must be lowercase snake case")
        if self.kind not in ("model", "block"):
            raise ValueError(f"model {self.name!r}: kind must be 'model' or 'block', not {self.kind!r}")
        if not callable(self.builder):
            raise ValueError(f"model {self.name!r}: builder is not callable")
        if len(self.default_size) != 2 or min(self.default_size) < 1:
            raise ValueError(f"model {self.name!r}: default_size must be (H, W) with positive sides")
        if self.kind == "model" and (self.default_num_classes or 0) < 1:
            raise ValueError(f"model {self.name!r}: default_num_classes must be a positive int")


class Samples(Protocol):
    """Indexed ``(image float 3xHxW, mask int64 HxW with 255 = ignore)`` pairs: a split or a share of one."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class SegmentationDataset(Samples, Protocol):
    """One split of a dataset a plugin offers (a torch ``Dataset``); ``default_size`` (H, W) is optional."""

    name: str
    num_classes: int


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset a plugin offers: ``builder(path=, split=, seed=, num_classes=)`` returns a
    `SegmentationDataset`.
    ``num_classes`` here is the fixed class count of the format, or None when it is read from the data.
    """

    name: str
    builder: Callable[..., SegmentationDataset]
    description: str
    needs_path: bool = False
    num_classes: int | None = None
    plugin: str = ""

    def open(self, path: str | None, split: str, seed: int = 0, num_classes: int | None = None) -> SegmentationDataset:
        return self.builder(path=path, split=split, seed=seed, num_classes=num_classes)

    def validate(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"dataset name {self.name!r} must be lowercase snake case")
        if not callable(self.builder):
            raise ValueError(f"dataset {self.name!r}: builder is not callable")


@dataclass(frozen=True)
class RuntimeSpec:
    """An inference runtime a plugin offers (see the ``register_runtimes`` hook).

    ``prepare(model, example, *, device, variant, threads, workdir, calibration)`` returns a
    :class:`segbench.measure.session.Session` for ``model`` (eval mode, fp32, on ``device``) and inputs
    shaped like ``example``; ``workdir`` is a folder shared by the runtimes of one cell (for exported
    files), ``calibration`` a few inputs of that shape from a dataset (int8). ``unavailable(device
    type)`` says why the runtime cannot run here, or None. ``precisions`` and ``switches`` (of
    ``channels_last``, ``compile``, ``cuda_graph``, ``fold_bn``) are the variants it can prepare.
    """

    name: str
    description: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    switches: frozenset[str]
    unavailable: Callable[[str], str | None]
    prepare: Callable[..., Any]
    plugin: str = ""

    def supports(self, precision: str, switches: tuple[str, ...]) -> bool:
        return precision in self.precisions and set(switches) <= self.switches

    def why_unavailable(self, device_type: str) -> str | None:
        """``unavailable(device_type)``, the plugin's check, run as foreign code: a check that raises
        (anything but Ctrl-C) makes the runtime unavailable, saying why, instead of stopping segbench."""
        try:
            with foreign_code():
                reason = self.unavailable(device_type)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            return f"its availability check raised {one_line(exc)}"
        return None if reason is None else str(reason)

    def validate(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"runtime name {self.name!r} must be lowercase snake case")
        if not (callable(self.prepare) and callable(self.unavailable)):
            raise ValueError(f"runtime {self.name!r}: prepare and unavailable must be callable")
        if not set(self.devices) <= {"cpu", "cuda"} or not self.devices:
            raise ValueError(f"runtime {self.name!r}: devices must be among cpu, cuda")


def valid_name(name: Any) -> bool:
    """Lowercase snake case, the whole text (``re.match`` with ``$`` would let ``"fcn\\n"`` through)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def natural_key(name: str) -> list[Any]:
    """Sort key that puts fcn8s before fcn16s before fcn32s."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class DuplicateNameError(UserError):
    """Two plugins registered the same name."""


class Registry:
    """Name -> spec tables for models/blocks and datasets, filled by the plugin hooks."""

    def __init__(self) -> None:
        self.models: dict[str, ModelSpec] = {}
        self.datasets: dict[str, DatasetSpec] = {}
        self.runtimes: dict[str, RuntimeSpec] = {}

    def add_model(self, spec: ModelSpec) -> None:
        spec.validate()
        _reject_duplicate("model", spec.name, self.models.get(spec.name), spec)
        self.models[spec.name] = spec

    def add_dataset(self, spec: DatasetSpec) -> None:
        spec.validate()
        _reject_duplicate("dataset", spec.name, self.datasets.get(spec.name), spec)
        self.datasets[spec.name] = spec

    def add_runtime(self, spec: RuntimeSpec) -> None:
        spec.validate()
        _reject_duplicate("runtime", spec.name, self.runtimes.get(spec.name), spec)
        self.runtimes[spec.name] = spec

    def runtime_list(self, selection: str) -> list[RuntimeSpec]:
        """``"torch,onnxruntime"`` (or ``"all"``) to specs, in the user's order."""
        names = [n.strip() for n in selection.split(",") if n.strip()]
        if not names:
            raise UserError(f"empty runtime selection {selection!r}; known: {', '.join(self.runtimes)}")
        if names == ["all"]:
            names = list(self.runtimes)
        for name in names:
            if name not in self.runtimes:
                raise UserError(_unknown("runtime", name, list(self.runtimes)))
        return [self.runtimes[n] for n in dict.fromkeys(names)]

    def names(self, kind: Kind | None = None) -> list[str]:
        return sorted((n for n, s in self.models.items() if kind is None or s.kind == kind), key=natural_key)

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise UserError(_unknown("model", name, self.names())) from None

    def select(self, selection: str | None, kind: Kind | None = "model") -> list[ModelSpec]:
        """Resolve ``"fcn8s,fast_scnn"``, globs (``"fcn*"``) and ``"all"`` to specs, in the user's order.

        ``None`` or ``"all"`` means every registered spec of ``kind``; an exact name selects its spec
        whatever its kind, so ``--models block_dsconv`` works too. An empty selection is an error.
        """
        known = self.names(kind)
        if selection is not None and not selection.strip(" ,"):
            raise UserError(
                f"empty model selection {selection!r}: give names or globs, or 'all'; known: {', '.join(self.names())}"
            )
        if selection is None or selection.strip() == "all":
            return [self.models[n] for n in known]
        chosen: list[str] = []
        for item in (part.strip() for part in selection.split(",")):
            if not item:
                continue
            if item == "all":
                matches = known
            elif item in self.models:
                matches = [item]
            else:
                matches = fnmatch.filter(self.names(), item) if _is_glob(item) else []
                if not matches:
                    raise UserError(_unknown("model", item, self.names()))
            chosen.extend(m for m in matches if m not in chosen)
        if not chosen:
            raise UserError(f"no model selected by {selection!r}; known: {', '.join(self.names())}")
        return [self.models[n] for n in chosen]

    def dataset(self, selection: str) -> tuple[DatasetSpec, str | None]:
        """Resolve ``"synthetic"`` or ``"folder:PATH"`` to its spec and path."""
        name, _, path = selection.partition(":")
        if name not in self.datasets:
            raise UserError(_unknown("dataset", name, sorted(self.datasets)))
        spec = self.datasets[name]
        if spec.needs_path and not path:
            raise UserError(f"dataset {name!r} needs a path: use --dataset {name}:PATH")
        if path and not spec.needs_path:
            raise UserError(f"dataset {name!r} takes no path; use --dataset {name}")
        return spec, path or None


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _reject_duplicate(what: str, name: str, old: Any, new: Any) -> None:
    if old is not None:
        raise DuplicateNameError(
            f"{what} name {name!r} is registered by two plugins: {old.plugin!r} and {new.plugin!r}; "
            "uninstall one of them or list it in SEGBENCH_DISABLE_PLUGINS"
        )


def _unknown(what: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; known: {', '.join(known) or 'none'}"
