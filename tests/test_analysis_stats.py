"""The analysis statistics (analysis/stats.py) and questions (analysis/questions.py and the modules
it re-exports), on synthetic tables with planted effects: no files, no Ray, a few seconds.

Each planted effect is large against its noise (or exactly absent), and every generator has a fixed
seed, so a verdict that comes out wrong is a bug, not bad luck.
"""
from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import questions as q
from analysis.search import to_distribution
from analysis.stats import bootstrap_diff_ci, hedges_g, mean_ci, slope_ci, slope_diff_ci, welch

NAN = float("nan")


# ---- synthetic tables ------------------------------------------------------------------------------
def trial(arm, model, family, depth, seed, phase="confirm", status="completed", batchnorm=True,
          **values) -> dict:
    """One row of the trials table; metrics not given are NaN."""
    row = {"study": "synthetic", "phase": phase, "trial_id": f"{arm}-{phase}-{seed}", "arm": arm,
           "model": model, "family": family, "depth": depth, "batchnorm": batchnorm, "width": 0.25,
           "seed": seed, "optuna_trial": seed if phase == "search" else None, "config": "{}",
           "status": status, "epochs_run": 4, "final_train_loss": NAN, "final_train_acc": NAN,
           "final_val_loss": NAN, "final_val_acc": NAN, "final_test_loss": NAN, "final_test_acc": NAN,
           "wall_seconds": 10.0, "cpu_seconds": 10.0, "gpu_seconds": 0.0, "node_id": "n0", "path": "p"}
    row.update(values)
    return row


def depth_study(plain_slope: float, residual_slope: float, seed: int = 0, seeds: int = 5,
                depths=(20, 32, 56), noise: float = 0.01) -> pd.DataFrame:
    """plainN and resnetN arms: final_train_loss = 0.2 + slope * depth + N(0, noise), and
    final_val_acc falling by the same amount."""
    rng = np.random.default_rng(seed)
    rows = []
    for family, prefix, slope in (("plain", "plain", plain_slope), ("residual", "resnet", residual_slope)):
        for depth in depths:
            for s in range(seeds):
                loss = 0.2 + slope * depth + rng.normal(0, noise)
                acc = 0.95 - slope * depth + rng.normal(0, noise)
                rows.append(trial(f"{prefix}{depth}", f"{prefix}{depth}", family, depth, s,
                                  final_train_loss=loss, final_val_acc=acc))
    return pd.DataFrame(rows)


def arms_frame(means: dict, sd: float = 0.01, seeds: int = 5, seed: int = 0, column="final_val_acc"):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([trial(arm, "vgg11", "plain", 11, s, **{column: rng.normal(m, sd)})
                         for arm, m in means.items() for s in range(seeds)])


def gradflow_frame(arm: str, first_norm: float, seeds: int = 3, layers: int = 8, epochs: int = 2,
                   family="plain", depth=56) -> pd.DataFrame:
    """Per-layer rows: grad_norm falls geometrically from 1.0 (last layer) to first_norm (layer 0)."""
    norms = np.geomspace(first_norm, 1.0, layers)
    return pd.DataFrame([{"study": "synthetic", "phase": "confirm", "trial_id": f"{arm}-{s}", "arm": arm,
                          "model": arm, "family": family, "depth": depth, "batchnorm": True,
                          "width": 0.25, "seed": s, "epoch": e, "layer": f"l{i}", "index": i,
                          "grad_mean_abs": norms[i] / 100, "grad_max_abs": norms[i], "grad_norm": norms[i],
                          "weight_norm": 1.0, "update_ratio": 1e-3}
                         for s in range(seeds) for e in range(1, epochs + 1) for i in range(layers)])


def epochs_frame(curves: dict[str, list[list[float]]], column="val_acc", phase="confirm") -> pd.DataFrame:
    """arm -> one curve per seed; train_acc is the curve + 0.05, losses 1 - acc (+0.1 for val)."""
    rows = []
    for arm, per_seed in curves.items():
        for s, curve in enumerate(per_seed):
            for e, v in enumerate(curve, start=1):
                rows.append({"study": "synthetic", "phase": phase, "trial_id": f"{arm}-{s}", "arm": arm,
                             "model": "mlp", "family": "mlp", "depth": 3, "batchnorm": True, "width": 1.0,
                             "seed": s, "epoch": e, column: v, "train_acc": v + 0.05, "val_acc": v,
                             "train_loss": 1 - v - 0.05, "val_loss": 1 - v + 0.1, "lr": 0.01,
                             "status": "completed" if e == len(curve) else "running"})
    return pd.DataFrame(rows)


# ---- stats.py --------------------------------------------------------------------------------------
def test_mean_ci_matches_a_hand_computation():
    mean, lo, hi, n = mean_ci([1.0, 2.0, 3.0, 4.0, NAN])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2    # t(0.975, 3) * sd / sqrt(4)
    assert (mean, n) == (2.5, 4)
    assert lo == pytest.approx(2.5 - half) and hi == pytest.approx(2.5 + half)
    assert mean_ci([1.0, 2.0, 3.0], level=0.9)[2] == pytest.approx(2 + 2.919985580355516 / math.sqrt(3))
    one = mean_ci([0.7])
    assert one[0] == 0.7 and math.isnan(one[1]) and math.isnan(one[2]) and one[3] == 1
    assert math.isnan(mean_ci([])[0])


def test_slope_ci_matches_scipy_and_the_textbook_formula():
    rng = np.random.default_rng(1)
    x = np.repeat([11, 16, 24], 4).astype(float)
    y = 0.01 * x + rng.normal(0, 0.02, len(x))
    fit = slope_ci(x, y)
    ref = sps.linregress(x, y)
    residuals = y - ref.intercept - ref.slope * x
    se = math.sqrt(np.sum(residuals ** 2) / (len(x) - 2) / np.sum((x - x.mean()) ** 2))
    half = sps.t.ppf(0.975, len(x) - 2) * se
    assert fit["slope"] == pytest.approx(ref.slope) and fit["p"] == pytest.approx(ref.pvalue)
    assert fit["lo"] == pytest.approx(ref.slope - half) and fit["hi"] == pytest.approx(ref.slope + half)
    assert fit["n"] == 12
    assert math.isnan(slope_ci([1, 1, 1], [1, 2, 3])["slope"])    # one distinct x
    assert math.isnan(slope_ci([1, 2], [1, 2])["lo"])              # two points


def test_welch_and_hedges_g_match_scipy_and_hand_values():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    ours, ref = welch(a, b), sps.ttest_ind(a, b, equal_var=False)
    assert ours["t"] == pytest.approx(ref.statistic) and ours["p"] == pytest.approx(ref.pvalue)
    assert ours["diff"] == -1.5 and ours["lo"] < -1.5 < ours["hi"]
    pooled = math.sqrt((3 * 5 / 3 + 2 * 4.0) / 5)
    assert hedges_g(a, b) == pytest.approx(-1.5 / pooled * (1 - 3 / (4 * 7 - 9)))
    assert math.isnan(welch([1.0], b)["p"]) and math.isnan(hedges_g([1.0], b))
    flat = welch([1.0, 1.0], [2.0, 2.0])
    assert flat["p"] == 0.0 and flat["lo"] == flat["hi"] == -1.0
    lo, hi = bootstrap_diff_ci([5.0, 5.1, 4.9, 5.0], [1.0, 1.1, 0.9, 1.0])
    assert 3.8 < lo < 4.0 < hi < 4.2


def test_slope_diff_ci_recovers_the_two_separate_slopes():
    rng = np.random.default_rng(2)
    x = np.tile(np.repeat([20.0, 32.0, 56.0], 5), 2)
    g = np.repeat([True, False], 15)
    y = np.where(g, 0.01, 0.0) * x + rng.normal(0, 0.01, len(x))
    fit = slope_diff_ci(x, y, g)
    assert fit["slope_true"] == pytest.approx(sps.linregress(x[g], y[g]).slope)
    assert fit["slope_false"] == pytest.approx(sps.linregress(x[~g], y[~g]).slope)
    assert fit["lo"] > 0.008 and fit["hi"] < 0.012 and fit["p"] < 1e-6


# ---- 1. ranking ------------------------------------------------------------------------------------
def test_same_distribution_arms_tie_and_a_clearly_better_arm_ranks_first():
    frame = arms_frame({"twin_a": 0.90, "twin_b": 0.90, "best": 0.99}, sd=0.01)
    table = q.ranking(frame, "val_acc", "max").set_index("arm")
    assert table.index[0] == "best" and table.loc["best", "rank"] == 1
    assert table.loc["best", "tied_with"] == []
    assert table.loc["twin_a", "rank"] == table.loc["twin_b", "rank"] == 2
    assert table.loc["twin_a", "tied_with"] == ["twin_b"]
    verdicts = q.pairwise(frame, "val_acc", "max").set_index(["arm_a", "arm_b"])["verdict"]
    assert verdicts[("best", verdicts.index[0][1])] == "a better"
    twins = [v for (a, b), v in verdicts.items() if {a, b} == {"twin_a", "twin_b"}]
    assert twins == ["tied"]


def test_ranking_for_a_loss_prefers_the_lowest_and_excludes_failed_trials():
    frame = arms_frame({"low": 0.1, "high": 0.5}, column="final_val_loss")
    crashed = [trial("high", "vgg11", "plain", 11, 9, status="diverged", final_val_loss=-100.0),
               trial("high", "vgg11", "plain", 11, 8, status="error", final_val_loss=-100.0)]
    frame = pd.concat([frame, pd.DataFrame(crashed)], ignore_index=True)
    table = q.ranking(frame, "val_loss", "min").set_index("arm")
    assert list(table.index) == ["low", "high"]
    assert table.loc["high", "n"] == 5 and table.loc["high", "excluded"] == 2
    assert table.loc["high", "mean"] == pytest.approx(0.5, abs=0.02)
    assert q.pairwise(frame, "val_loss", "min")["verdict"].tolist() == ["a better"]


def test_one_seed_gives_too_few_seeds_not_a_verdict():
    frame = arms_frame({"a": 0.9, "b": 0.5}, seeds=1)
    assert q.pairwise(frame, "val_acc", "max")["verdict"].tolist() == ["too few seeds"]
    assert q.ranking(frame, "val_acc", "max")["rank"].tolist() == [1, 1]


# ---- 2. depth --------------------------------------------------------------------------------------
def test_planted_degradation_null_and_improvement_get_their_verdicts():
    trend = q.depth_trend(depth_study(plain_slope=0.005, residual_slope=0.0), "final_train_loss")
    verdicts = dict(zip(trend["family"], trend["verdict"]))
    assert verdicts == {"plain": "degrades", "residual": "no significant change"}
    plain = trend[trend["family"] == "plain"].iloc[0]
    assert plain["ci_lo"] < 0.005 < plain["ci_hi"] and plain["n_runs"] == 15
    assert plain["arms"] == ["plain20", "plain32", "plain56"] and plain["series"] == "plain-6n+2"
    improving = q.depth_trend(depth_study(0.0, -0.005), "final_train_loss")
    assert improving.set_index("family").loc["residual", "verdict"] == "improves"
    accuracy = q.depth_trend(depth_study(0.005, 0.0), "final_val_acc")   # falls with depth
    assert accuracy.set_index("family").loc["plain", "verdict"] == "degrades"


def test_one_depth_is_too_few_and_vgg_is_not_mixed_with_plain_nets():
    frame = pd.concat([depth_study(0.005, 0.0, depths=(20,)),
                       pd.DataFrame([trial("vgg16", "vgg16", "plain", 16, s, final_train_loss=0.3)
                                     for s in range(3)])])
    trend = q.depth_trend(frame, "final_train_loss")
    assert set(trend["verdict"]) == {"too few depths to tell"}
    assert set(trend["series"]) == {"plain-6n+2", "resnet-6n+2", "vgg"}


def test_matched_pairs_and_degradation_gap():
    planted = depth_study(plain_slope=0.005, residual_slope=0.0)
    pairs = q.matched_pairs(planted, "final_train_loss")
    assert pairs["depth"].tolist() == [20, 32, 56]
    assert pairs.iloc[-1]["verdict"] == "residual better" and pairs.iloc[-1]["diff"] > 0.2
    gap = q.degradation_gap(planted, "final_train_loss").iloc[0]
    assert gap["verdict"] == "plain degrades more with depth than residual"
    assert gap["ci_lo"] < 0.005 < gap["ci_hi"]
    same = q.degradation_gap(depth_study(0.0, 0.0, seed=3), "final_train_loss").iloc[0]
    assert same["verdict"] == "no significant difference in depth trend"
    one_depth = q.degradation_gap(depth_study(0.005, 0.0, depths=(20,)), "final_train_loss").iloc[0]
    assert one_depth["verdict"] == "too few matched depths to tell"


# ---- 3. why ----------------------------------------------------------------------------------------
def test_vanishing_gradients_are_flagged_and_healthy_ones_are_not():
    flow = pd.concat([gradflow_frame("plain56", first_norm=1e-6), gradflow_frame("resnet56", 0.5)])
    att = q.attenuation(flow).set_index("arm")
    assert bool(att.loc["plain56", "vanishing"]) and not bool(att.loc["resnet56", "vanishing"])
    assert att.loc["plain56", "ratio_first"] == pytest.approx(1e-6)
    assert att.loc["resnet56", "n"] == 3
    profile = q.gradient_profile(flow)
    assert len(profile) == 2 * 2 * 8 and (profile["n"] == 3).all()
    cell = profile.set_index(["arm", "epoch", "index"]).loc[("plain56", 1, 7)]
    assert cell["grad_norm"] == pytest.approx(1.0) and cell["layer"] == "l7"
    # one healthy seed among vanishing ones: not "every seed", so not flagged
    mixed = pd.concat([gradflow_frame("x", 1e-6, seeds=2), gradflow_frame("x", 0.5, seeds=1)
                       .assign(trial_id="x-healthy")])
    assert not bool(q.attenuation(mixed)["vanishing"].iloc[0])


def _deep_and_shallow(deep_train_loss: float) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        [trial("vgg11", "vgg11", "plain", 11, s, final_val_acc=0.95 + rng.normal(0, 0.005),
               final_train_loss=0.10 + rng.normal(0, 0.005)) for s in range(5)]
        + [trial("vgg24", "vgg24", "plain", 24, s, final_val_acc=0.85 + rng.normal(0, 0.005),
                 final_train_loss=deep_train_loss + rng.normal(0, 0.005)) for s in range(5)])


def test_diagnose_tells_optimisation_from_generalisation_and_follows_the_gradients():
    vanishing = gradflow_frame("vgg24", 1e-6, depth=24)
    found = q.diagnose(_deep_and_shallow(deep_train_loss=0.5), vanishing, "val_acc", "max")
    entry, = found["degradations"]
    assert (entry["arm"], entry["reference"], entry["where"]) == ("vgg24", "vgg11", "optimisation")
    assert entry["vanishing"] is True
    assert "optimisation difficulty" in entry["text"] and "gradients vanish" in entry["text"]

    healthy = gradflow_frame("vgg24", 0.5, depth=24)
    entry, = q.diagnose(_deep_and_shallow(deep_train_loss=0.10), healthy, "val_acc", "max")["degradations"]
    assert entry["where"] == "generalisation" and entry["vanishing"] is False
    assert "generalisation gap" in entry["text"] and "do not vanish" in entry["text"]

    entry, = q.diagnose(_deep_and_shallow(0.5), pd.DataFrame(), "val_acc", "max")["degradations"]
    assert entry["vanishing"] is None and "not recorded" in entry["text"]


def test_diagnose_compares_batchnorm_and_says_when_nothing_degrades():
    rows = [trial(f"plain20{'' if bn else '-nobn'}", "plain20", "plain", 20, s, batchnorm=bn,
                  final_val_acc=(0.95 if bn else 0.5) + 0.01 * s, final_train_loss=0.1)
            for bn in (True, False) for s in range(3)]
    found = q.diagnose(pd.DataFrame(rows), None, "val_acc", "max")
    bn, = found["batchnorm"]
    assert bn["verdict"] == "with BN better" and bn["arm_nobn"] == "plain20-nobn"
    assert "no depth degradation" in found["text"][0]


# ---- 4. convergence --------------------------------------------------------------------------------
def test_epochs_to_fraction_on_known_curves():
    frame = epochs_frame({"a": [[0.5, 0.8, 0.9, 0.96, 0.97, 1.0],     # 0.95 reached at epoch 4
                                [0.5, 0.96, 0.97, 0.98, 0.99, 1.0]]})  # at epoch 2
    row = q.epochs_to_fraction(frame, 0.95, "val_acc").iloc[0]
    assert (row["n"], row["epochs_mean"], row["epochs_min"], row["epochs_max"]) == (2, 3.0, 2.0, 4.0)
    assert row["final_mean"] == 1.0
    loss = q.epochs_to_fraction(frame, 0.95, "val_loss").iloc[0]   # val_loss = 1.1 - acc: final 0.1
    assert loss["epochs_mean"] == 6.0     # only the last epoch is within 0.1 / 0.95


def test_generalisation_gap_and_unfinished_trials_are_left_out():
    frame = epochs_frame({"a": [[0.5, 0.9], [0.7, 0.9]]})
    stopped = epochs_frame({"a": [[0.1, 0.1]]}).assign(trial_id="a-stopped", status="running")
    gap = q.generalisation_gap(pd.concat([frame, stopped])).set_index("epoch")
    assert gap.loc[1, "n"] == 2 and gap.loc[1, "val_acc"] == pytest.approx(0.6)
    assert gap["acc_gap"].tolist() == pytest.approx([0.05, 0.05])
    assert gap["loss_gap"].tolist() == pytest.approx([0.15, 0.15])


# ---- 5. search -------------------------------------------------------------------------------------
def search_frame(seed: int = 0) -> pd.DataFrame:
    """Completed trials whose score depends only on lr; pruned, diverged and errored trials whose
    score depends only on weight_decay (with a huge spread): counted, they would make
    weight_decay the important one."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(24):
        lr, wd = 10 ** rng.uniform(-3, -1), 10 ** rng.uniform(-5, -3)
        rows.append(trial("a", "vgg11", "plain", 11, i, phase="search", param_lr=lr, param_weight_decay=wd,
                          final_val_acc=0.9 - (np.log10(lr) + 2) ** 2 / 10, epochs_run=4))
    for i, status in enumerate(["pruned"] * 40 + ["diverged"] * 4 + ["error"] * 4, start=100):
        wd = 10 ** rng.uniform(-5, -3)
        rows.append(trial("a", "vgg11", "plain", 11, i, phase="search", status=status, param_lr=0.01,
                          param_weight_decay=wd, final_val_acc=10 * np.log10(wd) + 60, epochs_run=1))
    return pd.DataFrame(rows)


SPACE = {"lr": ("loguniform", [1e-3, 1e-1]), "weight_decay": {"loguniform": [1e-5, 1e-3]}}


def test_importances_count_completed_trials_only():
    imp = q.importances(search_frame(), SPACE, "val_acc", "max", seed=0).set_index("param")
    assert imp.loc["lr", "importance"] > 0.8 > imp.loc["weight_decay", "importance"]
    assert (imp["n_trials"] == 24).all() and (imp["arm"] == "a").all()


def test_importances_skip_thin_arms_and_constant_params():
    frame = search_frame()
    few = frame[frame["status"] == "completed"].head(1).assign(arm="thin")
    constant = frame[frame["status"] == "completed"].assign(arm="fixed-wd", param_weight_decay=1e-4)
    imp = q.importances(pd.concat([few, constant]), SPACE, "val_acc", "max")
    assert imp["arm"].tolist() == ["fixed-wd"] and imp["param"].tolist() == ["lr"]


def test_search_space_kinds_map_to_optuna_distributions():
    assert to_distribution(("loguniform", [1e-3, 1e-1])).log
    assert not to_distribution({"uniform": [0.0, 1.0]}).log
    assert to_distribution(SimpleNamespace(kind="int", args=[16, 256])).high == 256
    choice = to_distribution(("choice", ["sgd", "adamw", [0.5, 0.75]]))
    assert choice.choices == ("sgd", "adamw", "[0.5, 0.75]")
    with pytest.raises(ValueError):
        to_distribution(("normal", [0, 1]))


def test_best_configs_asha_savings_and_costs():
    frame = search_frame()
    best = q.best_configs(frame, "val_acc", "max").iloc[0]
    done = frame[frame["status"] == "completed"]
    assert best["score"] == done["final_val_acc"].max() and best["n_completed"] == 24
    assert best["param_lr"] == done.loc[done["final_val_acc"].idxmax(), "param_lr"]
    savings = q.asha_savings(frame, epochs_budget=4).iloc[0]
    assert (savings["trials"], savings["pruned"], savings["diverged"], savings["error"]) == (72, 40, 4, 4)
    assert savings["epochs_used"] == 24 * 4 + 48 and savings["fraction_used"] == pytest.approx(144 / 288)
    cost = q.costs(frame).iloc[0]
    assert (cost["phase"], cost["trials"], cost["wall_seconds"]) == ("search", 72, 720.0)


# ---- answers() -------------------------------------------------------------------------------------
def test_answers_on_one_arm_one_seed_and_no_gradflow_says_too_few():
    trials = pd.DataFrame([trial("mlp", "mlp", "mlp", 3, 0, final_val_acc=0.9, final_train_loss=0.2)])
    result = q.answers(trials, pd.DataFrame(), pd.DataFrame(), "val_acc", "max", 4, {})
    text = " ".join(result["text"])
    assert "Too few seeds" in text and "Only one arm" in text and "not recorded" in text
    assert set(result) == {"ranking", "pairwise", "depth", "why", "convergence", "search", "text"}
    json.dumps(result, allow_nan=False)


def test_answers_on_a_whole_synthetic_study_is_strict_json():
    trials = pd.concat([depth_study(0.005, 0.0), search_frame().assign(arm="plain20", model="plain20",
                                                                       family="plain", depth=20)],
                       ignore_index=True)
    trials.loc[trials["phase"] == "confirm", "final_test_acc"] = 0.9
    flow = pd.concat([gradflow_frame("plain56", 1e-6), gradflow_frame("resnet56", 0.5, family="residual")])
    epochs = epochs_frame({"plain20": [[0.5, 0.9], [0.6, 0.9]]})
    result = q.answers(trials, epochs, flow, "val_acc", "max", 4, SPACE)
    decoded = json.loads(json.dumps(result, allow_nan=False))
    text = "\n".join(decoded["text"])
    assert re.search(r"plain-6n\+2 \(plain20, plain32, plain56\): final training loss changes by "
                     r"\+0\.00[45]\d* per layer .*: degrades\.", text)
    assert "plain degrades more with depth than residual" in text
    assert "Gradients vanish" in text and "plain56" in text
    assert decoded["depth"]["depth_trend"] and decoded["search"]["importances"]
    assert decoded["ranking"]["ranking"][0]["tied_with"] is not None


@pytest.mark.parametrize("trials", [
    pd.DataFrame(),                                                          # nothing at all
    search_frame(),                                                          # no confirm phase
    pd.DataFrame([trial("resnet20", "resnet20", "residual", 20, s, final_val_acc=0.9)  # no plain, NaN test
                  for s in range(3)]),
])
def test_answers_survive_missing_pieces(trials):
    result = q.answers(trials, pd.DataFrame(), pd.DataFrame(), "val_acc", "max", 4, SPACE)
    json.dumps(result, allow_nan=False)
    assert result["text"]
