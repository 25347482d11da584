"""The built-in plugin: FCN-32s/16s/8s, Fast-SCNN, the conv blocks, the datasets and the runtimes.

It uses only the public plugin API, exactly like a third-party package (see ``plugins/segbench-unet``;
``hookimpl`` is imported from its home, ``segbench.hookspecs``, which ``segbench.hookimpl`` re-exports);
model code is imported inside the builders, so listing specs never imports or builds a network.

It is the composition root: the one module of the bottom (contract) layer that names higher layers,
``segbench.models``, ``segbench.data`` and ``segbench.runtimes``, as strings (`_lazy`), imported only
when a builder runs. The import graph (tests/test_architecture.py) cannot see these edges; its layer
table says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from segbench.hookspecs import hookimpl
from segbench.registry import DatasetSpec, ModelSpec, RuntimeSpec

FCN_PAPER = "Long et al., FCN, CVPR 2015"
FAST_SCNN_PAPER = "Poudel et al., Fast-SCNN, BMVC 2019"
MOBILENET_PAPER = "Howard et al., MobileNets, 2017, sec. 3.1"
BLOCK_DEFAULTS = {"kernel_size": 3, "in_channels": 128, "out_channels": 128, "stride": 1}


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A function that imports ``module.name`` only when called, passing every argument through."""

    def build(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    build.__qualname__ = f"{module}.{name}"
    return build


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    for name, variant, stride in (("fcn32s", "FCN32s", 32), ("fcn16s", "FCN16s", 16), ("fcn8s", "FCN8s", 8)):
        register(
            ModelSpec(
                name=name,
                family="fcn",
                builder=_lazy("segbench.models.fcn", variant),
                default_size=(512, 512),
                default_num_classes=21,
                description=f"VGG16 FCN, finest skip at stride {stride}, learned transposed-conv upsampling",
                reference=FCN_PAPER,
            )
        )
    register(
        ModelSpec(
            name="fast_scnn",
            family="fast_scnn",
            builder=_lazy("segbench.models.fast_scnn", "FastSCNN"),
            default_size=(1024, 2048),
            default_num_classes=19,
            description="two-branch real-time network: learning to downsample, bottlenecks, PPM, fusion",
            reference=FAST_SCNN_PAPER,
        )
    )
    for name, class_name, what in (
        ("block_standard", "ConvBNReLU", "standard KxK conv + BN + ReLU"),
        ("block_dsconv", "DepthwiseSeparableConv", "KxK depthwise + BN, 1x1 pointwise + BN + ReLU"),
    ):
        register(
            ModelSpec(
                name=name,
                kind="block",
                family="conv_block",
                builder=_lazy("segbench.models.blocks", class_name),
                default_size=(64, 64),
                default_num_classes=None,
                description=what,
                reference=MOBILENET_PAPER,
                default_options=BLOCK_DEFAULTS,
            )
        )


DATASETS = (
    # name, class, needs a path, fixed class count, description
    (
        "synthetic",
        "SyntheticDataset",
        False,
        None,
        "generated in memory from the seed: shapes and textures, fixed train/val split",
    ),
    (
        "folder",
        "FolderDataset",
        True,
        None,
        "PATH/images + PATH/masks matched by file stem; masks are PNGs of class ids",
    ),
    ("voc", "VOCDataset", True, 21, "PASCAL VOC 2012 layout (JPEGImages, SegmentationClass, ImageSets/Segmentation)"),
    (
        "cityscapes",
        "CityscapesDataset",
        True,
        19,
        "Cityscapes leftImg8bit + gtFine labelIds, mapped to the 19 train ids",
    ),
)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    for name, class_name, needs_path, num_classes, description in DATASETS:
        register(
            DatasetSpec(
                name=name,
                builder=_lazy(f"segbench.data.{name}", class_name),
                description=description,
                needs_path=needs_path,
                num_classes=num_classes,
            )
        )


RUNTIMES = (
    # name, module, devices, precisions, switches, description
    (
        "torch",
        "torch_runtime",
        ("cpu", "cuda"),
        ("fp32", "fp16", "bf16"),
        ("channels_last", "compile", "cuda_graph", "fold_bn"),
        "PyTorch eager, with casts, channels_last, compile, CUDA graphs",
    ),
    (
        "onnxruntime",
        "onnxruntime_runtime",
        ("cpu", "cuda"),
        ("fp32", "int8"),
        ("fold_bn",),
        "ONNX Runtime (dynamo ONNX export; CPU provider, CUDA provider with onnxruntime-gpu)",
    ),
    (
        "openvino",
        "openvino_runtime",
        ("cpu",),
        ("fp32", "int8"),
        ("fold_bn",),
        "OpenVINO on the CPU, from the same ONNX export",
    ),
)


@hookimpl
def register_runtimes(register: Callable[[RuntimeSpec], None]) -> None:
    for name, module, devices, precisions, switches, description in RUNTIMES:
        register(
            RuntimeSpec(
                name=name,
                description=description,
                devices=devices,
                precisions=precisions,
                switches=frozenset(switches),
                unavailable=_lazy(f"segbench.runtimes.{module}", "unavailable"),
                prepare=_lazy(f"segbench.runtimes.{module}", "prepare"),
            )
        )
