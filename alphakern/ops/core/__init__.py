"""What every backend needs, one home each: the α formula (``alpha``), input checks and the names
they accept (``checks``), γ's granularity (``granularity``), dense layouts (``layout``) and how the
fused backends see x for granular gates (``gate_layout``)."""

from alphakern.ops.core.alpha import alpha, alpha_terms
from alphakern.ops.core.checks import (
    BACKEND_CHOICES,
    BACKEND_NAMES,
    KERNEL_DTYPES,
    check_backend,
    check_choice,
    check_gamma,
    check_grad,
    check_inputs,
    check_scalar,
)
from alphakern.ops.core.granularity import GRANULARITIES, granularity_of

__all__ = [
    "BACKEND_CHOICES",
    "BACKEND_NAMES",
    "GRANULARITIES",
    "KERNEL_DTYPES",
    "alpha",
    "alpha_terms",
    "check_backend",
    "check_choice",
    "check_gamma",
    "check_grad",
    "check_inputs",
    "check_scalar",
    "granularity_of",
]
