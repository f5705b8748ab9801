"""Training throughput: archstudy's loop against the reference lab's style and a bare PyTorch loop.

    python bench/throughput.py                      # CPU: mlp (MNIST-shaped), resnet20, vgg16 at width 0.5
    python bench/throughput.py --device cuda        # GPU: resnet18 and vgg16, CIFAR-shaped, full width

All three loops run the same model, data, batch size and number of steps, in this one process:
  (a) archstudy: trainables.train.Trainer.train_epoch, gradient flow on (and once off, to price it)
  (b) lab style: a torchvision Dataset returning PIL images through ToTensor + Normalize, DataLoader
      batch 64, num_workers 0 (as in the reference lab's notebook)
  (c) bare: a minimal raw-tensor loop (shuffle, index a batch, forward, backward, step; no metrics)
Augmentation is off in all three so that they do identical work. Each is timed `--repeats` times,
interleaved, and the best (least disturbed) time is kept. Achieved FLOP/s (from torch's FlopCounterMode on one step) is
compared with a large matmul's FLOP/s measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms
from torchvision.datasets import VisionDataset

from trainables.data import Data, Split
from trainables.models import build_model, init_weights
from trainables.train import Trainer


class LabStyleDataset(VisionDataset):
    """Like torchvision's MNIST/CIFAR10: uint8 images, one PIL image per __getitem__, then transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        super().__init__(root="", transform=transform)
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        img = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        return self.transform(img), int(self.labels[i])


def make_data(channels: int, size: int, n: int, device: str) -> tuple[Data, np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    x = (raw.float() / 255 - 0.5) / 0.25
    split = Split(x=x, y=labels)
    data = Data(name="bench", train=split, val=split, test=split, num_classes=10, in_channels=channels,
                image_size=size, augment=False).to(device)
    return data, raw.numpy(), labels.numpy()


def time_it(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_model(name, width, channels, size, steps, batch, device, repeats):
    n = steps * batch
    data, raw, labels = make_data(channels, size, n, device)
    base = {"model": name, "width": width, "batch_size": batch, "epochs": 1000, "lr": 0.01,
            "schedule": "constant", "device": device}
    ours = Trainer({**base, "grad_flow": True}, data)
    ours_off = Trainer({**base, "grad_flow": False}, data)

    # (b) the lab's input pipeline feeding the same kind of model and optimiser
    lab_model = build_model(name, in_channels=channels, width=width).to(device)
    init_weights(lab_model)
    lab_opt = torch.optim.SGD(lab_model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.25] * channels)])
    loader = DataLoader(LabStyleDataset(raw, labels, tf), batch_size=batch, shuffle=True, num_workers=0)

    def lab():
        lab_model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(lab_model(x), y)
            lab_opt.zero_grad()
            loss.backward()
            lab_opt.step()

    # (c) bare loop on the same on-device tensors
    bare_model = build_model(name, in_channels=channels, width=width).to(device)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x_all, y_all = data.train.x, data.train.y

    def bare():
        bare_model.train()
        order = torch.randperm(n, device=device)   # a new shuffle each epoch, as any real loop
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(bare_model(x_all[idx]), y_all[idx])
            bare_opt.zero_grad()
            loss.backward()
            bare_opt.step()

    loops = {"archstudy": ours.train_epoch, "archstudy (no grad flow)": ours_off.train_epoch,
             "lab style": lab, "bare": bare}
    for fn in loops.values():   # warm-up: allocator, kernels, cudnn autotune
        fn()
    times = {k: [] for k in loops}
    for _ in range(repeats):
        for k, fn in loops.items():
            times[k].append(time_it(fn))
    rates = {k: n / min(v) for k, v in times.items()}   # best of repeats: least disturbed by noise

    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(bare_model(x_all[:batch]), y_all[:batch])
        loss.backward()
    flops_per_sample = counter.get_total_flops() / batch
    return rates, flops_per_sample


def matmul_flops(device: str, n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an n x n matmul in `dtype` (default fp32), best of `reps` (a practical peak for this
    device; bench/gpu_check.py asks for bf16, the precision the GPU loop trains in)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    return 2 * n ** 3 / min(time_it(lambda: a @ b) for _ in range(reps))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", default=None, help="comma-separated subset of the cases, e.g. mlp")
    args = p.parse_args()
    if args.device == "cpu":   # (name, width, channels, size, steps)
        cases = [("mlp", 1.0, 1, 28, 1000), ("resnet20", 0.5, 3, 32, 30), ("vgg16", 0.5, 3, 32, 12)]
    else:
        cases = [("mlp", 1.0, 1, 28, 300), ("resnet18", 1.0, 3, 32, 100), ("vgg16", 1.0, 3, 32, 100)]
    if args.models:
        cases = [c for c in cases if c[0] in args.models.split(",")]
    peak = matmul_flops(args.device)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}; matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'model':<16}{'archstudy':>11}{'no gflow':>10}{'lab':>9}{'bare':>9}"
          f"{'a/b':>7}{'a/c':>7}{'gflow cost':>11}{'GFLOP/s':>9}{'of peak':>8}")
    for name, width, channels, size, steps in cases:
        rates, flops = bench_model(name, width, channels, size, steps, args.batch, args.device, args.repeats)
        a, off, b, c = (rates[k] for k in ("archstudy", "archstudy (no grad flow)", "lab style", "bare"))
        achieved = a * flops
        label = f"{name}@{width:g}"
        print(f"{label:<16}{a:>11.0f}{off:>10.0f}{b:>9.0f}{c:>9.0f}{a / b:>7.2f}{a / c:>7.2f}"
              f"{1 - a / off:>10.1%}{achieved / 1e9:>9.1f}{achieved / peak:>8.1%}")
    print("rates in samples/s (best of repeats); a/b and a/c are archstudy over lab style and bare")


if __name__ == "__main__":
    main()
