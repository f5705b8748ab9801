"""Which trials a study runs: the search units (one per arm and search replicate), the configs of
their search trials, each unit's winner and the confirmation runs that repeat it over the seeds.

Search replicates. `search.replicates: R` runs R independent searches per arm, each with its own
Optuna study and ASHA (the "unit" that study/searcher.py and study/asha.py key on), its own sampler
seed, its own training seed for its search trials and the full `trials_per_arm` budget; each
unit's winner is confirmed over every seed, so an arm's answer can be compared across searches.
With R == 1 a unit is its arm, named as before replicates existed (a study started then resumes
unchanged); with R > 1, replicate k of arm `a` is the unit `a/r<k>` (arm names hold no '/'), whose
Optuna study is `<study>/a/r<k>`.

Split seeds. The spec's `split` says on which train/val split a trial trains (its config's
`split_seed`, which study/trainable.py hands to trainables.data.resplit): search trials on split
seed 0; under `per_seed` a confirmation run with seed s on split seed s, the same split for every
arm under seed s (so comparing arms stays paired), under `fixed` on split seed 0.

Trial configs carry `replicate` only when R > 1 and `split_seed` only under `per_seed`: a study with
one search per arm and a fixed split hands its trials the configs it always did.
"""
from __future__ import annotations

import sys

from studyfiles.errors import StudyError


def search_seed(spec, replicate: int = 0) -> int:
    """The training seed of a replicate's search trials: one that no confirmation run (nor another
    replicate) uses, so that each confirmation run is an independent re-run of the chosen
    configuration (with a confirmation seed equal to it, one of an arm's runs would repeat the very
    search trial that won, and the arm's mean would carry that selection's luck)."""
    return max(spec.seeds) + 1 + replicate


def search_seeds(spec) -> list[int]:
    return [search_seed(spec, k) for k in range(spec.search.replicates)]


def unit_name(arm: str, replicate: int, replicates: int) -> str:
    """'a' with one replicate, 'a/r<k>' with several: the key of the arm's k-th search."""
    return arm if replicates == 1 else f"{arm}/r{replicate}"


def units(spec) -> list[str]:
    """Every search unit of a spec: replicate by replicate, arms in the spec's order."""
    replicates = spec.search.replicates
    return [unit_name(arm, k, replicates) for k in range(replicates) for arm in spec.arm_names]


def unit_of(config: dict) -> str:
    """The unit a trial config belongs to (its "arm", and its "replicate" when it has one)."""
    arm = config["arm"]
    return arm if "replicate" not in config else f"{arm}/r{config['replicate']}"


def arm_of(unit: str) -> str:
    return unit.split("/", 1)[0]


def replicate_of(unit: str) -> int:
    return int(unit.split("/r", 1)[1]) if "/" in unit else 0


def search_configs(spec) -> dict[str, dict]:
    """unit -> what its search trials share: the arm's model options, the fixed training options,
    epochs, the replicate's training seed, the phase (and `replicate`, `split_seed` as the module
    says). Replicate by replicate, arms in the spec's order (ArmSearch seeds each unit's sampler
    by this position)."""
    s, arms = spec, {arm.name: arm for arm in spec.arms}
    configs = {}
    for unit in units(s):
        arm, k = arms[arm_of(unit)], replicate_of(unit)
        configs[unit] = {"model": arm.model, "width": arm.width, "batchnorm": arm.batchnorm,
                         "hidden": arm.hidden, **s.search.fixed, "epochs": s.epochs,
                         "seed": search_seed(s, k), "grad_flow": s.gradient_flow, "phase": "search"}
        if s.search.replicates > 1:
            configs[unit]["replicate"] = k
        if s.split == "per_seed":
            configs[unit]["split_seed"] = 0
    return configs


def confirm_configs(spec, best: dict[str, dict]) -> list[dict]:
    """Every unit's best config (best_configs) once per seed, with that seed's split seed."""
    per_seed = spec.split == "per_seed"
    return [{**config, "seed": seed, "phase": "confirm", **({"split_seed": seed} if per_seed else {})}
            for config in best.values() for seed in spec.seeds]


def best_configs(spec, optuna_url: str, out) -> dict[str, dict]:
    """unit -> its best completed search trial (from Optuna) as a full trial config; a unit
    without one is left out, with a warning. A StudyError when optuna.db holds no search of it."""
    import optuna

    from . import tables   # here: trial processes import this module, and need neither
    from .optuna_storage import optuna_storage
    from .searcher import study_name
    best, storage = {}, optuna_storage(optuna_url)
    for unit, config in search_configs(spec).items():
        arm, replicate = arm_of(unit), replicate_of(unit)
        which = f"arm {arm!r}" + (f" (search replicate {replicate})" if unit != arm else "")
        try:
            study = optuna.load_study(study_name=study_name(spec.name, unit), storage=storage)
        except KeyError:   # optuna.db lost or replaced, or an arm the search never ran
            raise StudyError(f"{out / 'optuna.db'} holds no search of {which}; the confirmation "
                             "needs each arm's search results") from None
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if completed:
            best[unit] = {**config, **study.best_trial.params, "arm": arm}
        elif (rerun := tables.best_rerun(out, unit, spec)) is not None:
            best[unit] = {**config, **rerun, "arm": arm}
        else:
            print(f"warning: {which} has no completed search trial; it is not confirmed (its "
                  f"search trials: {tables.statuses(out, 'search', unit)})", file=sys.stderr)
    return best
