"""alphakern: fused Triton, CUDA and native CPU kernels for the learnable activation
R_α(x) = x + α·relu(−x), and the tools around it (linearize, relu_count, budgets, discretize)."""

from alphakern.complexity import discretize, layer_verdicts
from alphakern.convert import linearize, relu_count
from alphakern.fold import fold, fold_report
from alphakern.functional import BACKENDS, alpha, alpha_relu, resolve_backend
from alphakern.models import AlphaCNN
from alphakern.modules import AlphaReLU, EagerAlphaReLU, alpha_layers

__all__ = [
    "BACKENDS",
    "AlphaCNN",
    "AlphaReLU",
    "EagerAlphaReLU",
    "alpha",
    "alpha_layers",
    "alpha_relu",
    "discretize",
    "fold",
    "fold_report",
    "layer_verdicts",
    "linearize",
    "relu_count",
    "resolve_backend",
]
__version__ = "0.1.0"
