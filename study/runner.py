"""Runs a study: the search phase (per-arm Optuna + ASHA) and the confirmation phase (each arm's
best configuration over every seed), both on Ray Tune, then writes the result tables. With search
replicates, each arm is searched several times and each search's winner confirmed
(study/replicates.py says which trials run, with which split seeds).

    archstudy run study/specs/quick.yaml        # or: python -m study run ...
    archstudy resume ~/archstudy-results/quick

Output folder `<storage>/<name>/`: spec.yaml (resolved), study.json (phase progress, the spec it
started with, each driver's code: provenance.py), search/ and confirm/ (Ray experiment folders),
optuna.db, wandb/, trials.parquet, epochs.parquet, gradflow.parquet, signalprop.parquet,
driver.log (Ray's log records, with tracebacks).

A phase is marked done in study.json only when it ran to its end and every arm has a usable result
in it: a phase stopped by a signal (study/interrupt.py), or one in which every trial of an arm
failed, stays the current phase, and `archstudy resume` runs it again (Tune continues its trials;
failed ones are retried).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from studyfiles.contract import STUDY_FILES, TABLE_FILES, Phase
from studyfiles.errors import StudyError
from studyfiles.files import write_atomic
from studyfiles.state import read_state
from studyfiles.storage import Store, is_uri, join, mirror_of
from trainables.data import load_data

from . import interrupt, logs, provenance, recovery, replicates, tables
from .folder import check_new_study, check_unchanged
from .provenance import git_commit
from .progress import ProgressCallback
from .asha import PerArmASHA
from .searcher import ArmSearch, FixedConfigs, pruned_epochs
from .spec import StudySpec
from .spec_file import dump_spec, load_spec, resolved, spec_hash
from .tensorboard_log import TensorBoardLog
from .trainable import EpochTrainable

PHASES = tuple(phase.value for phase in Phase)   # in the order they run
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")   # diverged epochs carry no val metric
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")   # we add JSON, CSV and TensorBoard
# Tune forces an experiment snapshot every num_to_keep checkpoints of a trial; they are small here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def keep_ray_on_loopback() -> None:
    """Make a local Ray instance listen on 127.0.0.1 only. Ray replaces a loopback address with the
    machine's network address unless it believes it is not a cluster (its macOS/Windows mode); we
    say so to this process (the constant is read at call time) and to the processes it starts.
    Ray has no public switch for this: its environment variable is read once, when ray is imported
    (before this runs), into a constant of a private module."""
    from ray._private import ray_constants
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def start_ray(address: str | None) -> None:
    """Connect to a cluster (`auto`, `ray://...`), or start a private local instance on 127.0.0.1."""
    if ray.is_initialized():
        return
    if address:
        from .cluster import connect
        connect(address)   # probes the address first: Ray's own retries take ~14 minutes
    else:
        # Ray turns token authentication on for a new local cluster (unless RAY_AUTH_MODE says
        # otherwise) and says so in a warning each time; the default is what we want, so mute it.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        keep_ray_on_loopback()
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False, configure_logging=True)


class UploadCallback(tune.Callback):
    """With a bucket: upload the driver's study files (optuna.db, study.json) after every finished
    trial, so a driver lost mid-phase can be resumed from the bucket alone."""

    def __init__(self, store: Store, *names: str):
        self.store, self.names = store, names

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.store.upload(*self.names)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.store.upload(*self.names)


def trial_dirname(trial) -> str:
    return f"{trial.config['arm']}_{trial.trial_id}"


class Study:
    """A study folder (study/storage.py: local, or a bucket with a local mirror) and its phases.
    `out` is the local folder this process reads and writes (the mirror for a bucket)."""

    def __init__(self, spec: StudySpec, store: Store):
        self.spec, self.store, self.out = spec, store, store.local
        self.state_path = self.out / "study.json"
        self.optuna_url = f"sqlite:///{self.out / 'optuna.db'}"
        self.callbacks: list[tune.Callback] = []   # extra Tune callbacks (benchmarks use one)

    # ---- state ----
    def state(self) -> dict:
        return read_state(self.out)

    def mark(self, **changes) -> None:
        write_atomic(self.state_path, json.dumps({**self.state(), **changes}, indent=1))
        self.store.upload("study.json")

    def wandb_settings(self) -> dict:
        w = self.spec.wandb
        return {"project": w.project, "entity": w.entity, "group": self.spec.name,
                "mode": w.resolved_mode(), "spec_hash": spec_hash(self.spec), "git_commit": git_commit(),
                # with a bucket, each node writes its runs locally and uploads them when they end
                "dir": str(mirror_of(self.store.remote) if self.store.remote else self.out),
                "upload_to": join(self.store.remote, "wandb") if self.store.remote else None}

    # ---- configs (study/replicates.py: one search unit per arm and search replicate) ----
    def arm_configs(self) -> dict[str, dict]:
        return replicates.search_configs(self.spec)

    def trainable(self, data, pruned: dict | None = None):
        res = {"cpu": self.spec.resources.cpu, "gpu": self.spec.resources.gpu}
        fn = tune.with_parameters(EpochTrainable, data=data, wandb_settings=self.wandb_settings(),
                                  pruned=pruned or {})
        return tune.with_resources(fn, res)

    def run_config(self, phase: str) -> tune.RunConfig:
        return tune.RunConfig(
            name=phase, storage_path=self.store.ray_path, verbose=0,
            # a saved state may name a checkpoint deleted since: EpochTrainable.restore takes an older one
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
            failure_config=tune.FailureConfig(max_failures=self.spec.failure.max_retries),
            callbacks=[ProgressCallback(phase, self.spec), tables.ResultLog(), tables.ProgressLog(),
                       TensorBoardLog(self.spec, [*self.spec.seeds, *replicates.search_seeds(self.spec)]),
                       logs.TrialErrorLines(phase, self.store),
                       UploadCallback(self.store, "optuna.db", "study.json"),
                       recovery.ForgetGoneCheckpoints(), *self.callbacks])

    def search_tuner(self, data) -> tune.Tuner:
        s = self.spec
        space = {k: (d.kind, d.args) for k, d in s.search.space.items()}
        searcher = ArmSearch(self.optuna_url, s.name, self.arm_configs(),
                             space, s.search.trials_per_arm, s.search.algorithm, s.search.seed,
                             s.metric, s.mode, s.search.max_concurrent_per_arm, s.search.startup_trials)
        scheduler = (PerArmASHA(s.epochs, s.scheduler.grace_period, s.scheduler.reduction_factor,
                                s.metric, s.mode, self.optuna_url, s.name, replicates.units(s))
                     if s.scheduler.name == "asha" else FIFOScheduler())
        return tune.Tuner(self.trainable(data), run_config=self.run_config("search"),
                          tune_config=tune.TuneConfig(
                              search_alg=ConcurrencyLimiter(searcher, s.search.max_concurrent),
                              scheduler=scheduler,
                              num_samples=len(replicates.units(s)) * s.search.trials_per_arm,
                              reuse_actors=True, trial_dirname_creator=trial_dirname))

    def confirm_tuner(self, data) -> tune.Tuner | None:
        """None when no arm has a configuration to confirm (every search trial diverged: a result,
        which the analysis reports)."""
        configs = replicates.confirm_configs(self.spec, self.best_configs())
        if not configs:
            return None
        return tune.Tuner(self.trainable(data), run_config=self.run_config("confirm"),
                          tune_config=tune.TuneConfig(
                              search_alg=FixedConfigs(configs),
                              num_samples=len(configs), reuse_actors=True,
                              trial_dirname_creator=trial_dirname))

    def best_configs(self) -> dict[str, dict]:
        """Each unit's best completed search trial (from Optuna), as a full trial config."""
        return replicates.best_configs(self.spec, self.optuna_url, self.out)

    # ---- phases ----
    def tuner(self, phase: str, data) -> tune.Tuner | None:
        path, local = self.store.phase_path(phase), self.out / phase
        # a confirmation whose saved state a killed driver left damaged runs again from the start:
        # its runs are deterministic, so only their time is lost
        damaged = recovery.damaged_tune_state(local) if phase == "confirm" and not self.store.remote else None
        if damaged:
            print(f"warning: {damaged} is damaged (a driver was killed while Ray Tune saved it); the "
                  "confirmation runs again from the start", file=sys.stderr)
        if tune.Tuner.can_restore(path) and not damaged:
            pruned = pruned_epochs(self.optuna_url, self.spec.name, replicates.units(self.spec))
            tuner = tune.Tuner.restore(path, trainable=self.trainable(data, pruned),
                                       resume_unfinished=True, resume_errored=True)
            use_storage(tuner, self.optuna_url)
            return tuner
        if local.exists() and not self.store.remote:   # killed before Tune saved (whole) state:
            local.rename(local.with_name(f"{phase}.interrupted-{time.strftime('%Y%m%d-%H%M%S')}"))
        return self.search_tuner(data) if phase == "search" else self.confirm_tuner(data)

    def run_phase(self, phase: str, data) -> None:
        """Run (or continue) one phase; Interrupted by a stop signal, StudyError when an arm has no
        usable trial in it. Either way study.json keeps this phase as the current one."""
        try:
            if (tuner := self.tuner(phase, data)) is not None:
                with interrupt.fitting():
                    tuner.fit()
        except interrupt.Interrupted:   # nothing is concluded from a partial phase
            self.store.upload("optuna.db", "study.json", "driver.log")
            raise
        if phase == "search":   # trials that ended after Tune's last saved state
            recovery.recover_lost_trials(self.store, self.spec.name, self.arm_configs(), self.optuna_url)
        for done in PHASES[:PHASES.index(phase) + 1]:   # the tables cover every phase so far
            self.store.fetch_results(done)
        trials = tables.write_tables(self.out, self.spec)["trials"]
        self.store.upload("optuna.db", *TABLE_FILES, "driver.log")
        if problem := tables.phase_problem(trials, phase, self.spec, shlex.quote(str(self.store))):
            raise StudyError(problem)
        self.mark(phase=PHASES[PHASES.index(phase) + 1] if phase != PHASES[-1] else "done")

    def record_driver(self) -> None:
        """Add this driver's code and packages to study.json's "drivers" (study/provenance.py) and
        say in one line when they differ from the first driver's. A study started before drivers
        were recorded has no list: its first record is a resume."""
        drivers = self.state().get("drivers")
        me = provenance.environment("run" if drivers == [] else "resume")
        if drivers and (changed := provenance.difference(drivers[0], me)):
            print(f"note: {changed}", file=sys.stderr, flush=True)
        self.mark(drivers=[*(drivers or []), me])

    def run(self, data=None) -> None:
        """Run (or continue) every phase that is not done yet (data: study_data(spec) by default).
        SIGINT and SIGTERM stop it with Interrupted (study/interrupt.py), the phase unfinished."""
        data = study_data(self.spec) if data is None else data
        with interrupt.catching(), logs.to_log_file(self.out):
            self.record_driver()
            while (phase := self.state().get("phase", "search")) != "done":
                self.run_phase(phase, data)


def use_storage(tuner: tune.Tuner, optuna_url: str) -> None:
    """Hand this driver's optuna.db to the searcher and scheduler of a restored Tuner. Tune restores
    them as the first driver created them (its tuner.pkl), with that driver's URL, which differs
    when `resume` runs elsewhere (a bucket study's local mirror on another machine).

    Ray (2.60) has no public way to reach a restored Tuner's TuneConfig (ray-project/ray#41364, open)
    nor to give Tuner.restore another searcher or scheduler, so this reads Tune's private
    attributes. With Ray Client the Tuner, and its searcher, live in a remote actor instead."""
    local = getattr(tuner, "_local_tuner", None)
    if local is None:
        return
    for plugin in (local._tune_config.search_alg, local._tune_config.scheduler):
        while hasattr(plugin, "searcher"):   # the ConcurrencyLimiter around ArmSearch
            plugin = plugin.searcher
        if hasattr(plugin, "use_storage"):
            plugin.use_storage(optuna_url)


def study_data(spec: StudySpec):
    """The spec's dataset and subset (raises DatasetUnavailable before anything is written)."""
    data = load_data(spec.data, spec.data_root)
    return data.subset(**spec.subset.model_dump()) if spec.subset else data


def prepare(spec: StudySpec) -> Study:
    """Create the output folder for a new study (refusing to overwrite another one); with a bucket,
    the local mirror is created and spec.yaml is uploaded."""
    store = check_new_study(spec)
    store.local.mkdir(parents=True, exist_ok=True)
    write_atomic(store.local / "spec.yaml", dump_spec(spec))
    store.upload("spec.yaml")
    study = Study(spec, store)
    study.mark(phase="search", spec_hash=spec_hash(spec), spec=resolved(spec), drivers=[])
    return study


def reopen(folder: str | os.PathLike) -> Study:
    """A study folder to resume: a local path, or a bucket URI (its files are downloaded into the
    local mirror first; Ray Tune restores the phases from the bucket itself)."""
    location = folder if is_uri(folder) else Path(folder).expanduser().resolve()
    store = Store(location)
    store.download(*STUDY_FILES, "wandb")
    out = store.local
    if not (out / "spec.yaml").is_file() or not (out / "study.json").is_file():
        raise StudyError(f"{store} is not a study folder (no spec.yaml / study.json)")
    spec = load_spec(out / "spec.yaml", saved=True)
    check_unchanged(out, spec, read_state(out))
    return Study(spec, store)
