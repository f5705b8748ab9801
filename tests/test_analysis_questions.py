"""The why, convergence and search questions, answers() as a whole, the figures' data and how
several studies are loaded, on synthetic tables (generators in test_analysis_stats.py): no Ray,
no study folder, a few seconds.
"""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import figures, io, sentences
from analysis import questions as q
from analysis.importance import to_distribution
from test_analysis_stats import depth_study, epochs_frame, gradflow_frame, search_frame, trial

E = pd.DataFrame()
SPACE = {"lr": ("loguniform", [1e-3, 1e-1]), "weight_decay": {"loguniform": [1e-5, 1e-3]}}


# ---- 3. why ----------------------------------------------------------------------------------------
def test_vanishing_and_exploding_gradients_are_flagged_and_healthy_ones_are_not():
    flow = pd.concat([gradflow_frame("plain56", first_norm=1e-6), gradflow_frame("resnet56", 0.5),
                      gradflow_frame("vgg24", first_norm=1e5)])
    att = q.attenuation(flow).set_index("arm")
    assert bool(att.loc["plain56", "vanishing"]) and not bool(att.loc["resnet56", "vanishing"])
    assert bool(att.loc["vgg24", "exploding"]) and not bool(att.loc["vgg24", "vanishing"])
    assert not att.loc[["plain56", "resnet56"], "exploding"].any()
    assert att.loc["plain56", "ratio_first"] == pytest.approx(1e-6) and att.loc["resnet56", "n"] == 3
    profile = q.gradient_profile(flow)
    assert len(profile) == 3 * 2 * 8 and (profile["n"] == 3).all()
    cell = profile.set_index(["arm", "epoch", "index"]).loc[("plain56", 1, 7)]
    assert cell["grad_norm"] == pytest.approx(1.0) and cell["layer"] == "l7"
    mixed = pd.concat([gradflow_frame("x", 1e-6, seeds=2), gradflow_frame("x", 0.5, seeds=1)
                       .assign(trial_id="x-healthy")])
    assert not bool(q.attenuation(mixed)["vanishing"].iloc[0])    # not "every seed"


def test_gradient_statistics_use_completed_trials_only():
    """Two healthy completed seeds and one diverged seed with vanishing gradients."""
    flow = pd.concat([gradflow_frame("p", 0.5, seeds=2), gradflow_frame("p", 1e-6, seeds=1)
                      .assign(trial_id="p-bad")])
    trials = pd.DataFrame([trial("p", "plain56", "plain", 56, s) for s in range(2)]
                          + [trial("p", "plain56", "plain", 56, 9, trial_id="p-bad", status="diverged")])
    assert q.attenuation(flow, trials=trials).iloc[0]["n"] == 2
    assert q.attenuation(flow, trials=trials).iloc[0]["ratio_first"] == pytest.approx(0.5)
    assert (q.gradient_profile(flow, trials=trials)["n"] == 2).all()
    only_bad = flow[flow["trial_id"] == "p-bad"]
    assert bool(q.attenuation(only_bad)["vanishing"].iloc[0])
    assert q.attenuation(only_bad, trials=trials).empty


def _deep_and_shallow(deep_train_loss: float, loss_sd: float = 0.005, deep_train_acc: float = 0.99,
                      seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        [trial("vgg11", "vgg11", "plain", 11, s, final_val_acc=0.95 + rng.normal(0, 0.005),
               final_train_acc=0.99 + rng.normal(0, 0.002),
               final_train_loss=0.10 + rng.normal(0, loss_sd)) for s in range(5)]
        + [trial("vgg24", "vgg24", "plain", 24, s, final_val_acc=0.85 + rng.normal(0, 0.005),
                 final_train_acc=deep_train_acc + rng.normal(0, 0.002),
                 final_train_loss=deep_train_loss + rng.normal(0, loss_sd)) for s in range(5)])


def diagnosed(trials: pd.DataFrame, gradflow: pd.DataFrame = E, metric: str = "val_acc",
              mode: str = "max") -> dict:
    """The why section of answers(): diagnose()'s entries, each with its sentence as "text", and
    the section's sentences."""
    return q.answers(trials, E, gradflow, metric, mode, 4, {})["why"]


def test_diagnose_tells_optimisation_from_generalisation_and_follows_the_gradients():
    vanishing = gradflow_frame("vgg24", 1e-6, depth=24)
    entry, = diagnosed(_deep_and_shallow(0.5, deep_train_acc=0.9), vanishing)["degradations"]
    assert (entry["arm"], entry["reference"], entry["where"]) == ("vgg24", "vgg11", "optimisation")
    assert entry["vanishing"] is True and "running average over the epoch" in entry["text"]
    assert "optimisation difficulty" in entry["text"] and "gradients vanish" in entry["text"]

    healthy = gradflow_frame("vgg24", 0.5, depth=24)
    entry, = diagnosed(_deep_and_shallow(0.10), healthy)["degradations"]
    assert entry["where"] == "generalisation" and entry["gap_larger"] == "yes"
    assert entry["gap_diff"] == pytest.approx(0.1, abs=0.01) and entry["gap_ci_lo"] > 0
    assert "generalisation gap, not an optimisation" in entry["text"]
    assert "not below the 1e-3 threshold" in entry["text"] and "vanish" not in entry["text"]

    exploding = gradflow_frame("vgg24", 1e5, depth=24)
    entry, = diagnosed(_deep_and_shallow(0.5), exploding)["degradations"]
    assert entry["exploding"] is True and "explode towards the input" in entry["text"]
    entry, = diagnosed(_deep_and_shallow(0.5), E)["degradations"]
    assert entry["vanishing"] is None and "not recorded" in entry["text"]


def test_a_tied_training_loss_is_not_called_generalisation():
    """Training loss 0.1 vs 0.3 with sd 0.5: the interval holds 0 and large worsenings alike."""
    entry, = diagnosed(_deep_and_shallow(0.3, loss_sd=0.5))["degradations"]
    assert entry["train_loss_higher"] == "tied" and entry["where"] == "unresolved"
    assert "cannot be told from generalisation" in entry["text"]
    assert "a generalisation gap" not in entry["text"]
    # trains no worse, but the gap is no larger (train accuracy falls with val accuracy)
    entry, = diagnosed(_deep_and_shallow(0.10, deep_train_acc=0.89))["degradations"]
    assert entry["where"] == "gap unresolved" and "a generalisation gap" not in entry["text"]


def test_a_pair_within_noise_points_to_the_depth_trend_and_losses_score_worse():
    frame = _deep_and_shallow(0.10).assign(final_val_acc=lambda f: 0.9 + 0.01 * f["seed"] % 3)
    frame.loc[frame["arm"] == "vgg24", "final_val_acc"] -= 0.001
    entry, = diagnosed(frame)["degradations"]
    assert entry["where"] == "within noise"
    assert "not resolved at n=5 vs 5 seeds (see the depth trend)" in entry["text"]
    assert "no degradation to explain" not in entry["text"]
    loss = _deep_and_shallow(0.5).assign(final_val_loss=lambda f: 1 - f["final_val_acc"])
    entry, = diagnosed(loss, None, "val_loss", "min")["degradations"]
    assert entry["text"].startswith("vgg24 scores worse than vgg11 on final_val_loss")


def test_diagnose_stays_within_a_study_and_says_why_nothing_is_diagnosed():
    both = pd.concat([depth_study(0.01, 0.0, seed=1, depths=(20, 56), study="A"),
                      depth_study(0.0, 0.0, seed=2, depths=(20, 56), study="B")], ignore_index=True)
    for e in q.diagnose(both)["degradations"]:
        assert e["arm"].split(":")[0] == e["reference"].split(":")[0] == e["study"]
    rows = [trial(f"plain20{'' if bn else '-nobn'}", "plain20", "plain", 20, s, batchnorm=bn, study=st,
                  final_val_acc=(0.95 if bn else 0.5) + 0.01 * s, final_train_loss=0.1)
            for bn in (True, False) for s in range(3) for st in ("A", "B")]
    frame = pd.DataFrame(rows).assign(arm=lambda f: f["study"] + ":" + f["arm"])
    found = diagnosed(frame)
    assert len(found["batchnorm"]) == 2 and found["batchnorm"][0]["verdict"] == "with BN better"
    assert all(e["arm_bn"][0] == e["arm_nobn"][0] for e in found["batchnorm"])
    assert "no deeper-vs-shallower comparison" in found["text"][0]
    failed = depth_study(0.01, 0.0, seeds=2).assign(status="diverged")
    text = diagnosed(failed)["text"]    # the last sentence is about gradient flow
    assert text[0].startswith("No completed confirmation runs of plain arms")
    assert text[-2].startswith("Left out of the diagnosis")


def test_depth_names_the_pairs_its_single_tests_decide_but_holm_ties():
    """plain20 vs plain32 differ at p ~ 0.02 in one test (the depth trend, the why diagnosis), but
    over the 3 pairs of the pairwise table Holm makes that 0.06: tied there. The depth answer says
    its tests are not adjusted across the pairwise family, and names the pair."""
    scores = {"plain20": ("plain", 20, [0.90, 0.91, 0.92]), "plain32": ("plain", 32, [0.87, 0.88, 0.89]),
              "mlp": ("mlp", 3, [0.895, 0.905, 0.885])}
    trials = pd.DataFrame([trial(arm, arm, family, depth, s, final_val_acc=v)
                           for arm, (family, depth, values) in scores.items() for s, v in enumerate(values)])
    found = q.results(trials, E, E, "val_acc", "max", 4, {})
    pair = found["pairwise"]["pairwise"].set_index(["arm_a", "arm_b"]).loc[("plain20", "plain32")]
    assert pair["p"] < 0.05 < pair["p_holm"] and pair["verdict"] == "tied"
    (row,) = found["depth"]["holm_differs"].to_dict("records")
    assert (row["arm_a"], row["arm_b"], row["sources"], row["pairwise_verdict"]) == \
        ("plain20", "plain32", ["depth trend", "why"], "tied")
    text = " ".join(sentences.words(found)["depth"]["text"])
    assert "not adjusted for the 3 pairs that the ranking's pairwise table Holm-adjusts over" in text
    assert "on val_acc, plain20 vs plain32 (depth trend, why) differ here but are tied" in text
    one_pair = q.results(trials[trials["arm"] != "mlp"], E, E, "val_acc", "max", 4, {})
    assert one_pair["depth"]["holm_differs"].empty   # one pair: Holm adjusts nothing
    assert "Holm-adjusts" not in " ".join(sentences.words(one_pair)["depth"]["text"])


# ---- 4. convergence --------------------------------------------------------------------------------
def test_epochs_to_fraction_reports_median_range_and_censoring():
    frame = epochs_frame({"a": [[0.5, 0.8, 0.9, 0.96, 0.97, 1.0],     # 0.95 reached at epoch 4
                                [0.5, 0.96, 0.97, 0.98, 0.99, 1.0],    # at epoch 2
                                [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]]})      # only at the last: censored
    row = q.epochs_to_fraction(frame, 0.95, "val_acc").iloc[0]
    assert (row["n"], row["epochs_median"], row["epochs_min"], row["epochs_max"]) == (3, 4.0, 2.0, 6.0)
    assert (row["n_censored"], row["all_censored"], row["final_mean"]) == (1, False, 1.0)
    loss = q.epochs_to_fraction(frame, 0.95, "val_loss").iloc[0]   # val_loss = 1.1 - acc: final 0.1
    assert loss["epochs_median"] == 6.0 and loss["all_censored"]    # only the last epoch is within 0.1 / 0.95
    text = " ".join(q.answers(depth_study(0, 0), frame, E)["convergence"]["text"])
    assert "a 4 (2-6, n=3, 1 of 3 seeds censored)" in text


def test_some_censored_seeds_are_not_read_as_all_censored():
    """2 of 3 seeds reach 95% only at their last epoch: n_censored 2, and the flag beside it is
    all_censored (False), not a bare `censored` that reads as contradicting it; budget.py's
    still_improving follows all_censored."""
    frame = epochs_frame({"a": [[0.5, 0.6, 1.0], [0.5, 0.7, 1.0], [0.5, 0.96, 1.0]]})
    table = q.epochs_to_fraction(frame, 0.95, "val_acc")
    assert "censored" not in table and (table["n_censored"][0], table["all_censored"][0]) == (2, False)
    every = q.epochs_to_fraction(epochs_frame({"a": [[0.5, 1.0]] * 2}), 0.95, "val_acc")
    assert (every["n_censored"][0], every["all_censored"][0]) == (2, True)
    text = " ".join(q.answers(depth_study(0, 0), frame, E)["convergence"]["text"])
    assert "a 3 (2-3, n=3, 2 of 3 seeds censored)" in text


def test_generalisation_gap_per_seed_with_an_interval_and_unfinished_trials_left_out():
    frame = epochs_frame({"a": [[0.5, 0.9], [0.7, 0.9]]})
    stopped = epochs_frame({"a": [[0.1, 0.1]]}).assign(trial_id="a-stopped", status="running")
    gap = q.generalisation_gap(pd.concat([frame, stopped])).set_index("epoch")
    assert gap.loc[1, "n"] == 2 and gap.loc[1, "val_acc"] == pytest.approx(0.6)
    assert gap["acc_gap"].tolist() == pytest.approx([0.05, 0.05])
    assert gap["loss_gap"].tolist() == pytest.approx([0.15, 0.15])
    frame.loc[(frame["trial_id"] == "a-1") & (frame["epoch"] == 2), "train_acc"] = 0.97
    final = q.final_gap(pd.concat([frame, stopped])).iloc[0]
    assert (final["n"], final["epoch"]) == (2, 2) and final["acc_gap"] == pytest.approx(0.06)
    assert final["acc_gap_ci_lo"] < 0.05 < 0.07 < final["acc_gap_ci_hi"]


# ---- 5. search -------------------------------------------------------------------------------------
def test_importances_count_completed_trials_only_and_skip_arms_under_the_minimum():
    imp = q.importances(search_frame(), SPACE, "val_acc", "max", seed=0).set_index("param")
    assert imp.loc["lr", "importance"] > 0.8 > imp.loc["weight_decay", "importance"]
    assert (imp["n_trials"] == 24).all() and (imp["arm"] == "a").all()
    done = search_frame()[lambda f: f["status"] == "completed"]
    frame = pd.concat([done.head(9).assign(arm="nine"), done.head(10).assign(arm="ten"),
                       done.assign(arm="fixed-wd", param_weight_decay=1e-4)])
    imp = q.importances(frame, SPACE, "val_acc", "max")
    assert imp["arm"].unique().tolist() == ["ten", "fixed-wd"]
    assert imp[imp["arm"] == "fixed-wd"]["param"].tolist() == ["lr"]
    text = " ".join(q.answers(frame, E, E, "val_acc", "max", 4, SPACE)["search"]["text"])
    assert "nine: only 9 completed search trial(s), too few (under 10)" in text
    assert figures.importance_bars(imp, {}).data and "nine" not in {t.name for t in figures.importance_bars(imp, {}).data}


def test_search_space_kinds_map_to_optuna_distributions():
    assert to_distribution(("loguniform", [1e-3, 1e-1])).log
    assert not to_distribution({"uniform": [0.0, 1.0]}).log
    assert to_distribution(SimpleNamespace(kind="int", args=[16, 256])).high == 256
    choice = to_distribution(("choice", ["sgd", "adamw", [0.5, 0.75]]))
    assert choice.choices == ("sgd", "adamw", "[0.5, 0.75]")
    with pytest.raises(ValueError):
        to_distribution(("normal", [0, 1]))


def test_best_configs_asha_savings_per_study_budget_and_reserved_costs():
    frame = search_frame()
    best = q.best_configs(frame, "val_acc", "max").iloc[0]
    done = frame[frame["status"] == "completed"]
    assert best["score"] == done["final_val_acc"].max() and best["n_completed"] == 24
    assert best["param_lr"] == done.loc[done["final_val_acc"].idxmax(), "param_lr"]
    savings = q.asha_savings(frame, epochs_budget=4).iloc[0]
    assert (savings["trials"], savings["pruned"], savings["diverged"], savings["error"]) == (72, 40, 4, 4)
    assert savings["epochs_used"] == 24 * 4 + 48 and savings["fraction_used"] == pytest.approx(144 / 288)
    per_study = frame.assign(epochs_budget=[8] * 36 + [4] * 36)    # e.g. two studies, 8 and 4 epochs
    assert q.asha_savings(per_study, epochs_budget=4).iloc[0]["full_budget"] == 36 * 8 + 36 * 4
    cost = q.costs(frame).iloc[0]
    assert (cost["phase"], cost["trials"], cost["wall_seconds"]) == ("search", 72, 720.0)
    assert cost["reserved_cpu_seconds"] == 720.0 and "cpu_seconds" not in cost
    assert "720 reserved CPU-s" in " ".join(q.answers(frame, E, E, "val_acc", "max", 4, {})["text"])


def test_load_studies_refuses_different_metrics_and_adds_each_budget(monkeypatch):
    def spec(name, metric="val_acc", mode="max", epochs=4):
        return SimpleNamespace(name=name, metric=metric, mode=mode, epochs=epochs, arm_names=["a"])
    table = pd.DataFrame([trial("a", "vgg11", "plain", 11, 0, phase="search")])
    specs = {"x": spec("x"), "y": spec("y", epochs=8), "z": spec("z", metric="val_loss", mode="min")}
    monkeypatch.setattr(io, "read_folder", lambda f: (f, specs[f], {"trials": table, "epochs": E,
                                                                    "gradflow": E}))
    tables = io.load_studies(["x", "y"])    # same study column in both tables: a copied folder
    assert tables.trials.set_index("arm")["epochs_budget"].to_dict() == {"x:a": 4, "y:a": 8}
    assert tables.trials["study"].tolist() == ["x", "y"]
    with pytest.raises(io.StudyError, match=r"differ in metric \(val_acc vs val_loss\)"):
        io.load_studies(["x", "z"])


# ---- answers() and compute() -----------------------------------------------------------------------
def test_answers_on_one_arm_one_seed_and_no_gradflow_says_too_few():
    trials = pd.DataFrame([trial("mlp", "mlp", "mlp", 3, 0, final_val_acc=0.9, final_train_loss=0.2)])
    result = q.answers(trials, E, E, "val_acc", "max", 4, {})
    text = " ".join(result["text"])
    assert "Too few seeds" in text and "Only one arm" in text and "not recorded" in text
    assert set(result) == {"budget", "ranking", "pairwise", "depth", "why", "convergence", "search",
                           "evidence", "text"}
    json.dumps(result, allow_nan=False)


def _whole_study():
    trials = pd.concat([depth_study(0.005, 0.0), search_frame().assign(arm="plain20", model="plain20",
                                                                       family="plain", depth=20)],
                       ignore_index=True)
    trials.loc[trials["phase"] == "confirm", "final_test_acc"] = 0.9
    flow = pd.concat([gradflow_frame("plain56", 1e-6), gradflow_frame("resnet56", 0.5, family="residual")])
    # converged curves: the arm reached 95% of its final accuracy before the last epoch
    return trials, epochs_frame({"plain20": [[0.5, 0.88, 0.9], [0.6, 0.89, 0.9]]}), flow


def test_answers_on_a_whole_synthetic_study_is_strict_json():
    trials, epochs, flow = _whole_study()
    decoded = json.loads(json.dumps(q.answers(trials, epochs, flow, "val_acc", "max", 4, SPACE),
                                    allow_nan=False))
    text = "\n".join(decoded["text"])
    assert re.search(r"plain 6n\+2 \(plain20, plain32, plain56\): final training loss \(running average "
                     r"over the epoch\) changes by \+0\.00[45]\d* per layer .*: degrades\.", text)
    assert "plain degrades more with depth than residual" in text
    assert "gradients vanish" in text and "plain56" in text
    assert decoded["depth"]["depth_trend"] and decoded["search"]["importances"]
    assert decoded["ranking"]["ranking"][0]["tied_with"] is not None


def test_results_hold_numbers_and_sentences_put_them_into_words():
    trials, epochs, flow = _whole_study()
    found = q.results(trials, epochs, flow, "val_acc", "max", 4, SPACE)
    assert not any("text" in part for part in found.values())
    assert not any("text" in e for e in found["why"]["degradations"] + found["why"]["batchnorm"])
    assert "reason" not in found["budget"]["undertrained"]
    said = sentences.words(found, "val_acc", "max", 0.95)
    assert [t for part in said.values() for t in part["text"]] == q.answers(
        trials, epochs, flow, "val_acc", "max", 4, SPACE)["text"]
    entry = said["why"]["degradations"][0]
    assert list(entry)[-2:] == ["text", "budget_limited"] and entry["text"].startswith(entry["arm"])


def test_compute_runs_each_question_once(monkeypatch):
    trials, epochs, flow = _whole_study()
    calls = {"importances": 0, "ranking": 0}
    for name in calls:
        real = getattr(q, name)
        monkeypatch.setattr(q, name, lambda *a, _real=real, _name=name, **k: (
            calls.__setitem__(_name, calls[_name] + 1), _real(*a, **k))[1])
    spec = SimpleNamespace(name="s", raw={}, metric="val_acc", mode="max", epochs=4)
    tables = SimpleNamespace(spec=spec, specs=[spec], states=[{}], trials=trials, epochs=epochs,
                             gradflow=flow, signalprop=E, space=SPACE, arms=sorted(set(trials["arm"])))
    answers, figs, frames = analysis.compute(tables)
    assert calls == {"importances": 1, "ranking": 1}
    assert set(frames) == {"ranking", "importances", "generalisation_gap", "gradient_profile", "cost",
                           "signal_profile", "prob_better", "expected_best", "space_audit"}
    assert set(frames["gradient_profile"]["arm"]) == {"plain56", "resnet56"} and answers["text"]


@pytest.mark.parametrize("trials", [
    pd.DataFrame(),                                                          # nothing at all
    search_frame(),                                                          # no confirm phase
    pd.DataFrame([trial("resnet20", "resnet20", "residual", 20, s, final_val_acc=0.9)  # no plain, NaN test
                  for s in range(3)]),
])
def test_answers_survive_missing_pieces(trials):
    result = q.answers(trials, E, E, "val_acc", "max", 4, SPACE)
    json.dumps(result, allow_nan=False)
    assert result["text"]


# ---- figures ---------------------------------------------------------------------------------------
def test_depth_effect_draws_one_line_per_series_and_no_bar_for_one_seed():
    vgg = [trial(f"vgg{d}", f"vgg{d}", "plain", d, s, final_val_acc=0.9, final_train_loss=0.2)
           for d in (11, 16) for s in range(1 if d == 16 else 3)]
    frame = pd.concat([depth_study(0.005, 0.0), pd.DataFrame(vgg)], ignore_index=True)
    fig = figures.depth_effect(frame, "val_acc")
    left = [t for t in fig.data if t.xaxis == "x"]
    assert sorted(t.name for t in left) == ["plain 6n+2", "plain vgg", "residual 6n+2"]
    line = next(t for t in left if t.name == "plain vgg")
    assert list(line.x) == [11, 16] and line.error_y.array[1] is None and "n=1" in line.text[1]
    two = pd.concat([depth_study(0.01, 0.0, study="A"), depth_study(0.0, 0.0, study="B")])
    assert {t.name for t in figures.depth_effect(two, "val_acc").data} == {
        "A: plain 6n+2", "A: residual 6n+2", "B: plain 6n+2", "B: residual 6n+2"}


def test_figures_use_completed_runs_and_mark_only_where_a_trial_diverged():
    profile = q.gradient_profile(gradflow_frame("x", 1e-5))
    assert figures.gradflow_heatmaps(profile, ["y"]).layout.annotations    # no arm: an empty figure
    epochs = epochs_frame({"a": [[0.5, 0.9], [0.7, 0.9]]})
    crashed = epochs_frame({"a": [[0.1, 0.1]]}).assign(trial_id="a-x", status="diverged")
    fig = figures.learning_curves(pd.concat([epochs, crashed]), {"a": "#000000"})
    mean = next(t for t in fig.data if t.mode == "lines" and t.fill != "toself" and t.xaxis == "x4")
    assert list(mean.y) == pytest.approx([0.6, 0.9])
    search = pd.concat([epochs_frame({a: [[0.5, 0.6, 0.7]]}, phase="search").assign(trial_id="t0")
                        for a in ("a", "b")])
    trials = pd.DataFrame([trial("a", "vgg11", "plain", 11, 0, phase="search", status="diverged", trial_id="t0"),
                           trial("b", "vgg11", "plain", 11, 0, phase="search", trial_id="t0")])
    fig = figures.search_curves(search, trials, "val_acc", {"a": "#111111", "b": "#222222"})
    assert [len(t.x) for t in fig.data if t.mode == "lines"] == [3, 3]
    marks = [t for t in fig.data if t.mode == "markers"]
    assert len(marks) == 1 and list(marks[0].x) == [3] and marks[0].marker.symbol == "x"
