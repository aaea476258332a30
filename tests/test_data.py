"""Reading CIFAR-10 in both layouts, the decode cache, the split, the device batches, errors."""

import os
import pickle

import pytest
import torch

from alphakern.data import DatasetError, DatasetNotFoundError, DeviceBatches, load_cifar10, split_indices
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
    with pytest.raises(DatasetError, match="data_batch_3 is not a readable CIFAR-10 pickle batch") as e:
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
