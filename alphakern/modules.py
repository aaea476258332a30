"""``AlphaReLU``: a drop-in replacement for ``nn.ReLU`` that learns whether to stay non-linear."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alphakern.functional import alpha, alpha_relu


class AlphaReLU(nn.Module):
    """R_α(x) = x + α·relu(−x), α = σ((σ(γ) − ½)·ν) — PReLU with the learned slope 1 − α.

    ``gamma`` (0-dim parameter, init 0) is trained; ``nu`` (0-dim buffer, init 0, in the state
    dict) grows by ``nu_step`` at every forward in training mode, driving α to 1 (a ReLU) or 0
    (the identity). The update stays on the device: no host sync.
    """

    def __init__(self, nu_step: float = 0.01, *, backend: str | None = None) -> None:
        super().__init__()
        self.nu_step = float(nu_step)
        self.backend = backend
        self.gamma = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("nu", torch.tensor(0.0))

    def step_nu(self) -> Tensor:
        """ν for this forward: advanced by nu_step in training mode (on the device), as is."""
        if not self.training:
            return self.nu
        # A fresh tensor goes into the op (autograd saves it), then the buffer takes its value:
        # an in-place add would trip autograd's version check when a second forward runs
        # before backward.
        nu = self.nu + self.nu_step
        self.nu.copy_(nu)
        return nu

    def forward(self, x: Tensor) -> Tensor:
        return alpha_relu(x, self.gamma, self.step_nu(), backend=self.backend)

    @property
    def alpha(self) -> Tensor:
        """The current α (a detached 0-dim tensor on the module's device)."""
        with torch.no_grad():
            return alpha(self.gamma, self.nu).detach()

    def extra_repr(self) -> str:
        # Printing reads two scalars off the device; forward never does.
        if self.gamma.device.type == "meta":
            return f"nu_step={self.nu_step}"
        return f"nu_step={self.nu_step}, gamma={self.gamma.item():.4g}, alpha={self.alpha.item():.4g}"


class EagerAlphaReLU(AlphaReLU):
    """The original study's unfused expression ``x + α·relu(−x)`` with the same γ/ν state.

    For A/B runs against the fused op: same parameters, schedule and state_dict keys.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.compiler.is_compiling():
            # AOTAutograd may recompute α in the backward from the ν buffer *after* this forward
            # advanced it, giving silently wrong γ gradients (pytorch/pytorch PR #197039).
            # AlphaReLU is immune: its op saves the ν it used.
            raise RuntimeError(
                "EagerAlphaReLU cannot be trained under torch.compile (PyTorch recomputes reads "
                "of mutated buffers in the backward, so γ's gradient would be wrong); use AlphaReLU"
            )
        return x + alpha(self.gamma, self.step_nu()) * torch.relu(-x)


def alpha_layers(model: nn.Module) -> list[tuple[str, AlphaReLU]]:
    """The model's learnable activations, in registration (= forward, for sequential models) order,
    with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AlphaReLU)]
