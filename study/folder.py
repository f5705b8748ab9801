"""Checks on a study folder before anything runs in it: a new one must be writable and free, an old
one must still hold the study it started as.

    check_new_study(spec)            # `archstudy run`: refuse an existing study or unwritable storage
    check_unchanged(out, spec, state)  # `archstudy resume`: refuse a spec.yaml edited since the start

study.json (read by studyfiles/state.py) keeps the resolved spec the study started with (key "spec", next to its "spec_hash"), so
that `resume` can name what changed; folders written before it was kept are checked by hash alone.
"""
from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from pathlib import Path

from studyfiles.errors import StudyError
from studyfiles.spec_data import canonical_hash, with_later_keys
from studyfiles.storage import Store

from .spec import StudySpec, spec_from_dict
from .spec_errors import SpecError
from .spec_file import _load_yaml, resolved, spec_hash

MIN_FREE_MB = 100   # below this a study can't keep its checkpoints, tables and W&B runs


def check_new_study(spec: StudySpec) -> Store:
    """Refuse, before anything runs or is written, a study folder that already holds a study or
    storage this process cannot write to."""
    store = Store(spec.out_dir())
    if store.exists("spec.yaml") or (store.local / "spec.yaml").exists():
        raise StudyError(f"{store} already holds a study; use `archstudy resume "
                         f"{shlex.quote(str(store))}` or pick another --name")
    check_writable(store.local)
    return store


def check_writable(folder: Path) -> None:
    """Raise a one-line StudyError unless this process can create `folder` and write in it, with at
    least MIN_FREE_MB free; leaves nothing behind (the probe goes into the nearest existing
    ancestor and is removed)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".archstudy-write-probe-") as probe:
            probe.write(b"0" * 4096)
            probe.flush()
        free_mb = shutil.disk_usage(existing).free / 2**20
    except OSError as e:
        raise StudyError(f"storage: cannot write to {folder} ({e.strerror or e}); choose a writable "
                         "storage path with --storage or the spec's storage key") from None
    if free_mb < MIN_FREE_MB:
        raise StudyError(f"storage: only {free_mb:.1f} MB free at {existing}; a study needs at least "
                         f"{MIN_FREE_MB} MB (checkpoints, tables, W&B runs): free some space or "
                         "choose another --storage")


def spec_changes(original: dict, current: dict, path: str = "") -> list[str]:
    """What differs between two resolved specs, as short phrases: 'arm 'x' added', 'search.
    trials_per_arm 3 -> 4'. Arms are matched by name."""
    if path == "arms" and isinstance(original, list) and isinstance(current, list):
        before = {a.get("name"): a for a in original if isinstance(a, dict)}
        after = {a.get("name"): a for a in current if isinstance(a, dict)}
        changes = [f"arm {n!r} added" for n in after if n not in before]
        changes += [f"arm {n!r} removed" for n in before if n not in after]
        changes += [f"arm {n!r} changed" for n in after if n in before and after[n] != before[n]]
        if not changes and list(before) != list(after):
            changes.append("arms reordered")
        return changes
    if isinstance(original, dict) and isinstance(current, dict):
        return [change for key in dict.fromkeys([*original, *current])
                for change in spec_changes(original.get(key), current.get(key),
                                           f"{path}.{key}" if path else str(key))]
    if original == current:
        return []
    show = lambda v: json.dumps(v) if len(json.dumps(v)) <= 40 else "..."   # noqa: E731
    return [f"{path} {show(original)} -> {show(current)}"]


def check_unchanged(out: Path, spec: StudySpec, state: dict) -> None:
    """Refuse to continue a study whose spec.yaml was edited after it started (a study's phases,
    Optuna studies and Tune experiments all follow the spec it started with)."""
    started = state.get("spec_hash")
    if started is None:   # written before study.json kept the hash: nothing to compare with
        return
    if isinstance(state.get("spec"), dict):
        saved = with_later_keys(state["spec"])   # the keys added since, as the study ran
        try:   # the same defaults on both sides, whichever archstudy wrote the folder
            original = resolved(spec_from_dict(saved))
        except SpecError:
            original = saved
        changes = spec_changes(original, resolved(spec))
        if not changes:
            return
        what = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        where = 'the original is under "spec" in study.json'
    else:
        raw = _load_yaml((out / "spec.yaml").read_text(encoding="utf-8-sig"), str(out / "spec.yaml"))
        if started in (spec_hash(spec), canonical_hash(raw)):
            return
        what = "this folder keeps only the original's hash, so what changed cannot be named"
        where = "undo the edit"
    raise StudyError(f"{out / 'spec.yaml'} has changed since the study started (spec hash "
                     f"{started} -> {spec_hash(spec)}): {what}. A study continues only with the spec "
                     f"it started with: restore spec.yaml ({where}), or start a new study with "
                     "`archstudy run SPEC --name NEW_NAME`")
