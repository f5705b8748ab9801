"""Train one model, offline, and print one line per epoch.

    python -m trainables --model resnet20 --data mnist-5k --epochs 2 --seed 0 [--width 0.5] [--json]

Every training option in trainables/config.py is a flag (`--weight-decay 5e-4`, `--schedule cosine`,
`--hidden [256,128]`); every value, the integers of --split-seed and --limit too, is read by the
spec's own YAML parser (trainables/yaml_values.py: 5e-4, 1E-3, .5 and 1e3 are numbers) and checked
like a study spec's; a bad one is one line and exit code 2. Piped into `head`, it ends quietly.
"""
from __future__ import annotations

import argparse
import json
import sys
from numbers import Integral

from .config import TrainingOptions
from .data import DATASETS, DatasetUnavailable, load_data
from studyfiles.pipes import quiet_on_broken_pipe
from .train import Trainer
from .yaml_values import parse_yaml_value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trainables", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist-5k", help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--data-root", default=None, help="folder with downloaded/cached datasets")
    p.add_argument("--split-seed", default="0", help="seed of the train/val split")
    p.add_argument("--limit", default=None, help="use only the first N training samples")
    p.add_argument("--test", action="store_true", help="report test metrics after the last epoch")
    p.add_argument("--json", action="store_true", help="print JSON lines (with per-layer gradient flow)")
    for key, default in TrainingOptions().model_dump().items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, default=argparse.SUPPRESS,
                       metavar="VALUE", help=f"default: {default}")
    return p.parse_args(argv)


def parse_option(key: str, text: str):
    """A flag's value, read as the spec reads it; ValueError 'key: ...' (one line) if not YAML."""
    try:
        return parse_yaml_value(text)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


def training_config(args: argparse.Namespace) -> TrainingOptions:
    """The training options given as flags, read as a spec reads them, with every default filled in
    and every option checked (ValueError, one line)."""
    given = {k: parse_option(k, getattr(args, k)) for k in TrainingOptions.model_fields if hasattr(args, k)}
    return TrainingOptions.resolve(given)


def parse_int(key: str, text: str | None, low: int) -> int | None:
    if text is None:
        return None
    value = parse_option(key, text)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{key}: {text!r} is not allowed; expected an integer >= {low}")
    return int(value)


def format_epoch(m: dict, epochs: int) -> str:
    text = f"epoch {m['epoch']:>3}/{epochs}  train_loss {m['train_loss']:.4f}  train_acc {m['train_acc']:.4f}"
    if "val_acc" in m:
        text += f"  val_loss {m['val_loss']:.4f}  val_acc {m['val_acc']:.4f}"
    text += f"  lr {m['lr']:.3g}  {m['epoch_seconds']:.1f}s  {m['samples_per_second']:.0f} samples/s"
    if "gf_first_last_ratio" in m:
        text += f"  grad first/last {m['gf_first_last_ratio']:.3g}"
    if "test_acc" in m:
        text += f"  test_loss {m['test_loss']:.4f}  test_acc {m['test_acc']:.4f}"
    return text + ("" if m["status"] in ("running", "completed") else f"  [{m['status']}]")


@quiet_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = training_config(args)
        split_seed, limit = parse_int("split_seed", args.split_seed, 0), parse_int("limit", args.limit, 1)
        if args.data not in DATASETS:
            raise ValueError(f"data: {args.data!r} is not allowed; choose one of: {', '.join(DATASETS)}")
        data = load_data(args.data, args.data_root, split_seed=split_seed)
    except (ValueError, DatasetUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if limit:
        data = data.subset(train=limit)
    status = "completed"
    for metrics in Trainer(config, data).run(test=args.test):
        status = metrics["status"]
        print(json.dumps(metrics) if args.json else format_epoch(metrics, config.epochs), flush=True)
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
