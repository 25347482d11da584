"""Runtimes: how a model and an example input become something to time (a `segbench.measure.session.Session`).

A runtime is a plugin (hook ``register_runtimes``); the built-in ones are PyTorch (``torch_runtime``),
ONNX Runtime and OpenVINO (both fed by one ONNX export, ``onnx_export``). They sit one layer above
``segbench.measure``: they import its session types, faults and ``quiet``, and nothing in
``segbench.measure`` imports them. Primitives still: no rows, no output.
"""
