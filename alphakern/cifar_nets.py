"""ReLU networks for 32×32 images, as the private-inference literature trains them on CIFAR.

``relu_network(name)`` builds one with plain ReLUs; the trainer passes it through
``alphakern.linearize`` (every ReLU application gets its own gate), as a user would their own.

- ``resnet20``: He et al. 2016's CIFAR ResNet, 3 stages × 3 BasicBlocks of 16/32/64 channels,
  identity shortcuts zero-padded where the width doubles (their option A), 0.27M parameters.
- ``resnet18``: torchvision's, with the CIFAR stem SNL uses (3×3 stride-1 conv, no max-pool).
- ``vgg11_bn``: torchvision's features; global average pooling and one linear layer instead of
  the 4096-wide ImageNet classifier (and its two ReLUs), as CIFAR VGGs do.
- ``mobilenet_v2``: torchvision's (ReLU6), adapted to 32×32 as the CIFAR ports do: stride 1 in the
  stem conv and in the first stride-2 stage (24 channels), so the last stage runs at 4×4, not 1×1.
- ``efficientnet_b0``: torchvision's (SiLU, squeeze-excitation), adapted the same way: stride 1 in
  the stem and in the first stride-2 stage (24 channels). Its SiLUs are gated (the SE block's
  sigmoid gate is not an activation ``linearize`` gates); one epoch of 40,000 images takes about
  9 minutes on the 2-core CPU with channel gates (0.85 s a step of 64, measured 2026-12-05).
- ``vit``: torchvision's ``VisionTransformer`` sized for 32×32 CIFAR: patch 8 (16 patches and the
  class token: 17 tokens), 6 layers of ViT-Tiny's width (hidden 192, 3 heads, MLP 768, GELU).
  45.7 MMACs per image (``torch.utils.flop_counter``), 2.7M parameters; sized so an epoch of
  40,000 images takes minutes on the 2-core CPU (README). With ``--granularity feature`` its GELUs
  get a gate per hidden feature (what ``fold`` turns into narrow MLPs); ``--granularity channel``
  gates each token instead (PriViT's per-token gates).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

RELU_NETWORKS = ("resnet20", "resnet18", "vgg11_bn", "mobilenet_v2", "efficientnet_b0", "vit")


class _PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (no parameters).

    The subsampling is a 1×1 average pool of stride 2, which equals ``x[:, :, ::2, ::2]`` exactly but
    keeps its gradient in x's memory format: the slice's backward writes a contiguous gradient, so
    a channels_last network met a contiguous gradient at every stage's end (a layout copy in the
    next op's backward).
    """

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(F.avg_pool2d(x, 1, 2), (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)  # called twice, as torchvision's BasicBlock does
        self.shortcut = _PadShortcut(c_out - c_in) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes: int = 10, blocks: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, c_in = [], 16
        for i, width in enumerate((16, 32, 64)):
            for b in range(blocks):
                stages.append(_BasicBlock(c_in, width, 2 if i > 0 and b == 0 else 1))
                c_in = width
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def relu_network(name: str, num_classes: int = 10) -> nn.Module:
    """One of RELU_NETWORKS with its own activations (ReLU; ReLU6 for mobilenet_v2, SiLU for
    efficientnet_b0); ValueError listing them for another name."""
    if name == "resnet20":
        return ResNet20(num_classes)
    import torchvision

    if name == "resnet18":
        model = torchvision.models.resnet18(num_classes=num_classes)
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
        return model
    if name == "vgg11_bn":
        model = torchvision.models.vgg11_bn(num_classes=num_classes)
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, num_classes)
        return model
    if name == "mobilenet_v2":
        model = torchvision.models.mobilenet_v2(num_classes=num_classes)
        model.features[0][0].stride = (1, 1)  # the stem
        model.features[2].conv[1][0].stride = (1, 1)  # the depthwise conv of the first stride-2 block
        return model
    if name == "efficientnet_b0":
        model = torchvision.models.efficientnet_b0(num_classes=num_classes)
        model.features[0][0].stride = (1, 1)  # the stem
        model.features[2][0].block[1][0].stride = (1, 1)  # the depthwise conv of the first stride-2 block
        return model
    if name == "vit":
        return torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=6, num_heads=3, hidden_dim=192, mlp_dim=768,
            num_classes=num_classes,
        )  # fmt: skip
    raise ValueError(f"model must be one of cnn, {', '.join(RELU_NETWORKS)}, got {name!r}")
