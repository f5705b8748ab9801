"""ArmSearch and PerArmASHA driven directly (real Optuna in SQLite; no Ray cluster needed)."""
import shutil
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from study.asha import PerArmASHA
from study.searcher import ArmSearch, FixedConfigs, optuna_distribution, study_name
from studyfiles.files import sqlite_snapshot

ARMS = {"mlp": {"model": "mlp", "epochs": 3}, "resnet20": {"model": "resnet20", "epochs": 3}}
SPACE = {"lr": ("loguniform", [1e-3, 0.3]), "batch_size": ("choice", [32, 64])}


def make(tmp_path, trials=3, algorithm="optuna", per_arm=1, startup=10):
    return ArmSearch(f"sqlite:///{tmp_path / 'optuna.db'}", "s", ARMS, SPACE, trials, algorithm,
                     seed=0, metric="val_acc", mode="max", per_arm=per_arm, startup_trials=startup)


def states(tmp_path, arm):
    study = optuna.load_study(study_name=study_name("s", arm), storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    return [(t.state, t.value, dict(t.intermediate_values)) for t in study.trials]


def test_one_trial_per_arm_at_a_time_by_default(tmp_path):
    """Each arm's next trial waits for its running one (reproducible decisions); arms run side by
    side, and an arm that finishes frees its own slot only."""
    search = make(tmp_path, trials=2)
    assert [search.suggest(t)["arm"] for t in ("t0", "t1")] == ["mlp", "resnet20"]
    assert search.suggest("t2") is None   # both arms busy: Tune asks again later
    search.on_trial_complete("t1", {"epoch": 3, "val_acc": 0.5, "status": "completed"})
    assert search.suggest("t2")["arm"] == "resnet20" and search.suggest("t3") is None
    search.on_trial_complete("t0", {"epoch": 1, "val_acc": 0.1, "status": "running"})   # pruned
    assert search.suggest("t3")["arm"] == "mlp"
    for t in ("t2", "t3"):
        search.on_trial_complete(t, None, error=True)
    assert search.suggest("t4") is Searcher.FINISHED
    (tmp_path / "wide").mkdir()
    wide = make(tmp_path / "wide", trials=2, per_arm=2)   # two of an arm at once: not reproducible
    assert [wide.suggest(f"t{i}")["arm"] for i in range(4)] == ["mlp", "resnet20", "mlp", "resnet20"]


def test_arms_take_turns_until_each_has_its_budget(tmp_path):
    search = make(tmp_path, trials=2, per_arm=2)
    configs = [search.suggest(f"t{i}") for i in range(5)]
    assert [c["arm"] for c in configs[:4]] == ["mlp", "resnet20", "mlp", "resnet20"]
    assert configs[4] is Searcher.FINISHED
    for c in configs[:4]:
        assert 1e-3 <= c["lr"] <= 0.3 and c["batch_size"] in (32, 64)
        assert c["model"] == ARMS[c["arm"]]["model"] and c["epochs"] == 3
    assert [c["optuna_trial"] for c in configs[:4]] == [0, 0, 1, 1]


def test_completed_pruned_and_failed_trials_are_told_truthfully(tmp_path):
    search = make(tmp_path, per_arm=3)
    for i in range(6):
        search.suggest(f"t{i}")   # t0, t2, t4: mlp
    search.on_trial_result("t0", {"epoch": 1, "val_acc": 0.5, "status": "running"})
    search.on_trial_result("t0", {"epoch": 2, "val_acc": 0.6, "status": "running"})
    search.on_trial_complete("t0", {"epoch": 3, "val_acc": 0.7, "status": "completed"})
    # stopped by ASHA after epoch 1: Tune sends that last result only to on_trial_complete
    search.on_trial_complete("t2", {"epoch": 1, "val_acc": 0.2, "status": "running"})
    search.on_trial_complete("t4", {"epoch": 2, "train_loss": float("nan"), "status": "diverged"})
    search.on_trial_complete("t1", None, error=True)
    assert states(tmp_path, "mlp") == [
        (TrialState.COMPLETE, 0.7, {1: 0.5, 2: 0.6, 3: 0.7}),
        (TrialState.PRUNED, 0.2, {1: 0.2}),
        (TrialState.FAIL, None, {}),
    ]
    assert states(tmp_path, "resnet20")[0][0] == TrialState.FAIL
    search.on_trial_complete("t0", {"epoch": 3, "val_acc": 0.7, "status": "completed"})   # told twice
    assert len(states(tmp_path, "mlp")) == 3


def test_restore_reuses_an_orphaned_optuna_trial(tmp_path):
    search = make(tmp_path)
    search.suggest("t0")
    search.save(tmp_path / "searcher.pkl")
    lost = search.suggest("t1")    # asked in Optuna, but the driver died before Tune saved it
    restored = make(tmp_path)
    restored.restore(tmp_path / "searcher.pkl")
    again = restored.suggest("t1-new")
    assert again["arm"] == lost["arm"] and again["optuna_trial"] == lost["optuna_trial"]
    assert again["lr"] == lost["lr"]
    assert len(states(tmp_path, "resnet20")) == 1   # no phantom trial left RUNNING beside it


def test_trials_that_ended_after_the_saved_state_count_against_their_arm(tmp_path):
    """The driver died after Tune saved its state with t0 running: t0 then ended (pruned), and t2
    was asked and completed. On resume, t2 counts (it is not run again), and the arm gets no
    third trial; the pruned trial's status attribute says so."""
    search = make(tmp_path, trials=2)
    search.suggest("t0"), search.suggest("t1")   # one per arm
    search.save(tmp_path / "searcher.pkl")
    search.on_trial_complete("t0", {"epoch": 1, "val_acc": 0.2, "status": "running"})
    assert search.suggest("t2")["arm"] == "mlp"
    search.on_trial_complete("t2", {"epoch": 3, "val_acc": 0.7, "status": "completed"})
    restored = make(tmp_path, trials=2)
    restored.restore(tmp_path / "searcher.pkl")
    restored.on_trial_complete("t0", {"epoch": 1, "val_acc": 0.2, "status": "running"})   # replayed
    assert restored.suggest("t3") is None   # mlp has its 2; resnet20's t1 is running
    restored.on_trial_complete("t1", {"epoch": 3, "val_acc": 0.5, "status": "completed"})
    assert restored.suggest("t4")["arm"] == "resnet20" and restored.suggest("t5") is Searcher.FINISHED
    study = optuna.load_study(study_name=study_name("s", "mlp"), storage=restored.storage_url)
    assert [(t.state, t.user_attrs) for t in study.trials] == [
        (TrialState.PRUNED, {"ray_trial_id": "t0", "status": "pruned"}),
        (TrialState.COMPLETE, {"ray_trial_id": "t2", "status": "completed"})]
    assert len(states(tmp_path, "resnet20")) == 2


def test_a_restored_searcher_uses_the_storage_it_is_handed(tmp_path):
    """On `resume` elsewhere (a bucket study's mirror on another machine), Tune restores the
    searcher with the first driver's URL and state; the resuming driver's optuna.db is used."""
    first, here = tmp_path / "first", tmp_path / "here"
    first.mkdir(), here.mkdir()
    search = make(first)
    search.suggest("t0")
    search.save(tmp_path / "searcher.pkl")
    with sqlite_snapshot(first / "optuna.db") as copy:   # as a bucket upload copies it (the file
        shutil.copy(copy, here / "optuna.db")           # alone may lack commits still in its WAL)
    restored = make(first)   # as Tune unpickles it
    restored.use_storage(f"sqlite:///{here / 'optuna.db'}")   # study/runner.py use_storage
    restored.restore(tmp_path / "searcher.pkl")
    restored.on_trial_complete("t0", {"epoch": 3, "val_acc": 0.7, "status": "completed"})
    assert states(here, "mlp") == [(TrialState.COMPLETE, 0.7, {3: 0.7})]
    assert states(first, "mlp") == [(TrialState.RUNNING, None, {})]


def test_a_restored_tuner_hands_its_plugins_the_driver_storage(tmp_path):
    """study/runner.py use_storage reaches the searcher and scheduler that Tuner.restore unpickles
    (through Tune's private attributes: this fails should a Ray upgrade move them)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from study.runner import use_storage

    def train(config):
        pass
    scheduler = PerArmASHA(3, 1, 2, "val_acc", "max", "sqlite:///first.db", "s", ARMS)
    tune.Tuner(train, run_config=tune.RunConfig(name="search", storage_path=str(tmp_path)),
               tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(make(tmp_path), 2),
                                           scheduler=scheduler, num_samples=2))
    restored = tune.Tuner.restore(str(tmp_path / "search"), trainable=train)
    use_storage(restored, "sqlite:///here.db")
    config = restored._local_tuner._tune_config
    assert config.search_alg.searcher.storage_url == config.scheduler.storage_url == "sqlite:///here.db"


def test_a_state_saved_with_optuna_trial_ids_is_renumbered(tmp_path):
    """Searcher states saved by an older archstudy held Optuna's internal trial ids (1 and 2 here:
    the first trials in a new database), not trial numbers; a study saved so resumes."""
    search = make(tmp_path)
    search.suggest("t0"), search.suggest("t1")
    older = {k: v for k, v in search.get_state().items() if k != "optuna_trials"}
    restored = make(tmp_path)
    restored.set_state({**older, "assigned": {"t0": ("mlp", 1), "t1": ("resnet20", 2)}})
    restored.on_trial_complete("t1", {"epoch": 3, "val_acc": 0.5, "status": "completed"})
    assert states(tmp_path, "resnet20") == [(TrialState.COMPLETE, 0.5, {3: 0.5})]
    assert restored.suggest("t2")["arm"] == "resnet20"
    assert restored.suggest("t3") is None   # t0 runs on: not taken for an orphan


def test_resumed_asha_meets_the_rungs_of_trials_its_state_lost(tmp_path):
    """A trial that ended after Tune's saved state (recorded only in Optuna) still sets the cutoff
    at its rungs for the arm's next trial."""
    search = make(tmp_path)
    search.suggest("t0")
    for epoch, acc in ((1, 0.9), (2, 0.95)):
        search.on_trial_result("t0", {"epoch": epoch, "val_acc": acc, "status": "running"})
    search.on_trial_complete("t0", {"epoch": 3, "val_acc": 0.97, "status": "completed"})
    asha = PerArmASHA(3, 1, 2, "val_acc", "max", f"sqlite:///{tmp_path / 'optuna.db'}", "s", ARMS)
    weak = SimpleNamespace(trial_id="t2", config={"arm": "mlp", "optuna_trial": 1})
    asha.on_trial_add(None, weak)
    result = {"training_iteration": 1, "epoch": 1, "val_acc": 0.1}
    assert asha.on_trial_result(None, weak, result) == TrialScheduler.STOP


def test_same_seed_same_suggestions(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = make(tmp_path / "a", per_arm=2), make(tmp_path / "b", per_arm=2)
    assert [a.suggest(f"t{i}")["lr"] for i in range(4)] == [b.suggest(f"t{i}")["lr"] for i in range(4)]


def test_random_search_samples_at_random(tmp_path):
    """`search.algorithm: random` is Optuna's RandomSampler (independent draws, which the
    expected-best curve of analysis/evidence.py assumes); the default `optuna` is TPE."""
    (tmp_path / "r").mkdir()
    (tmp_path / "t").mkdir()
    assert isinstance(make(tmp_path / "r", algorithm="random").optuna_study("mlp").sampler,
                      optuna.samplers.RandomSampler)
    assert isinstance(make(tmp_path / "t").optuna_study("mlp").sampler, optuna.samplers.TPESampler)


def test_tpe_models_the_results_after_its_startup_trials(tmp_path):
    """Within TPE's start-up trials its suggestions are random search's, draw for draw (so a
    3-trial search can say `algorithm: random` and keep its results); after them they differ."""
    def suggestions(folder, **kwargs):
        folder.mkdir()
        search, found = make(folder, trials=4, **kwargs), []
        for i in range(8):   # the arms take turns: 4 trials each
            found.append(search.suggest(f"t{i}"))
            search.on_trial_complete(f"t{i}", {"epoch": 3, "val_acc": 0.5 + 0.1 * (i % 4 > 1),
                                               "status": "completed"})
        return [c["lr"] for c in found if c["arm"] == "mlp"]
    random = suggestions(tmp_path / "r", algorithm="random")
    assert suggestions(tmp_path / "t10") == random                  # all 4 within Optuna's 10
    early = suggestions(tmp_path / "t1", startup=1)
    assert early[0] == random[0] and early[1:] != random[1:]


@pytest.mark.parametrize("kind,args,expected", [
    ("loguniform", [0.001, 0.1], optuna.distributions.FloatDistribution(0.001, 0.1, log=True)),
    ("uniform", [0, 1], optuna.distributions.FloatDistribution(0.0, 1.0)),
    ("int", [16, 128], optuna.distributions.IntDistribution(16, 128)),
    ("choice", ["sgd", "adamw"], optuna.distributions.CategoricalDistribution(["sgd", "adamw"])),
])
def test_distributions(kind, args, expected):
    assert optuna_distribution(kind, args) == expected


def test_fixed_configs_hand_out_each_config_once(tmp_path):
    search = FixedConfigs([{"seed": 0}, {"seed": 1}])
    assert search.suggest("a") == {"seed": 0}
    search.save(tmp_path / "f.pkl")
    restored = FixedConfigs([])
    restored.restore(tmp_path / "f.pkl")
    assert restored.suggest("b") == {"seed": 1} and restored.suggest("c") is Searcher.FINISHED
