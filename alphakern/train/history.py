"""The per-step history of a run's gates: one row per training step and gated layer, columns by name.

Layer gates keep (γ, ν) — α follows from them; gates per channel/element keep summaries that do not
grow with the number of gates. Rows are written on the device (no host sync) and moved to the CPU
once per epoch. The checkpoint holds ``data`` as it is, so a resumed run continues the same table.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.gate_rules import LINEAR_BELOW, NONLINEAR_ABOVE
from alphakern.ops.core import alpha  # unchecked: applied to whole history tables

LAYER_COLUMNS = ("gamma", "nu")
GRANULAR_COLUMNS = ("gamma_mean", "nu", "alpha_mean", "alpha_std", "nonlinear_fraction", "linear_fraction")


class History:
    def __init__(self, layer_names: list[str], granular: bool, data: Tensor | None = None) -> None:
        self.layer_names = list(layer_names)
        self.granular = granular
        self.columns = GRANULAR_COLUMNS if granular else LAYER_COLUMNS
        self.data = torch.zeros(0, len(self.layer_names), len(self.columns)) if data is None else data

    def column(self, name: str) -> Tensor:
        """[steps, layers] of one column."""
        return self.data[:, :, self.columns.index(name)]

    def epoch_buffer(self, steps: int, device: torch.device) -> Tensor:
        return torch.zeros(steps, *self.data.shape[1:], device=device)

    def record(self, layers: list, out: Tensor) -> None:
        """One step's row for ``layers`` (AlphaReLU modules) into ``out``, on the device."""
        with torch.no_grad():
            if not self.granular:
                torch.stack([torch.stack([m.gamma.detach(), m.nu]) for m in layers], out=out)
                return
            rows = []
            for m in layers:
                a = m.differentiable_alpha().float()  # each method's gate its own α
                rows.append(torch.stack([
                    m.gamma.detach().mean(), m.nu, a.mean(), a.std(correction=0),
                    (a > NONLINEAR_ABOVE).float().mean(), (a < LINEAR_BELOW).float().mean(),
                ]))  # fmt: skip
            torch.stack(rows, out=out)

    def extend(self, rows: Tensor) -> None:
        self.data = torch.cat([self.data, rows.cpu()])

    @property
    def gamma(self) -> Tensor:
        """γ (its mean, for gates per channel/element) per step and layer, as each forward saw it."""
        return self.column("gamma_mean" if self.granular else "gamma")

    @property
    def nu(self) -> Tensor:
        return self.column("nu")

    def alpha(self) -> Tensor:
        """α (mean over the gates) per step and layer as seen by each training forward."""
        return self.column("alpha_mean") if self.granular else alpha(self.gamma, self.nu)

    def alpha_band(self) -> Tensor | None:
        """[steps, layers, (mean, std)] of α for gates per channel/element (the plot's band)."""
        if not self.granular:
            return None
        i = self.columns.index("alpha_mean")
        return self.data[:, :, i : i + 2]

    def series(self) -> dict:
        """For metrics.json: the layer names and one list per layer for each quantity."""
        if self.granular:
            out = {"gamma_mean": self.gamma, "alpha_mean": self.alpha()}
            out.update({k: self.column(k) for k in GRANULAR_COLUMNS[3:]})
        else:
            out = {"gamma": self.gamma, "alpha": self.alpha()}
        return dict(layers=self.layer_names, **{k: v.T.tolist() for k, v in out.items()})
