"""Runtimes: how a model and an example input become something to time (a `base.Session`).

A runtime is a plugin (hook ``register_runtimes``); the built-in ones are PyTorch (``torch_runtime``),
ONNX Runtime and OpenVINO (both fed by one ONNX export, ``onnx_export``). They sit beside
``segbench.measure`` in the layers: primitives, no rows, no output.
"""
