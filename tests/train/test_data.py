"""Reading CIFAR-10 in both layouts, the decode cache, the split, the device batches, errors."""

import os
import pickle
import time

import pytest
import torch

from alphakern.data import (
    STALE_WRITE_S,
    DatasetError,
    DatasetNotFoundError,
    DeviceBatches,
    load_cifar10,
    split_indices,
)
from tests.cifar_fixtures import write_folder, write_pickles


def test_pickle_layout(tmp_path):
    write_pickles(tmp_path)
    d = load_cifar10(tmp_path)
    assert d.train_x.shape == (200, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (50, 3, 32, 32) and d.train_y.dtype == torch.int64
    assert d.source.startswith("pickle:")
    # the pickle rows are CHW: the first row's bytes are channel 0's first row of pixels
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert torch.equal(d.train_x[0, 0, 0], torch.from_numpy(raw[0, :32]))


def test_folder_layout(tmp_path):
    write_folder(tmp_path)
    d = load_cifar10(tmp_path)
    assert d.train_x.shape == (60, 3, 32, 32) and d.test_x.shape == (30, 3, 32, 32)
    assert d.source.startswith("folder:") and set(d.train_y.tolist()) <= set(range(10))


def test_cache_is_used_and_invalidated(tmp_path):
    write_folder(tmp_path)
    first = load_cifar10(tmp_path)
    caches = list(tmp_path.glob(".alphakern-cifar10-*.npz"))
    assert len(caches) == 1
    assert torch.equal(load_cifar10(tmp_path).train_x, first.train_x)  # from the cache
    # change one source image: a new fingerprint, a new decode, the stale cache removed
    img = next((tmp_path / "train").rglob("*.png"))
    from PIL import Image

    Image.new("RGB", (32, 32), (255, 0, 0)).save(img)
    os.utime(img, ns=(1, 1))
    again = load_cifar10(tmp_path)
    assert not torch.equal(again.train_x, first.train_x)
    assert len(list(tmp_path.glob(".alphakern-cifar10-*.npz"))) == 1
    assert list(tmp_path.glob(".alphakern-cifar10-*.npz")) != caches


def test_a_cache_that_is_not_whole_is_decoded_again_and_rewritten(tmp_path):
    """A truncated cache (a disk that filled, a copy cut short) is read as no cache: the data is
    decoded again and the cache rewritten whole, no temporary file left beside it."""
    write_pickles(tmp_path)
    first = load_cifar10(tmp_path)
    (cache,) = tmp_path.rglob(".alphakern-cifar10-*.npz")  # beside the pickles
    whole = cache.read_bytes()
    cache.write_bytes(whole[: len(whole) // 2])
    again = load_cifar10(tmp_path)
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    assert cache.read_bytes() == whole
    assert [p.name for p in cache.parent.glob(".alphakern-*")] == [cache.name]


def test_a_killed_writes_temporary_cache_is_removed_once_old_never_while_fresh(tmp_path):
    """A process killed while writing the cache leaves its temporary file: the next decode removes it
    once it is older than any write takes (STALE_WRITE_S), never one that may be a write in flight."""
    write_pickles(tmp_path)
    load_cifar10(tmp_path)
    (cache,) = tmp_path.rglob(".alphakern-cifar10-*.npz")
    old, fresh = (cache.with_name(f".{cache.name}.{t}.tmp") for t in ("0123abcd", "4567ef01"))
    for p in (old, fresh):
        p.write_bytes(b"half a cache")
    then = time.time() - STALE_WRITE_S - 60
    os.utime(old, (then, then))
    cache.unlink()  # decoded again: the cleanup runs where a cache is written
    load_cifar10(tmp_path)
    assert not old.exists() and fresh.exists() and cache.is_file()


def test_missing_data_says_what_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_cifar10(tmp_path / "nowhere")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DatasetError)
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "cifar-10-batches-py" in msg
    assert "prepare_cifar10.py" in msg and "--download" in msg and "{train,test}/<class>" in msg


def test_malformed_pickle(tmp_path):
    write_pickles(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3 is not a readable CIFAR pickle batch") as e:
        load_cifar10(tmp_path, use_cache=False)
    assert not isinstance(e.value, FileNotFoundError)  # the file is there; it is malformed


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + os.environ["ALPHAKERN_PWNED"],))


def test_crafted_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    """A data batch someone else wrote cannot run code: only numpy arrays, dicts, lists load."""
    write_pickles(tmp_path)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ALPHAKERN_PWNED", str(marker))
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _RunsCode(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"data_batch_2 .*refusing to load posix\.system"):
        load_cifar10(tmp_path, use_cache=False)
    assert not marker.exists()


def test_wrong_image_size(tmp_path):
    write_folder(tmp_path)
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "test" / "cat" / "bad.png")
    with pytest.raises(DatasetError, match="bad.png is 16x16, expected 32x32"):
        load_cifar10(tmp_path, use_cache=False)


def test_split_is_fixed_and_disjoint():
    a_train, a_val = split_indices(1000, 0.2, seed=0)
    b_train, b_val = split_indices(1000, 0.2, seed=0)
    assert torch.equal(a_train, b_train) and len(a_train) == 800 and len(a_val) == 200
    assert len(set(a_train.tolist()) | set(a_val.tolist())) == 1000


def test_device_batches_scale_and_order():
    imgs = (
        torch.arange(10 * 3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).view(10, 3, 32, 32)
    )
    labels = torch.arange(10)
    b = DeviceBatches(imgs, labels, 4, shuffle=True, seed=3)
    batches = list(b.epoch(0))
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(b) == 3
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10))
    x, y = batches[0]
    assert x.dtype == torch.float32 and torch.equal(x, imgs[y].float() / 255)
    assert torch.equal(seen, torch.cat([y for _, y in b.epoch(0)]))  # same epoch, same order
    assert not torch.equal(seen, torch.cat([y for _, y in b.epoch(1)]))


def _crop_flip_oracle(img: torch.Tensor, dy: int, dx: int, flip: bool, pad: int = 4) -> torch.Tensor:
    """One image, the obvious way: zero-pad, slice, mirror."""
    padded = torch.zeros(img.shape[0], img.shape[1] + 2 * pad, img.shape[2] + 2 * pad, dtype=img.dtype)
    padded[:, pad:-pad, pad:-pad] = img
    out = padded[:, dy : dy + img.shape[1], dx : dx + img.shape[2]]
    return out.flip(-1) if flip else out


def test_crop_flip_matches_per_image_oracle():
    from alphakern.data import crop_flip

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    shifts = torch.randint(0, 9, (16, 2), generator=g)
    shifts[0], shifts[1] = torch.tensor([0, 0]), torch.tensor([8, 8])  # the extreme corners
    flips = torch.randint(0, 2, (16,), generator=g).bool()
    out = crop_flip(imgs, shifts, flips)
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    for i in range(16):
        want = _crop_flip_oracle(imgs[i], int(shifts[i, 0]), int(shifts[i, 1]), bool(flips[i]))
        assert torch.equal(out[i], want), i
    centred = crop_flip(imgs, torch.full((16, 2), 4), torch.zeros(16, dtype=torch.bool))
    assert torch.equal(centred, imgs)


@pytest.mark.parametrize("channels_last", [False, True])
def test_augmented_batches_are_reproducible_per_epoch(channels_last):
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (20, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(20)
    b = DeviceBatches(imgs, labels, 8, shuffle=True, seed=3, augment=True, channels_last=channels_last)
    first = [x for x, _ in b.epoch(0)]
    again = [x for x, _ in b.epoch(0)]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))  # a resumed run's batches
    plain = DeviceBatches(imgs, labels, 8, shuffle=True, seed=3)
    changed = [not torch.equal(x, p) for (x, _), (p, _) in zip(b.epoch(0), plain.epoch(0), strict=True)]
    assert any(changed)  # augmentation does something, and the labels/order are plain's
    assert [y.tolist() for _, y in b.epoch(0)] == [y.tolist() for _, y in plain.epoch(0)]
    assert first[0].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_cifar100_layout_reads_fine_labels(tmp_path):
    from alphakern.data import load_dataset
    from tests.cifar_fixtures import write_cifar100

    write_cifar100(tmp_path, n_train=50, n_test=20)
    d = load_dataset("cifar100", tmp_path)
    assert d.train_x.shape == (50, 3, 32, 32) and d.test_x.shape == (20, 3, 32, 32)
    import pickle

    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        fine = pickle.load(f, encoding="bytes")[b"fine_labels"]
    assert d.train_y.tolist() == fine and int(d.train_y.max()) > 9  # the fine labels, not coarse
    with pytest.raises(DatasetNotFoundError, match="No CIFAR-100 found"):
        load_dataset("cifar100", tmp_path / "none")
    with pytest.raises(ValueError, match="dataset must be one of cifar10, cifar100"):
        load_dataset("svhn", tmp_path)
