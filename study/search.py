"""Per-arm search for the search phase: one Optuna study per arm and one ASHA per arm.

Every arm gets the same trial budget and its own Optuna study in `<out>/optuna.db` (named
`<study>/<arm>`, so optuna-dashboard and optuna.visualization open it). ASHA compares a trial only
with trials of its own arm. Unlike Ray's OptunaSearch, a trial that ASHA stops is told to Optuna as
PRUNED with its per-epoch intermediate values, not as COMPLETE with a truncated score; a diverged or
crashed trial is told as FAIL. Both classes are plain Ray Tune plug-ins, used by study/runner.py.
"""
from __future__ import annotations

import pickle

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from . import interrupt

optuna.logging.set_verbosity(optuna.logging.WARNING)


# The driver's optuna.db URL, set by study/runner.py. A searcher or scheduler restored from Tune's
# saved state carries the URL of the driver that saved it, which differs when `resume` runs on
# another machine (a bucket study's local mirror); this one wins.
CURRENT_STORAGE: str | None = None


def storage_of(obj) -> str | None:
    return CURRENT_STORAGE or obj.storage_url


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


def pruned_epochs(storage_url: str, study: str, arms) -> dict[str, int]:
    """'<arm>/<optuna trial number>' -> the last epoch of every PRUNED trial. On `resume`, Tune's
    saved state can be older than Optuna's: a trial ASHA had stopped may look unfinished to Tune.
    The trial then stops itself at that epoch (study/trainable.py) instead of training on."""
    pruned = {}
    for arm in arms:
        try:
            trials = optuna.load_study(study_name=study_name(study, arm), storage=storage_url).trials
        except KeyError:   # the arm's study was never created
            continue
        for t in trials:
            if t.state == TrialState.PRUNED and t.intermediate_values:
                pruned[f"{arm}/{t.number}"] = max(t.intermediate_values)
    return pruned


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


class ArmSearch(PickledState, Searcher):
    """Suggests configs for every arm in turn (the arm with the fewest trials goes next) until each
    has `trials_per_arm`. `arms` maps arm name -> the arm's fixed config (model options, fixed
    training options, epochs, seed).

    Reproducible by construction: an arm has at most one trial running at a time, so every
    decision about an arm (Optuna's next suggestion, ASHA's cutoff at a rung) sees the same
    finished history of that arm, whatever the timing of the other arms; arms run side by side.
    Tune asks again later when every open arm has its trial running (`suggest` returns None)."""

    def __init__(self, storage_url: str, study: str, arms: dict[str, dict], space: dict,
                 trials_per_arm: int, algorithm: str, seed: int, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.storage_url, self.study, self.arms = storage_url, study, arms
        self.space = {key: optuna_distribution(*dist) for key, dist in space.items()}
        self.trials_per_arm, self.algorithm, self.seed = trials_per_arm, algorithm, seed
        self.assigned: dict[str, tuple[str, int]] = {}   # ray trial id -> (arm, optuna trial id)
        self.told: set[str] = set()                        # ray trial ids already finished in Optuna
        self._studies: dict[str, optuna.Study] = {}

    def optuna_study(self, arm: str) -> optuna.Study:
        if arm not in self._studies:
            study = optuna.create_study(
                study_name=study_name(self.study, arm), storage=storage_of(self),
                direction="maximize" if self.mode == "max" else "minimize", load_if_exists=True)
            # Seeded, but not identical across arms; a study reopened by `resume` with trials in it
            # gets another seed, or the sampler would repeat the suggestions it made before.
            asked = len(study.get_trials(deepcopy=False))
            arm_seed = self.seed + list(self.arms).index(arm) + 1000 * asked
            study.sampler = (optuna.samplers.TPESampler(seed=arm_seed) if self.algorithm == "optuna"
                             else optuna.samplers.RandomSampler(seed=arm_seed))
            self._studies[arm] = study
        return self._studies[arm]

    def suggest(self, trial_id: str):
        counts = {arm: 0 for arm in self.arms}
        running = set()
        for ray_id, (arm, _) in self.assigned.items():
            counts[arm] += 1
            if ray_id not in self.told:
                running.add(arm)
        open_arms = [arm for arm in self.arms if counts[arm] < self.trials_per_arm]
        if not open_arms:
            return Searcher.FINISHED
        idle = [arm for arm in open_arms if arm not in running]
        if not idle:
            return None   # every open arm is busy: its next trial waits for the running one
        arm = min(idle, key=lambda a: counts[a])
        study = self.optuna_study(arm)
        trial = self.orphan(arm) or study.ask(self.space)
        self.assigned[trial_id] = (arm, trial._trial_id)
        return {**self.arms[arm], **trial.params, "arm": arm, "optuna_trial": trial.number}

    def orphan(self, arm: str) -> optuna.Trial | None:
        """An Optuna trial asked for just before the driver died, which Tune's saved state never
        knew: it is reused (same number, same params) rather than left RUNNING forever."""
        known = {optuna_id for a, optuna_id in self.assigned.values() if a == arm}
        study = self.optuna_study(arm)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in known:
                trial = optuna.Trial(study, frozen._trial_id)
                for name, distribution in self.space.items():   # died before Optuna stored them all
                    if name not in trial.params:
                        trial._suggest(name, distribution)
                return trial
        return None

    def _trial(self, trial_id: str) -> tuple[optuna.Study, optuna.Trial]:
        arm, optuna_id = self.assigned[trial_id]
        study = self.optuna_study(arm)
        return study, optuna.Trial(study, optuna_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.assigned and self.metric in result:
            study, trial = self._trial(trial_id)
            frozen = study._storage.get_trial(trial._trial_id)
            step = int(result["epoch"])   # an epoch replayed after a resume is already there
            if not frozen.state.is_finished() and step not in frozen.intermediate_values:
                trial.report(float(result[self.metric]), step=step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id not in self.assigned or (error and interrupt.requested()):
            return   # a failure caused by a stop signal: the trial runs on after `resume`
        study, trial = self._trial(trial_id)
        if trial_id in self.told or study._storage.get_trial(trial._trial_id).state.is_finished():
            self.told.add(trial_id)   # already told before a driver restart
            return
        if result and self.metric in result:   # Tune sends a trial's last result only here
            self.on_trial_result(trial_id, result)
        status = (result or {}).get("status")
        # FAIL covers both; the attribute tells a diverged trial from a crashed one
        study._storage.set_trial_user_attr(trial._trial_id, "status",
                                           "error" if error or status is None else status)
        if error or status is None or status == "diverged" or self.metric not in result:
            study.tell(trial, state=TrialState.FAIL)
        elif status == "completed":        # ran its full budget
            study.tell(trial, float(result[self.metric]))
        else:                              # stopped early by ASHA
            study.tell(trial, state=TrialState.PRUNED)
        self.told.add(trial_id)

    def get_state(self) -> dict:   # open Optuna studies are not pickled; they reopen from SQLite
        return {k: v for k, v in self.__dict__.items() if k != "_studies"}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)
        self._studies = {}


def reached_epochs(storage_url: str, study: str, arms) -> dict[str, int]:
    """'<arm>/<optuna trial number>' -> the last epoch Optuna holds for every unfinished trial."""
    reached = {}
    for arm in arms:
        try:
            trials = optuna.load_study(study_name=study_name(study, arm), storage=storage_url).trials
        except KeyError:
            continue
        for t in trials:
            if t.state == TrialState.RUNNING and t.intermediate_values:
                reached[f"{arm}/{t.number}"] = max(t.intermediate_values)
    return reached


class PerArmASHA(PickledState, FIFOScheduler):
    """One ASHAScheduler per arm (keyed by the trial config's "arm"), so a trial only competes with
    trials of the same architecture.

    On `resume`, decisions the killed driver already made stand: a trial that Optuna records at
    epoch N had been let past every rung before N, so ASHA may not stop it before N now (the
    replayed results can reach ASHA in another order than before). PRUNED trials stop themselves
    at their epoch (pruned_epochs, study/trainable.py)."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float, metric: str, mode: str,
                 storage_url: str | None = None, study: str = "", arms=()):
        super().__init__()
        self._options = dict(time_attr="training_iteration", max_t=max_t, grace_period=grace_period,
                             reduction_factor=reduction_factor, metric=metric, mode=mode)
        self._metric, self._mode = metric, mode
        self.by_arm: dict[str, ASHAScheduler] = {}
        self.storage_url, self.study, self.arms = storage_url, study, list(arms)

    def floor(self, trial) -> int:
        """The epoch before which this trial may not be stopped (read from Optuna once per driver:
        in a fresh run it never exceeds a trial's current epoch, so it changes nothing)."""
        if getattr(self, "_floors", None) is None:
            self._floors = (reached_epochs(storage_of(self), self.study, self.arms)
                            if storage_of(self) else {})
        return self._floors.get(f"{trial.config['arm']}/{trial.config.get('optuna_trial')}", 0)

    def get_state(self) -> dict:   # the floors are the driver's, read again after a restore
        return {k: v for k, v in self.__dict__.items() if k != "_floors"}

    def __getstate__(self) -> dict:
        return self.get_state()

    def _asha(self, trial) -> ASHAScheduler:
        arm = trial.config["arm"]
        if arm not in self.by_arm:
            self.by_arm[arm] = ASHAScheduler(**self._options)
        return self.by_arm[arm]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True   # metric and mode come from the spec

    def on_trial_add(self, tune_controller, trial):
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        decision = self._asha(trial).on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get("epoch", 0) < self.floor(trial):
            return TrialScheduler.CONTINUE
        return decision

    def on_trial_complete(self, tune_controller, trial, result):
        self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._asha(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._asha(trial).on_trial_error(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{arm}: {asha.debug_string()}" for arm, asha in self.by_arm.items())


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
