"""Reading W&B's offline run files back in tests, without wandb's own reader or the network, and
checking a study's runs against its tables (`wandb_problems`)."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")   # compared with epochs.parquet


def wandb_records(path: Path) -> list:
    """The protobuf Records of an offline .wandb file (a LevelDB-style log; what `wandb sync` reads)."""
    from wandb.proto import wandb_internal_pb2
    raw, block = path.read_bytes(), 32768
    ident, magic, _version = struct.unpack("<4sHB", raw[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    records, pos, data = [], 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:                                    # block trailer
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if (checksum, length, kind) == (0, 0, 0):       # zero padding
            pos += left
            continue
        chunk = raw[pos + 7:pos + 7 + length]
        assert len(chunk) == length and zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, \
            f"{path}: corrupt record at byte {pos}"
        pos += 7 + length
        data = chunk if kind in (1, 2) else data + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            records.append(record)
    return records


def trial_epochs(epochs: pd.DataFrame, phase: str, trial_id: str) -> pd.DataFrame:
    return epochs[(epochs.phase == phase) & (epochs.trial_id == trial_id)].sort_values("epoch")


def wandb_run(out: Path, study: str, trial_id: str) -> SimpleNamespace:
    """Every offline folder of the run `<study>-<trial_id>` (a restarted trial resumes its run in a
    new folder), read back: run records, history rows {key: value} and whether it was finished."""
    folders = sorted((out / "wandb").glob(f"offline-run-*-{study}-{trial_id}"))
    runs, history, exits = [], [], []
    for folder in folders:
        for record in wandb_records(folder / f"run-{study}-{trial_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                runs.append(record.run)
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                history.append((folder, row))
            elif kind == "exit":
                exits.append(record.exit.exit_code)
    return SimpleNamespace(folders=folders, runs=runs, history=history, exits=exits)


def wandb_problems(out: Path, spec_hash: str, commit: str, trials: pd.DataFrame,
                   epochs: pd.DataFrame, gradflow: pd.DataFrame) -> list[str]:
    """What is wrong with each trial's W&B run (an empty list: every run holds everything)."""
    problems = []
    for row in trials.itertuples():
        where = f"{row.phase} trial {row.trial_id} ({row.arm}, {row.status}, {row.epochs_run} epochs)"
        run = wandb_run(out, row.study, row.trial_id)
        if not run.folders:
            problems.append(f"{where}: no offline run folder")
            continue
        if not run.runs:
            problems.append(f"{where}: no run record in {[f.name for f in run.folders]} (empty log)")
            continue
        meta = run.runs[0]
        config = {item.key: json.loads(item.value_json) for item in meta.config.update}
        params = json.loads((out / row.path / "params.json").read_text())
        if meta.run_id != f"{row.study}-{row.trial_id}" or meta.run_group != row.study \
                or meta.job_type != row.phase or row.arm not in meta.tags:
            problems.append(f"{where}: id/group/job_type/tags {meta.run_id, meta.run_group, meta.job_type, list(meta.tags)}")
        wrong = {k: (config.get(k), v) for k, v in params.items() if config.get(k) != v}
        if wrong or config.get("spec_hash") != spec_hash or config.get("git_commit") != commit:
            problems.append(f"{where}: config differs: {wrong}, spec_hash {config.get('spec_hash')}, "
                            f"git_commit {config.get('git_commit')}")
        rows = {}
        for folder, h in run.history:
            if h["epoch"] in rows and any(rows[h["epoch"]][1][m] != h[m] for m in METRICS):
                problems.append(f"{where}: epoch {h['epoch']} logged twice with different values")
            rows[h["epoch"]] = (folder, h)
        expected = trial_epochs(epochs, row.phase, row.trial_id)
        if sorted(rows) != expected.epoch.tolist():
            problems.append(f"{where}: W&B history has epochs {sorted(rows)}, the tables "
                            f"{expected.epoch.tolist()}; finished: {bool(run.exits)}")
            continue
        for e in expected.itertuples():
            folder, h = rows[e.epoch]
            if h["_step"] != e.epoch or any(h[m] != getattr(e, m) for m in METRICS):
                problems.append(f"{where}: epoch {e.epoch} differs from epochs.parquet")
            layers = gradflow[(gradflow.phase == row.phase) & (gradflow.trial_id == row.trial_id)
                              & (gradflow.epoch == e.epoch)].sort_values("index")
            if h.get("grad_flow/_type") != "table-file":
                problems.append(f"{where}: epoch {e.epoch} has no gradient flow table")
                continue
            table = json.loads((folder / "files" / h["grad_flow/path"]).read_text())
            logged = [dict(zip(table["columns"], r)) for r in table["data"]]
            if [(r["layer"], r["grad_norm"]) for r in logged] != list(zip(layers.layer, layers.grad_norm)):
                problems.append(f"{where}: epoch {e.epoch} gradient flow table differs from gradflow.parquet")
        if run.exits[-1:] != [0]:
            problems.append(f"{where}: run not finished (exit records {run.exits})")
    return problems
