"""alphakern: fused Triton, CUDA and native CPU kernels for the learnable activation
R_α(x) = x + α·relu(−x), its generalisation to any activation, G_α,f(x) = x + α·(f(x) − x), and
the tools around them (linearize, relu_count, nonlinearity_count, budgets, discretize, fold)."""

from alphakern.folding import fold, fold_padding, fold_report, fold_units
from alphakern.functional import (
    ACTIVATIONS,
    BACKENDS,
    KINDS,
    alpha,
    alpha_relu,
    bn_add_gate,
    bn_gate,
    gate,
    resolve_backend,
)
from alphakern.graph import (
    apply_keep,
    discretize,
    format_report,
    fuse_bn,
    layer_verdicts,
    linearize,
    nonlinearity_count,
    relu_count,
    unfuse_bn,
)
from alphakern.models import AlphaCNN
from alphakern.modules import (
    AlphaGate,
    AlphaReLU,
    BatchNormAddGate,
    BatchNormGate,
    EagerAlphaReLU,
    FixedGate,
    FixedSlopeReLU,
    alpha_layers,
    materialize,
)
from alphakern.onnx_export import export_onnx
from alphakern.ops.core.activations import register_activation

__all__ = [
    # functional: the ops
    "ACTIVATIONS",  # deprecated alias of KINDS
    "BACKENDS",
    "KINDS",
    "alpha",
    "alpha_relu",
    "bn_add_gate",
    "bn_gate",
    "gate",
    "resolve_backend",
    # modules
    "AlphaGate",
    "AlphaReLU",
    "BatchNormAddGate",
    "BatchNormGate",
    "EagerAlphaReLU",
    "FixedGate",
    "FixedSlopeReLU",
    "alpha_layers",
    "materialize",
    # graph tools
    "apply_keep",
    "discretize",
    "format_report",
    "fuse_bn",
    "layer_verdicts",
    "linearize",
    "nonlinearity_count",
    "register_activation",
    "relu_count",
    "unfuse_bn",
    # folding
    "fold",
    "fold_padding",
    "fold_report",
    "fold_units",
    "export_onnx",
    # the study's network
    "AlphaCNN",
]
__version__ = "0.1.0"
