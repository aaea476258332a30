"""alphakern: fused GPU kernels for the learnable activation R_α(x) = x + α·relu(−x)."""

from alphakern.functional import BACKENDS, alpha, alpha_relu, resolve_backend
from alphakern.modules import AlphaReLU

__all__ = ["BACKENDS", "AlphaReLU", "alpha", "alpha_relu", "resolve_backend"]
__version__ = "0.1.0"
