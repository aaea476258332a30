"""Our own equivalent of the original study's training loop, kept as the benchmarks' baseline.

Same pipeline as the notebook: a map-style dataset that turns each uint8 image into a PIL image
and then a tensor with ToTensor, torch DataLoader (batch 64, shuffle, no workers), the unfused
R_α module that grows ν and calls ``.item()`` on α and γ of every layer at every training
forward, and ``loss.item()`` / ``.sum().item()`` in the loop.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class PilCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: uint8 HWC → PIL → ToTensor."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor) -> None:
        from torchvision import transforms

        self.images = images_nchw.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(np.asarray(self.images[i]))), self.labels[i]


class NotebookNonLinearity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("nu", torch.tensor(0.0))
        self.alpha_history: list[float] = []
        self.gamma_history: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.nu += 0.01
        alpha = torch.sigmoid((torch.sigmoid(self.gamma) - 0.5) * self.nu)
        if self.training:  # two host syncs per layer per step, as in the study
            self.alpha_history.append(alpha.item())
            self.gamma_history.append(self.gamma.item())
        return x + alpha * F.relu(-x)


class NotebookCNN(nn.Module):
    def __init__(self, softmax: bool = True) -> None:
        super().__init__()
        self.conv1, self.bn1, self.nl1 = (
            nn.Conv2d(3, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            NotebookNonLinearity(),
        )
        self.conv2, self.bn2, self.nl2 = (
            nn.Conv2d(64, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            NotebookNonLinearity(),
        )
        self.conv3, self.bn3, self.nl3 = (
            nn.Conv2d(64, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            NotebookNonLinearity(),
        )
        self.fc = nn.Linear(64 * 4 * 4, 10)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.nl1(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(self.nl2(self.bn2(self.conv2(x))), 2)
        x = F.max_pool2d(self.nl3(self.bn3(self.conv3(x))), 2)
        x = self.fc(x.view(-1, 64 * 4 * 4))
        return F.softmax(x, dim=1) if self.softmax else x


def loaders(train_x, train_y, test_x, test_y, seed: int = 0, batch_size: int = 64):
    full = PilCifar(train_x, train_y)
    n_train = int(0.8 * len(full))
    g = torch.Generator().manual_seed(seed)
    trainset, valset = torch.utils.data.random_split(full, [n_train, len(full) - n_train], generator=g)
    dl = torch.utils.data.DataLoader
    return (
        dl(trainset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
        dl(valset, batch_size=batch_size, shuffle=False),
        dl(PilCifar(test_x, test_y), batch_size=batch_size, shuffle=False),
    )


def evaluate(model: nn.Module, loader, device) -> tuple[float, float]:
    model.eval()
    criterion = nn.CrossEntropyLoss()
    correct = total = 0
    running = 0.0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            outputs = model(images)
            running += criterion(outputs, labels).item()
            correct += (outputs.argmax(1) == labels).sum().item()
            total += labels.size(0)
    return running / len(loader), 100 * correct / total


def train_steps(model, optimizer, loader, device, max_steps: int | None = None) -> tuple[int, float]:
    """The notebook's inner loop; returns (images seen, seconds)."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    running_loss, running_correct, seen = 0.0, 0, 0
    t0 = time.perf_counter()
    for i, (inputs, labels) in enumerate(loader):
        if max_steps is not None and i >= max_steps:
            break
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        running_correct += (outputs.argmax(1) == labels).sum().item()
        seen += labels.size(0)
    return seen, time.perf_counter() - t0
