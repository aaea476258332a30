"""The reference CNN of the study: three conv3×3–BatchNorm–activation–maxpool blocks and a linear head."""

from __future__ import annotations

from torch import Tensor, nn

from alphakern.cifar_nets import RELU_NETWORKS
from alphakern.modules import AlphaReLU, EagerAlphaReLU, materialize

# the reference CNN's choices of activation (--activation): not the gate's f (ops.core.activations)
CNN_ACTIVATIONS = ("alpha", "alpha-eager", "relu", "identity")
HEADS = ("logits", "softmax")
# "cnn": the study's network (AlphaCNN); the others are ReLU networks passed through linearize
MODELS = ("cnn", *RELU_NETWORKS)


def make_activation(
    activation: str, *, nu_step: float = 0.01, granularity: str = "layer", backend: str | None = None
) -> nn.Module:
    if activation == "alpha":
        return AlphaReLU(nu_step, granularity=granularity, backend=backend)
    if activation == "alpha-eager":
        return EagerAlphaReLU(nu_step, granularity=granularity)
    if activation == "relu":
        return nn.ReLU()
    if activation == "identity":
        return nn.Identity()
    raise ValueError(f"activation must be one of {list(CNN_ACTIVATIONS)}, got {activation!r}")


class AlphaCNN(nn.Module):
    """conv3×3(3→64)–BN–act–pool, twice more with 64→64, then flatten(64·4·4) → Linear(→10).

    ``head="softmax"`` reproduces the study, which applied Softmax before CrossEntropyLoss;
    ``"logits"`` (default) is what cross-entropy expects. ``granularity``: one gate per layer (the
    study's), per channel or per element; channel/element γ are created by the first forward
    (``materialize`` runs one on a dummy batch).
    """

    def __init__(
        self,
        activation: str = "alpha",
        head: str = "logits",
        *,
        width: int = 64,
        num_classes: int = 10,
        nu_step: float = 0.01,
        granularity: str = "layer",
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
        self.head = head
        layers: list[nn.Module] = []
        c_in = 3
        for _ in range(3):
            layers += [
                nn.Conv2d(c_in, width, 3, padding=1),
                nn.BatchNorm2d(width),
                make_activation(activation, nu_step=nu_step, granularity=granularity, backend=backend),
                nn.MaxPool2d(2),
            ]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width * 4 * 4, num_classes)

    def materialize(self) -> AlphaCNN:
        """Create lazy (per-channel/per-element) γ now (see ``modules.materialize``)."""
        return materialize(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc(self.features(x).flatten(1))
        return out.softmax(dim=1) if self.head == "softmax" else out
