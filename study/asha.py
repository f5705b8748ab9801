"""One ASHA per arm for the search phase (study/searcher.py has the per-arm Optuna studies): ASHA
compares a trial only with trials of its own arm. A plain Ray Tune plug-in, used by study/runner.py.
"""
from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from .optuna_storage import optuna_storage
from .replicates import unit_of
from .searcher import RAY_TRIAL_ID, PickledState, last_epochs, study_name


class PerArmASHA(PickledState, FIFOScheduler):
    """One ASHAScheduler per arm (keyed by the trial config's "arm", or its search unit with search
    replicates: study/replicates.py), so a trial only competes with trials of the same
    architecture and the same search.

    On `resume`, decisions the killed driver already made stand: a trial that Optuna records at
    epoch N had been let past every rung before N, so ASHA may not stop it before N now (the
    replayed results can reach ASHA in another order than before). PRUNED trials stop themselves
    at their epoch (pruned_epochs, study/trainable.py). `storage_url` is the driver's optuna.db."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float, metric: str, mode: str,
                 storage_url: str | None = None, study: str = "", arms=()):
        super().__init__()
        self._options = dict(time_attr="training_iteration", max_t=max_t, grace_period=grace_period,
                             reduction_factor=reduction_factor, metric=metric, mode=mode)
        self._metric, self._mode = metric, mode
        self.by_arm: dict[str, ASHAScheduler] = {}
        self.storage_url, self.study, self.arms = storage_url, study, list(arms)

    def use_storage(self, storage_url: str) -> None:
        """Use the optuna.db at `storage_url` from now on (ArmSearch.use_storage says why)."""
        self.storage_url, self._floors = storage_url, None

    def floor(self, trial) -> int:
        """The epoch before which this trial may not be stopped (read from Optuna once per driver:
        in a fresh run it never exceeds a trial's current epoch, so it changes nothing)."""
        if getattr(self, "_floors", None) is None:
            self._floors = (last_epochs(self.storage_url, self.study, self.arms)
                            if self.storage_url else {})
        return self._floors.get(f"{unit_of(trial.config)}/{trial.config.get('optuna_trial')}", 0)

    def get_state(self) -> dict:   # the floors and seeds are the driver's, read again after a restore
        return {k: v for k, v in self.__dict__.items() if k not in ("_floors", "_seeded")}

    def __getstate__(self) -> dict:
        return self.get_state()

    def _asha(self, trial) -> ASHAScheduler:
        arm = unit_of(trial.config)
        if arm not in self.by_arm:
            self.by_arm[arm] = ASHAScheduler(**self._options)
        if arm not in self.__dict__.setdefault("_seeded", set()):
            self._seeded.add(arm)
            self.seed_rungs(arm, self.by_arm[arm])
        return self.by_arm[arm]

    def seed_rungs(self, arm: str, asha: ASHAScheduler) -> None:
        """Once per arm and driver, ASHA's rungs take every value that Optuna holds at a rung's
        epoch, as ASHA had recorded it when it was reported. On `resume` that adds the reports
        made after Tune's saved state, and the trials that state lost (which are not run again), so
        the arm's later trials meet the rungs of a run that was never killed. In a fresh run Optuna
        holds none yet when an arm's first trial arrives here."""
        try:
            trials = optuna.load_study(study_name=study_name(self.study, arm),
                                       storage=optuna_storage(self.storage_url)).trials if self.storage_url else []
        except KeyError:   # the arm's study was never created
            return
        for t in trials:
            if ray_id := t.user_attrs.get(RAY_TRIAL_ID):
                record_at_rungs(asha, ray_id, t.intermediate_values)

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


def record_at_rungs(asha: ASHAScheduler, trial_id: str, values: dict[int, float]) -> None:
    """Record a trial's values (epoch -> metric) at ASHA's rungs, as ASHA itself records a reported
    result at a rung's epoch, where the rung holds none of that trial yet.

    Ray (2.60) has no public way to do this, so this reads AsyncHyperBandScheduler's private
    attributes (_brackets: _Bracket objects whose _rungs are (epoch, {trial id: value}); _metric_op:
    1 or -1 by mode). Its public methods record only a live trial's reports (on_trial_result,
    on_trial_complete; one rung per report), and its save/restore pickle the same private
    __dict__."""
    for bracket in asha._brackets:
        for epoch, recorded in bracket._rungs:
            if epoch in values:
                recorded.setdefault(trial_id, asha._metric_op * values[epoch])
