"""alphakern: fused Triton, CUDA and native CPU kernels for the learnable activation
R_α(x) = x + α·relu(−x), its generalisation to any activation, G_α,f(x) = x + α·(f(x) − x), and
the tools around them (linearize, relu_count, nonlinearity_count, budgets, discretize, fold)."""

from alphakern.complexity import discretize, layer_verdicts
from alphakern.convert import linearize, nonlinearity_count, relu_count
from alphakern.fold import fold, fold_padding, fold_report, fold_units
from alphakern.functional import ACTIVATIONS, BACKENDS, alpha, alpha_relu, gate, resolve_backend
from alphakern.models import AlphaCNN
from alphakern.modules import AlphaGate, AlphaReLU, EagerAlphaReLU, alpha_layers

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "AlphaGate",
    "AlphaCNN",
    "AlphaReLU",
    "EagerAlphaReLU",
    "alpha",
    "alpha_layers",
    "alpha_relu",
    "discretize",
    "fold",
    "fold_padding",
    "fold_report",
    "fold_units",
    "gate",
    "layer_verdicts",
    "linearize",
    "nonlinearity_count",
    "relu_count",
    "resolve_backend",
]
__version__ = "0.1.0"
