"""Tiny synthetic CIFAR-10 copies in both layouts (the real one is never needed by the tests)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from alphakern.data import CLASSES


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy data: each class has its own mean colour, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    base = (np.arange(10)[:, None] * np.array([25, 60, 95]) % 256)[labels]  # [n, 3]
    imgs = base[:, :, None, None] + rng.normal(0, 30, (n, 3, 32, 32))
    return np.clip(imgs, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_pickles(root: Path, n_per_batch: int = 40, n_test: int = 50) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        x, y = _images(n_per_batch, seed=i)
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": x.reshape(len(x), 3072), b"labels": y.tolist()}, f, protocol=2)
    x, y = _images(n_test, seed=99)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": x.reshape(len(x), 3072), b"labels": y.tolist()}, f, protocol=2)
    return root


def write_folder(root: Path, n_train: int = 60, n_test: int = 30) -> Path:
    from PIL import Image

    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        x, y = _images(n, seed)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            d = root / split / CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:04d}.png")
    return root


def write_cifar100(root: Path, n_train: int = 60, n_test: int = 30) -> Path:
    """The 'python version' layout: cifar-100-python/{train,test} with fine and coarse labels."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        rng = np.random.default_rng(seed)
        fine = rng.integers(0, 100, n)
        x = np.clip((fine * 37 % 256)[:, None] + rng.normal(0, 20, (n, 3072)), 0, 255)
        d_ = {b"data": x.reshape(n, 3072).astype(np.uint8), b"fine_labels": fine.tolist(),
              b"coarse_labels": (fine // 5).tolist(), b"filenames": [b"x.png"] * n}  # fmt: skip
        with open(d / name, "wb") as f:
            pickle.dump(d_, f, protocol=2)
    return root
