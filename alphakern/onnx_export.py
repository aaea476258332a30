"""ONNX export of a discretised or folded network, for the runtimes people deploy on (onnxruntime,
and the private-inference frameworks that import ONNX, such as CrypTen).

``export_onnx`` uses torch's own exporter (``torch.onnx.export(dynamo=True)``: torch.export, then
onnxscript) with a dynamic batch dimension. It takes what ``discretize`` and ``fold`` return: exact
gates (nn.ReLU, nn.Identity, FixedSlopeReLU, FixedGate) export as ordinary ops; a learnable
AlphaGate (an alphakern custom op) has no ONNX form and is refused by name. Needs the packages of
the ``onnx`` extra: ``pip install onnx onnxscript onnxruntime``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from alphakern.files import atomic_write
from alphakern.modules import AlphaGate


def _check(model: nn.Module, example_input: torch.Tensor) -> None:
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor, got {type(example_input).__name__}")
    gates = [name for name, m in model.named_modules() if isinstance(m, AlphaGate)]
    if gates:
        raise ValueError(
            f"export_onnx: learnable gates have no ONNX form: {', '.join(gates[:5])}"
            f"{' ...' if len(gates) > 5 else ''}; make them exact first (alphakern.discretize)"
        )


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``model`` (eval mode) as an ONNX file at ``path``, the batch dimension dynamic; the file
    appears whole or not at all. Returns the path."""
    _check(model, example_input)
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it; say so before tracing)
    except ImportError as e:
        msg = "export_onnx needs the 'onnx' extra: pip install onnx onnxscript onnxruntime"
        raise RuntimeError(msg) from e
    was_training = model.training
    model.eval()
    # a batch of 2: a sample of batch 1 would specialise the exported graph to it
    x = example_input[:1].expand(2, *example_input.shape[1:]).contiguous()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim.AUTO},), verbose=False
            )
    finally:
        model.train(was_training)
    path = Path(path)
    atomic_write(path, program.save)
    return path
