"""Small networks the graph and training tests share."""

import torch
import torch.nn.functional as F
from torch import nn


class Small(nn.Module):
    """Three ReLU sites of different sizes (16·32·32, 16·32·32 at 32², 8·16·16 at 16², per sample),
    written three ways (F.relu, torch.relu, Tensor.relu)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = torch.relu(h + 1)
        return self.fc(self.c2(h).relu().mean((2, 3)))
