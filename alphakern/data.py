"""CIFAR-10/100 decoded once into uint8 tensors, kept on the training device and batched (and
augmented) there.

CIFAR-10 is read in two layouts: the standard ``cifar-10-batches-py`` pickles (read directly, so
copies whose md5 sums differ from torchvision's work) and an image-folder tree
``{train,test}/<class>/*.png|jpg``. CIFAR-100 is read from ``cifar-100-python/{train,test}`` (its
100 fine labels).
Decoded arrays are cached beside the data (or in ~/.cache/alphakern when that is read-only) and
the cache is invalidated when the source files change.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alphakern.files import atomic_write, leftover_temps

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PICKLE_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_VERSION = 1
DATASETS = ("cifar10", "cifar100")
IMAGE_SHAPE = (3, 32, 32)  # one CIFAR image, channels first


def probe(device: torch.device | str | None = None) -> torch.Tensor:
    """One zero CIFAR image (a batch of 1): the example input the graph tools trace, count and
    fold with (gate positions are the same for any image)."""
    return torch.zeros(1, *IMAGE_SHAPE, device=device)


NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
C100_DIR = "cifar-100-python"
C100_FILES = ("train", "test")


class DatasetError(Exception):
    """CIFAR-10 is malformed (or missing: DatasetNotFoundError); the message says what is wrong."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No CIFAR-10 where we looked; the message says what was looked for and how to get it."""


# What the CIFAR-10 "python version" pickles hold: dicts, lists, bytes/str and numpy arrays.
# Nothing else is unpickled, so a crafted file in a data directory cannot run code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes written by Python 3 at protocol 2
}
_LABEL_KEYS = (b"labels", "labels", b"fine_labels", "fine_labels")  # CIFAR-10, CIFAR-100 (fine)


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _how_to_get(root: Path) -> str:
    return (
        "Get CIFAR-10 in one of these ways:\n"
        f"  - prepare an offline copy: python ../shared/data/prepare_cifar10.py {root}  "
        "(from the repository root; pickle layout, --layout folder for images)\n"
        "  - download it with torchvision when online: add --download\n"
        "  - point --data-dir at a folder holding cifar-10-batches-py/ or {train,test}/<class>/ images"
    )


@dataclass
class Cifar10:
    """uint8 images [N, 3, 32, 32] and int64 labels [N] for both splits, on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str

    def to(self, device: torch.device | str) -> Cifar10:
        return Cifar10(
            *(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)), self.source
        )


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _load_pickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _DataUnpickler(f, encoding="bytes").load()
        data = d[b"data"] if b"data" in d else d["data"]
        labels = d[next(k for k in _LABEL_KEYS if k in d)]
        data = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(labels, dtype=np.int64)
    except Exception as e:
        raise DatasetError(f"{path} is not a readable CIFAR pickle batch ({type(e).__name__}: {e})") from e
    if len(labels) != len(data):
        raise DatasetError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _read_pickles(root: Path) -> tuple[np.ndarray, ...]:
    parts = [_load_pickle_batch(root / b) for b in TRAIN_BATCHES]
    tx, ty = _load_pickle_batch(root / TEST_BATCH)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tx, ty


def _folder_files(split_dir: Path) -> list[tuple[Path, int]]:
    out = []
    for label, cls in enumerate(CLASSES):
        d = split_dir / cls
        if d.is_dir():
            out += [(f, label) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    return out


def _read_folder(root: Path) -> tuple[np.ndarray, ...]:
    from PIL import Image

    arrays = []
    for split in ("train", "test"):
        files = _folder_files(root / split)
        imgs = np.empty((len(files), 3, 32, 32), dtype=np.uint8)
        for i, (f, _) in enumerate(files):
            try:
                img = np.asarray(Image.open(f).convert("RGB"))
            except Exception as e:
                raise DatasetError(f"{f} is not a readable image ({type(e).__name__}: {e})") from e
            if img.shape != (32, 32, 3):
                raise DatasetError(f"{f} is {img.shape[1]}x{img.shape[0]}, expected 32x32")
            imgs[i] = img.transpose(2, 0, 1)
        arrays += [imgs, np.array([lab for _, lab in files], dtype=np.int64)]
    return tuple(arrays)


def _read_c100(root: Path) -> tuple[np.ndarray, ...]:
    return (*_load_pickle_batch(root / "train"), *_load_pickle_batch(root / "test"))


def find_source(data_dir: Path, dataset: str = "cifar10") -> tuple[str, Path, list[Path]]:
    """(layout, root, source files) of the dataset's copy under data_dir, or DatasetError."""
    if dataset == "cifar100":
        for root in (data_dir / C100_DIR, data_dir):
            files = [root / f for f in C100_FILES]
            if all(f.is_file() for f in files):
                return "pickle100", root, files
        raise DatasetNotFoundError(
            f"No CIFAR-100 found under {data_dir}: looked for {C100_DIR}/{{train,test}} (the "
            "'python version' pickles, fine labels). Point --data-dir at the folder holding "
            f"{C100_DIR}/, or add --download to fetch it with torchvision when online."
        )
    for root in (data_dir / PICKLE_DIR, data_dir):
        files = [root / b for b in (*TRAIN_BATCHES, TEST_BATCH)]
        if all(f.is_file() for f in files):
            return "pickle", root, files
    for root in (data_dir, data_dir / "cifar10-jpeg", data_dir / "cifar10"):
        if (root / "train").is_dir() and (root / "test").is_dir():
            files = [f for s in ("train", "test") for f, _ in _folder_files(root / s)]
            if files:
                return "folder", root, files
    raise DatasetNotFoundError(
        f"No CIFAR-10 found under {data_dir}: looked for {PICKLE_DIR}/{{data_batch_1..5,test_batch}} "
        f"(pickle layout) and {{train,test}}/<class>/*.png|jpg (image folders, classes "
        f"{', '.join(CLASSES[:3])}, ...).\n" + _how_to_get(data_dir)
    )


def _cache_path(root: Path, key: str, dataset: str = "cifar10") -> Path:
    name = f".alphakern-{dataset}-{key}.npz"
    if os.access(root, os.W_OK):
        return root / name
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "alphakern" / f"{digest}{name}"


CACHED = ("train_x", "train_y", "test_x", "test_y")
STALE_WRITE_S = 3600.0  # a cache write takes seconds: a temporary file this old is a killed process's


def _read_cache(cache: Path) -> tuple[np.ndarray, ...] | None:
    """The cached arrays, or None where the file is not a whole cache (then the data is decoded again)."""
    try:
        with np.load(cache, allow_pickle=False) as z:  # arrays only: no code runs
            return tuple(z[k] for k in CACHED)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_cache(cache: Path, arrays: tuple[np.ndarray, ...]) -> None:
    """Write the cache atomically (two processes decoding at once each write a file of their own)."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would add ".npz" to a bare name
            np.savez(f, **dict(zip(CACHED, arrays, strict=True)))

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, write)
    except OSError:
        pass  # caching is an optimisation only


def load_cifar10(data_dir: str | Path, *, download: bool = False, use_cache: bool = True) -> Cifar10:
    """Read CIFAR-10 from data_dir (pickle or image-folder layout), decoding at most once."""
    return load_dataset("cifar10", data_dir, download=download, use_cache=use_cache)


def load_dataset(
    dataset: str, data_dir: str | Path, *, download: bool = False, use_cache: bool = True
) -> Cifar10:
    """Read ``dataset`` (one of DATASETS) from data_dir, decoding at most once."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    data_dir = Path(data_dir).expanduser()
    if download and not (data_dir / (PICKLE_DIR if dataset == "cifar10" else C100_DIR)).is_dir():
        import torchvision

        fetch = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
        fetch(str(data_dir), train=True, download=True)
    layout, root, files = find_source(data_dir, dataset)
    key = _fingerprint(files)
    cache = _cache_path(root, key, dataset)
    arrays = _read_cache(cache) if use_cache and cache.is_file() else None
    if arrays is None:
        readers = {"pickle": _read_pickles, "pickle100": _read_c100, "folder": _read_folder}
        arrays = readers[layout](root)
        if use_cache:
            for stale in cache.parent.glob(f".alphakern-{dataset}-*.npz") if cache.parent == root else ():
                stale.unlink(missing_ok=True)
            for tmp in leftover_temps(cache, older_than_s=STALE_WRITE_S):  # a killed process's write
                tmp.unlink(missing_ok=True)
            _write_cache(cache, arrays)
    tx, ty, ex, ey = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    if len(tx) == 0 or len(ex) == 0:
        raise DatasetError(f"{root}: the train or test split is empty.\n" + _how_to_get(data_dir))
    n_classes = NUM_CLASSES[dataset]
    for split, labels in (("train", ty), ("test", ey)):
        if int(labels.max()) >= n_classes or int(labels.min()) < 0:
            raise DatasetError(f"{root}: {split} labels outside 0..{n_classes - 1} ({dataset})")
    return Cifar10(tx, ty, ex, ey, f"{layout}:{root}")


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random (train, validation) split of range(n), 80/20 by default."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(round((1 - val_fraction) * n))
    return perm[:n_train], perm[n_train:]


PAD = 4  # --augment: random crops of the image zero-padded by 4 pixels, as He et al. train CIFAR


def crop_flip(
    images: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int = PAD
) -> torch.Tensor:
    """Random-crop-and-flip a batch in one gather, on its device, with no per-sample Python:
    ``images`` [B, C, H, W], ``shifts`` [B, 2] in 0..2·pad (the crop's corner in the padded image),
    ``flips`` [B] bool (mirror left-right). Pixels from the padding are 0."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = shifts[:, :1] + torch.arange(h, device=images.device)  # [B, H]
    j = torch.arange(w, device=images.device)
    cols = shifts[:, 1:] + torch.where(flips[:, None], w - 1 - j, j)  # [B, W], the flip folded in
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


class DeviceBatches:
    """Batches of float images (x/255, like ToTensor) cut from uint8 tensors already on the device.

    Shuffling uses a generator seeded by (seed, epoch), so an epoch's order does not depend on
    anything that ran before it: a resumed run sees the same batches. ``augment``: random crop
    (pad 4) and horizontal flip per image, drawn from that epoch's generator too, applied on the
    device (``crop_flip``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        channels_last: bool = False,
        augment: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.channels_last, self.augment = channels_last, augment

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n, device=self.labels.device)
        return torch.randperm(n, generator=self._generator(epoch)).to(self.labels.device)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)
        if self.augment:  # one draw per epoch from its own stream: the same for a resumed run
            g = self._generator(epoch + (1 << 40))
            shifts = torch.randint(0, 2 * PAD + 1, (len(order), 2), generator=g).to(order.device)
            flips = torch.randint(0, 2, (len(order),), generator=g).bool().to(order.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images.index_select(0, idx)
            if self.augment:
                span = slice(start, start + len(idx))
                x = crop_flip(x, shifts[span], flips[span])
            x = x.float().div_(255.0)
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            x = x.contiguous(memory_format=layout)
            yield x, self.labels.index_select(0, idx)
