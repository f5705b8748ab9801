"""Per-arm search for the search phase: one Optuna study per arm (and one ASHA per arm,
study/asha.py).

Every arm gets the same trial budget and its own Optuna study in `<out>/optuna.db` (named
`<study>/<arm>`, so optuna-dashboard and optuna.visualization open it). With search replicates
(study/replicates.py) each replicate of an arm is a unit of its own, keyed `<arm>/r<k>` where this
module says "arm": its own study (`<study>/<arm>/r<k>`), budget and sampler seed. Unlike Ray's OptunaSearch, a
trial that ASHA stops is told to Optuna as PRUNED with its per-epoch intermediate values, not as
COMPLETE with a truncated score; a diverged or crashed trial is told as FAIL. ArmSearch and
FixedConfigs are plain Ray Tune plug-ins, used by study/runner.py.
"""
from __future__ import annotations

import pickle

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from . import interrupt
from .optuna_storage import optuna_storage
from .replicates import arm_of

optuna.logging.set_verbosity(optuna.logging.WARNING)

RAY_TRIAL_ID = "ray_trial_id"   # an Optuna trial's user attribute: the Tune trial that runs it
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def optuna_distribution(kind: str, args: list):
    """A spec distribution ({loguniform: [lo, hi]}, ...) as an Optuna distribution."""
    if kind == "loguniform":
        return FloatDistribution(float(args[0]), float(args[1]), log=True)
    if kind == "uniform":
        return FloatDistribution(float(args[0]), float(args[1]))
    if kind == "int":
        return IntDistribution(int(args[0]), int(args[1]))
    return CategoricalDistribution(list(args))


def study_name(study: str, arm: str) -> str:
    return f"{study}/{arm}"


def last_epochs(storage_url: str, study: str, arms, states=tuple(TrialState)) -> dict[str, int]:
    """'<arm>/<optuna trial number>' -> the last epoch Optuna holds, for every trial in `states`.
    On `resume`, Tune's saved state can be older than Optuna's: a trial that Optuna holds at epoch N
    may restart from an earlier checkpoint. ASHA had let it past every rung before N (PerArmASHA
    keeps that decision), and a PRUNED one stops itself at N (study/trainable.py) instead of
    training on."""
    epochs, storage = {}, optuna_storage(storage_url)
    for arm in arms:
        try:
            trials = optuna.load_study(study_name=study_name(study, arm), storage=storage).trials
        except KeyError:   # the arm's study was never created
            continue
        for t in trials:
            if t.state in states and t.intermediate_values:
                epochs[f"{arm}/{t.number}"] = max(t.intermediate_values)
    return epochs


def pruned_epochs(storage_url: str, study: str, arms) -> dict[str, int]:
    return last_epochs(storage_url, study, arms, states=(TrialState.PRUNED,))


class PickledState:
    """Tune saves searchers and schedulers with the experiment and restores them on `resume`:
    their state is their attributes, pickled."""

    def get_state(self) -> dict:
        return dict(self.__dict__)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


def attach(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """A handle on a RUNNING trial of `study` that another driver asked for (before a restart), to
    suggest, report and set attributes on it as that driver would have. Optuna (5.0) has no public
    way to do this: Study.ask only creates trials and Study.tell only ends them, and an
    optuna.Trial is made from the storage's trial id, which FrozenTrial keeps private."""
    return optuna.Trial(study, frozen._trial_id)


def suggest_missing(trial: optuna.Trial, space: dict) -> None:
    """Suggest every parameter of `space` that `trial` does not hold yet (as Study.ask does)."""
    for name, dist in space.items():
        if name in trial.params:
            continue
        if isinstance(dist, FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high)
        else:
            trial.suggest_categorical(name, dist.choices)


class ArmSearch(PickledState, Searcher):
    """Suggests configs for every arm in turn (the arm with the fewest trials goes next) until each
    has `trials_per_arm`. `arms` maps arm name -> the arm's fixed config (model options, fixed
    training options, epochs, seed); `storage_url` is the driver's optuna.db.

    Reproducible by construction with `per_arm` 1 (the default): an arm has at most one trial
    running at a time, so every decision about an arm (Optuna's next suggestion, ASHA's cutoff at a
    rung) sees the same finished history of that arm, whatever the timing of the other arms; arms
    run side by side. Tune asks again later when every open arm has `per_arm` trials running
    (`suggest` returns None). With `per_arm` above 1, those decisions depend on which of an arm's
    concurrent trials reports first."""

    def __init__(self, storage_url: str, study: str, arms: dict[str, dict], space: dict,
                 trials_per_arm: int, algorithm: str, seed: int, metric: str, mode: str,
                 per_arm: int = 1, startup_trials: int = 10):
        super().__init__(metric=metric, mode=mode)
        self.per_arm = per_arm   # trials of one arm running at once
        self.storage_url, self.study, self.arms = storage_url, study, arms
        self.space = {key: optuna_distribution(*dist) for key, dist in space.items()}
        self.trials_per_arm, self.algorithm, self.seed = trials_per_arm, algorithm, seed
        self.startup_trials = startup_trials   # TPE: random suggestions before it models results
        self.optuna_trials: dict[str, tuple[str, int]] = {}   # ray trial id -> (arm, trial number)
        self.told: set[str] = set()                             # ray trial ids finished in Optuna
        self._studies: dict[str, optuna.Study] = {}
        self._handles: dict[str, optuna.Trial] = {}   # ray trial id -> its running Optuna trial

    def use_storage(self, storage_url: str) -> None:
        """Use the optuna.db at `storage_url` from now on. On `resume` Tune restores this searcher
        with the URL of the driver that created it, which differs when `resume` runs elsewhere (a
        bucket study's local mirror on another machine): study/runner.py hands it its own."""
        self.storage_url, self._studies, self._handles = storage_url, {}, {}

    def optuna_study(self, arm: str) -> optuna.Study:
        if arm not in self._studies:
            study = optuna.create_study(
                study_name=study_name(self.study, arm), storage=optuna_storage(self.storage_url),
                direction="maximize" if self.mode == "max" else "minimize", load_if_exists=True)
            # Seeded, but not identical across arms; a study reopened by `resume` with trials in it
            # gets another seed, or the sampler would repeat the suggestions it made before.
            asked = len(study.get_trials(deepcopy=False))
            arm_seed = self.seed + list(self.arms).index(arm) + 1000 * asked
            # (a searcher restored from a tuner.pkl written before startup_trials had Optuna's 10)
            startup = getattr(self, "startup_trials", 10)
            study.sampler = (optuna.samplers.TPESampler(seed=arm_seed, n_startup_trials=startup)
                             if self.algorithm == "optuna" else optuna.samplers.RandomSampler(seed=arm_seed))
            self._studies[arm] = study
        return self._studies[arm]

    def numbers(self, arm: str) -> set[int]:
        return {number for a, number in self.optuna_trials.values() if a == arm}

    def suggest(self, trial_id: str):
        self.count_lost_trials()
        counts = {arm: 0 for arm in self.arms}
        running = {arm: 0 for arm in self.arms}
        for ray_id, (arm, _) in self.optuna_trials.items():
            counts[arm] += 1
            running[arm] += ray_id not in self.told
        open_arms = [arm for arm in self.arms if counts[arm] < self.trials_per_arm]
        if not open_arms:
            return Searcher.FINISHED
        idle = [arm for arm in open_arms if running[arm] < getattr(self, "per_arm", 1)]
        if not idle:
            return None   # every open arm is busy: its next trial waits for a running one
        arm = min(idle, key=lambda a: counts[a])
        trial = self.orphan(arm) or self.optuna_study(arm).ask(self.space)
        # where the trial's record is on storage (<arm>_<id>), should Tune's saved state lose it
        trial.set_user_attr(RAY_TRIAL_ID, trial_id)
        self.optuna_trials[trial_id] = (arm, trial.number)
        self._handles[trial_id] = trial
        return {**self.arms[arm], **trial.params, "arm": arm_of(arm), "optuna_trial": trial.number}

    def count_lost_trials(self) -> None:
        """On `resume`, once: every Optuna trial that ended after Tune's last saved state (which
        the killed driver never wrote) counts against its arm's budget, as a finished trial. Tune
        does not know it and will not run it again; its record comes from its checkpoints
        (study/recovery.py). Unfinished ones are taken up again by orphan()."""
        if getattr(self, "_counted_lost", False):
            return
        self._counted_lost = True
        for arm in self.arms:
            known = self.numbers(arm)
            for frozen in self.optuna_study(arm).get_trials(deepcopy=False, states=ENDED):
                if frozen.number not in known:
                    ray_id = frozen.user_attrs.get(RAY_TRIAL_ID, f"optuna-{arm}/{frozen.number}")
                    self.optuna_trials[ray_id] = (arm, frozen.number)
                    self.told.add(ray_id)

    def orphan(self, arm: str) -> optuna.Trial | None:
        """An Optuna trial asked for just before the driver died, which Tune's saved state never
        knew: it is reused (same number, same params) rather than left RUNNING forever."""
        known = self.numbers(arm)
        study = self.optuna_study(arm)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in known:
                trial = attach(study, frozen)
                suggest_missing(trial, self.space)   # died before Optuna stored them all
                return trial
        return None

    def stored(self, trial_id: str) -> FrozenTrial:
        """The Optuna trial that Tune's trial `trial_id` runs, as optuna.db holds it now."""
        arm, number = self.optuna_trials[trial_id]
        return next(t for t in self.optuna_study(arm).get_trials(deepcopy=False) if t.number == number)

    def handle(self, trial_id: str) -> optuna.Trial:
        if trial_id not in self._handles:   # asked for by the driver before a restart
            arm, _ = self.optuna_trials[trial_id]
            self._handles[trial_id] = attach(self.optuna_study(arm), self.stored(trial_id))
        return self._handles[trial_id]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.optuna_trials and self.metric in result:
            stored = self.stored(trial_id)
            step = int(result["epoch"])   # an epoch replayed after a resume is already there
            if not stored.state.is_finished() and step not in stored.intermediate_values:
                self.handle(trial_id).report(float(result[self.metric]), step=step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id not in self.optuna_trials or (error and interrupt.requested()):
            return   # a failure caused by a stop signal: the trial runs on after `resume`
        if trial_id in self.told or self.stored(trial_id).state.is_finished():
            self.told.add(trial_id)   # already told before a driver restart
            return
        if result and self.metric in result:   # Tune sends a trial's last result only here
            self.on_trial_result(trial_id, result)
        status = (result or {}).get("status")
        # the trial's status in trials.parquet (tables.trial_status): FAIL covers a crashed and a
        # diverged trial, which the attribute tells apart; a trial that ASHA stopped is "pruned"
        label = ("error" if error or status is None else
                 status if status in ("completed", "diverged") else "pruned")
        self.handle(trial_id).set_user_attr("status", label)
        arm, number = self.optuna_trials[trial_id]
        study = self.optuna_study(arm)
        if label in ("error", "diverged") or self.metric not in result:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        elif label == "completed":         # ran its full budget
            study.tell(number, float(result[self.metric]), skip_if_finished=True)
        else:                              # stopped early by ASHA
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        self.told.add(trial_id)
        del self._handles[trial_id]

    # Open studies and trial handles are not pickled (they reopen from SQLite), nor is the URL: the
    # database is the driver's (use_storage).
    UNSAVED = ("storage_url", "_studies", "_handles", "_counted_lost")

    def get_state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self.UNSAVED}

    def set_state(self, state: dict) -> None:
        state = {k: v for k, v in state.items() if k not in self.UNSAVED}
        older = state.pop("assigned", None)
        self.__dict__.update(state)
        self._studies, self._handles = {}, {}
        if older is not None:
            self.optuna_trials = self.renumbered(older)

    def renumbered(self, older: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
        """A state saved by an older archstudy held (arm, Optuna's internal trial id) per Tune
        trial: the same in trial numbers, through the Tune trial id that every Optuna trial holds
        (RAY_TRIAL_ID). One without it (asked just before a driver died) is found again by
        count_lost_trials or orphan()."""
        numbers = {}
        for arm in {arm for arm, _ in older.values()}:
            for frozen in self.optuna_study(arm).get_trials(deepcopy=False):
                if frozen.user_attrs.get(RAY_TRIAL_ID) in older:
                    numbers[frozen.user_attrs[RAY_TRIAL_ID]] = (arm, frozen.number)
        return numbers


class FixedConfigs(PickledState, Searcher):
    """Hands out a fixed list of configs, once each (the confirmation phase: best config x seeds)."""

    def __init__(self, configs: list[dict]):
        super().__init__()
        self.configs, self.issued = configs, 0

    def suggest(self, trial_id: str):
        if self.issued >= len(self.configs):
            return Searcher.FINISHED
        self.issued += 1
        return self.configs[self.issued - 1]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        pass


def __getattr__(name: str):
    """Studies started before PerArmASHA had its own module name it here in their saved state."""
    if name == "PerArmASHA":
        from .asha import PerArmASHA
        return PerArmASHA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
