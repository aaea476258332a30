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
import re
from pathlib import Path

import torch
from torch import nn

from alphakern.files import atomic_write, new_token
from alphakern.modules import AlphaGate
from alphakern.ops.core.checks import check_module, check_tensor

# ONNX files are protobufs, which hold at most 2 GB: above this, the weights go in a file of their own
# (torch's ONNXProgram.save decides at the same size)
EXTERNAL_DATA_BYTES = 1536 * 1024**2


def _check(model: nn.Module, example_input: torch.Tensor) -> None:
    check_module(model)
    check_tensor(example_input)
    gates = [name for name, m in model.named_modules() if isinstance(m, AlphaGate)]
    if gates:
        raise ValueError(
            f"export_onnx: learnable gates have no ONNX form: {', '.join(gates[:5])}"
            f"{' ...' if len(gates) > 5 else ''}; make them exact first (alphakern.discretize)"
        )


def export_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, external_data: bool | None = None
) -> Path:
    """Write ``model`` (eval mode) as an ONNX file at ``path``, the batch dimension dynamic. Returns the
    path. ``external_data``: the weights in a file of their own beside it, ``NAME.onnx.TOKEN.data``
    (None: where they need it, over ``EXTERNAL_DATA_BYTES``).

    The ONNX file appears whole or not at all, and always names a complete data file: a new one each
    time, written before the ONNX file is renamed into place; the data file of the ONNX file it
    replaced is removed afterwards (only one named as this function names them)."""
    _check(model, example_input)
    try:  # torch's exporter needs onnxscript (and its onnx_ir): say so before tracing
        import onnx_ir
        import onnxscript  # noqa: F401
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
    weights = program.model.graph.initializers.values()
    if external_data is None:
        external_data = (
            sum(v.const_value.nbytes for v in weights if v.const_value is not None) > EXTERNAL_DATA_BYTES
        )
    replaced = _data_files_of(path)
    if external_data:
        data = path.with_name(f"{path.name}.{new_token()}.data")
        try:  # the data file is written beside the temporary ONNX file, under its final name
            atomic_write(path, lambda tmp: onnx_ir.save(program.model, tmp, external_data=data.name))
        except BaseException:
            data.unlink(missing_ok=True)
            raise
    else:
        atomic_write(path, lambda tmp: onnx_ir.save(program.model, tmp))
    for old in replaced:
        old.unlink(missing_ok=True)
    return path


def _data_files_of(path: Path) -> list[Path]:
    """The data files an earlier export_onnx at ``path`` wrote and its ONNX file names; none for a
    file that is not one (something else at that name is never a reason to remove a file)."""
    import onnx

    pattern = re.compile(re.escape(path.name) + r"\.[0-9a-f]+\.data")
    if not path.is_file() or not any(pattern.fullmatch(p.name) for p in path.parent.iterdir()):
        return []  # nothing of ours beside it: the file (perhaps 2 GB of inline weights) is not read
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file: whatever it names is not ours
        return []
    names = {
        entry.value
        for tensor in proto.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location" and pattern.fullmatch(entry.value)
    }
    return [path.with_name(n) for n in sorted(names)]
