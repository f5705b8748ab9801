"""The training loop: one run of one model on one dataset, advanced an epoch at a time.

    python -m trainables --model resnet20 --data mnist-5k --epochs 2 --seed 0

`Trainer(config, data)` builds everything from a plain config dict, checked and completed into
`TrainingOptions` (trainables/config.py); `trainer.run()` yields one metrics dict per epoch.
`state_dict()` / `load_state_dict()` capture model, optimiser, epoch and RNG (the lr schedule
follows from the epoch), so a resumed run continues exactly where it stopped. Nothing here knows
about Ray: study/trainable.py wraps it.
"""
from __future__ import annotations

import math
import time
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F

from .config import TrainingOptions
from .cost import model_cost
from .data import Data, augment_batch
from .gradflow import GradFlow, probe_steps, weights_in_forward_order
from .models import build_model, init_weights
from .signalprop import PROBE_SAMPLES, SignalProp

EVAL_BATCH = 1024   # samples per evaluation step: large, since no activations are kept


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model, opts: TrainingOptions) -> torch.optim.Optimizer:
    if opts.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay,
                                 betas=(opts.momentum, 0.999))
    return torch.optim.SGD(model.parameters(), lr=opts.lr, momentum=opts.momentum,
                           nesterov=opts.nesterov and opts.momentum > 0, weight_decay=opts.weight_decay)


def lr_factor(opts: TrainingOptions, step: int, total_steps: int) -> float:
    """Multiplier of the peak lr at a given optimiser step (schedules are stepped per batch)."""
    progress = step / max(1, total_steps)
    if opts.schedule == "multistep":   # x gamma at each milestone: a fraction of all the steps
        passed = sum(step >= m * total_steps for m in opts.milestones)
        return opts.gamma ** passed
    if opts.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if opts.schedule == "onecycle":    # linear warm-up for 30% from lr/25, then cosine to ~0
        warm = 0.3
        if progress < warm:
            return 1 / 25 + (1 - 1 / 25) * progress / warm
        return 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm)))
    return 1.0


class Trainer:
    """One training run. `config`: training options (a dict, checked and completed with the
    defaults: ValueError, one line, for a bad one; or TrainingOptions), `data`: its dataset."""

    def __init__(self, config: Mapping | TrainingOptions, data: Data):
        opts = self.opts = TrainingOptions.resolve(config)
        self.device = pick_device(opts.device)
        cuda = self.device.type == "cuda"
        torch.manual_seed(opts.seed)
        self.data = data.to(self.device)
        self.model = build_model(opts.model, num_classes=data.num_classes,
                                 in_channels=data.in_channels, width=opts.width,
                                 batchnorm=opts.batchnorm, hidden=opts.hidden,
                                 image_size=data.image_size)
        init_weights(self.model)
        # parameters and forward FLOPs per sample, reported with every epoch (trainables/cost.py):
        # one forward pass of one sample on the CPU, before the model moves to its device
        self.cost = model_cost(self.model, data.train.x[:1].cpu())
        self.channels_last = cuda and self.model.family != "mlp"   # faster convs on tensor cores
        self.model.to(self.device, memory_format=torch.channels_last if self.channels_last
                      else torch.contiguous_format)
        self.amp = opts.precision == "bf16" or (opts.precision == "auto" and cuda)
        if cuda:
            torch.backends.cudnn.benchmark = True   # autotune conv kernels for fixed shapes
        self.forward = torch.compile(self.model) if opts.compile else self.model
        self.optimizer = make_optimizer(self.model, opts)
        n = len(self.data.train.y)
        self.steps_per_epoch = math.ceil(n / opts.batch_size)
        self.total_steps = self.steps_per_epoch * opts.epochs
        self.generator = torch.Generator(self.device).manual_seed(opts.seed)  # shuffle + augment
        self.gradflow = (GradFlow(weights_in_forward_order(self.model, self._prep(self.data.train.x[:1])))
                         if opts.grad_flow else None)
        self.probes = probe_steps(self.steps_per_epoch, opts.grad_flow_batches)
        # signal propagation rides on grad_flow: the same diagnostics switch (trainables/signalprop.py)
        self.signalprop = (SignalProp(self.model, self._prep(self.data.train.x[:PROBE_SAMPLES]))
                           if opts.grad_flow else None)
        self.epoch = 0   # epochs completed

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _loss(self, x, y, smoothing: float = 0.0):
        if self.amp:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self.forward(self._prep(x)).float()
        else:
            out = self.forward(self._prep(x))
        return F.cross_entropy(out, y, label_smoothing=smoothing), out

    def set_lr(self, step: int) -> float:
        """Apply the schedule for a global optimiser step (derived from the epoch: no extra state)."""
        lr = self.opts.lr * lr_factor(self.opts, step, self.total_steps)
        if lr != self.optimizer.param_groups[0]["lr"]:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        return lr

    def train_epoch(self) -> dict:
        """One pass over the training split; returns loss, accuracy, lr and timing."""
        train, bs = self.data.train, self.opts.batch_size
        self.model.train()
        first_step = self.epoch * self.steps_per_epoch
        lr = self.set_lr(first_step)
        order = torch.randperm(len(train.y), generator=self.generator, device=self.device)
        self._sync()
        start = time.perf_counter()
        xs, ys = train.x[order], train.y[order]   # one gather per epoch; batches are then views
        losses, preds = [], []   # per step: mean loss and predictions, reduced once at the end
        for step in range(self.steps_per_epoch):
            x, y = xs[step * bs:(step + 1) * bs], ys[step * bs:(step + 1) * bs]
            if self.data.augment:
                x = augment_batch(x, self.generator)
            loss, out = self._loss(x, y, self.opts.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            probe = self.gradflow is not None and step in self.probes
            if probe:
                self.gradflow.before_step()
            self.optimizer.step()
            if probe:
                self.gradflow.after_step()
            self.set_lr(first_step + step + 1)
            losses.append(loss.detach())
            preds.append(out.argmax(1))
        sizes = torch.full((self.steps_per_epoch,), float(bs), device=self.device)
        sizes[-1] = len(ys) - bs * (self.steps_per_epoch - 1)   # the last batch may be smaller
        loss_sum = (torch.stack(losses) * sizes).sum().item()
        correct = (torch.cat(preds) == ys).sum().item()
        self._sync()
        seconds = time.perf_counter() - start
        n = len(train.y)
        return {"train_loss": loss_sum / n, "train_acc": correct / n, "lr": lr,
                "train_seconds": seconds, "samples_per_second": n / seconds}

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Loss and accuracy on 'train', 'val' or 'test', in eval mode."""
        data = getattr(self.data, split)
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, len(data.y), EVAL_BATCH):
            x, y = data.x[i:i + EVAL_BATCH], data.y[i:i + EVAL_BATCH]
            loss, out = self._loss(x, y)
            loss_sum += loss * len(y)
            correct += (out.argmax(1) == y).sum()
        n = len(data.y)
        return {f"{split}_loss": loss_sum.item() / n, f"{split}_acc": correct.item() / n}

    def run(self, test: bool = False) -> Iterator[dict]:
        """Train the remaining epochs, yielding each epoch's metrics. Stops early with status
        'diverged' when the training loss is not finite; the last epoch has status 'completed'
        (and test metrics when `test`). With grad_flow on, `signal_prop` holds the per-block rows
        after the epoch, preceded in the first epoch by those at initialisation (epoch 0)."""
        signal_at_init = (self.signalprop.measure(0) if self.signalprop is not None and self.epoch == 0
                          else [])
        while self.epoch < self.opts.epochs:
            start = time.perf_counter()
            metrics = self.train_epoch()
            self.epoch += 1
            diverged = not math.isfinite(metrics["train_loss"])
            if not diverged:
                metrics.update(self.evaluate("val"))
            if self.gradflow is not None:
                metrics["grad_flow"], summary = self.gradflow.epoch_summary()
                metrics.update(summary)
            if self.signalprop is not None:
                metrics["signal_prop"] = signal_at_init + self.signalprop.measure(self.epoch)
                signal_at_init = []
            done = diverged or self.epoch == self.opts.epochs
            if done and test and not diverged:
                metrics.update(self.evaluate("test"))
            metrics["status"] = "diverged" if diverged else "completed" if done else "running"
            metrics["epoch_seconds"] = time.perf_counter() - start
            metrics.update(self.cost)
            yield {"epoch": self.epoch, **metrics}
            if diverged:
                return

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: loadable with torch.load(weights_only=True)."""
        return {"epoch": self.epoch, "config": self.opts.model_dump(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = state["epoch"]


def train(config: Mapping | TrainingOptions, data: Data, test: bool = False) -> Iterator[dict]:
    """Convenience: build a Trainer and yield its epochs."""
    yield from Trainer(config, data).run(test=test)
