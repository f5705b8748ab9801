"""The analysis statistics (analysis/stats.py) and the ranking and depth questions, on synthetic
tables with planted effects: no files, no Ray, a few seconds. The table generators here are shared
with test_analysis_questions.py (why, convergence, search, answers, figures).

Each planted effect is large against its noise (or exactly absent), and every generator has a fixed
seed, so a verdict that comes out wrong is a bug, not bad luck.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import questions as q
from analysis.ranking import ranking
from analysis.stats import (hedges_g, holm, mean_ci, slope_ci, slope_diff_ci, t_interval, value_range,
                            welch)
from trainables.models import model_line

NAN = float("nan")


# ---- synthetic tables ------------------------------------------------------------------------------
def trial(arm, model, family, depth, seed, phase="confirm", status="completed", batchnorm=True,
          study="synthetic", **values) -> dict:
    """One row of the trials table; metrics not given are NaN."""
    row = {"study": study, "phase": phase, "trial_id": f"{arm}-{phase}-{seed}", "arm": arm,
           "model": model, "family": family, "line": model_line(model), "depth": depth, "batchnorm": batchnorm, "width": 0.25,
           "seed": seed, "optuna_trial": seed if phase == "search" else None, "config": "{}",
           "status": status, "epochs_run": 4, "final_train_loss": NAN, "final_train_acc": NAN,
           "final_val_loss": NAN, "final_val_acc": NAN, "final_test_loss": NAN, "final_test_acc": NAN,
           "wall_seconds": 10.0, "cpu_seconds": 10.0, "gpu_seconds": 0.0, "node_id": "n0", "path": "p"}
    row.update(values)
    return row


def depth_study(plain_slope: float, residual_slope: float, seed: int = 0, seeds: int = 5,
                depths=(20, 32, 56), noise: float = 0.01, study: str = "synthetic") -> pd.DataFrame:
    """plainN and resnetN arms: final_train_loss = 0.2 + slope * depth + N(0, noise), and
    final_val_acc falling by the same amount. With a `study` other than "synthetic" the arms are
    named "<study>:<arm>", as io.load_studies names them when several studies are read."""
    rng = np.random.default_rng(seed)
    rows = []
    for family, prefix, slope in (("plain", "plain", plain_slope), ("residual", "resnet", residual_slope)):
        for depth in depths:
            for s in range(seeds):
                loss = 0.2 + slope * depth + rng.normal(0, noise)
                acc = 0.95 - slope * depth + rng.normal(0, noise)
                arm = f"{prefix}{depth}" if study == "synthetic" else f"{study}:{prefix}{depth}"
                rows.append(trial(arm, f"{prefix}{depth}", family, depth, s, study=study,
                                  final_train_loss=loss, final_val_acc=acc, final_train_acc=acc))
    return pd.DataFrame(rows)


def arms_frame(means: dict, sd: float = 0.01, seeds: int = 5, seed: int = 0, column="final_val_acc"):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([trial(arm, "vgg11", "plain", 11, s, **{column: rng.normal(m, sd)})
                         for arm, m in means.items() for s in range(seeds)])


def gradflow_frame(arm: str, first_norm: float, seeds: int = 3, layers: int = 8, epochs: int = 2,
                   family="plain", depth=56, line="6n+2") -> pd.DataFrame:
    """Per-layer rows: grad_norm falls geometrically from 1.0 (last layer) to first_norm (layer 0);
    trial ids as trial() makes them, so that they match completed confirmation trials."""
    norms = np.geomspace(first_norm, 1.0, layers)
    return pd.DataFrame([{"study": "synthetic", "phase": "confirm", "trial_id": f"{arm}-confirm-{s}", "arm": arm,
                          "model": arm, "family": family, "line": line, "depth": depth,
                          "batchnorm": True,
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
                             "model": "mlp", "family": "mlp", "line": "mlp", "depth": 3, "batchnorm": True,
                             "width": 1.0,
                             "seed": s, "epoch": e, column: v, "train_acc": v + 0.05, "val_acc": v,
                             "train_loss": 1 - v - 0.05, "val_loss": 1 - v + 0.1, "lr": 0.01,
                             "status": "completed" if e == len(curve) else "running"})
    return pd.DataFrame(rows)


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


def test_welch_matches_the_textbook_formulas():
    """Equal n and variances: df = 2 (n - 1) = 4, so the t table's t(0.975, 4) = 2.776445 gives
    the interval; unequal ones: t and the Welch-Satterthwaite df worked out as fractions."""
    even = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])     # variances 1 and 1, se = sqrt(1/3 + 1/3)
    assert even["t"] == pytest.approx(-3 / math.sqrt(2 / 3)) and even["df"] == pytest.approx(4.0)
    assert even["lo"] == pytest.approx(-3 - 2.776445105 * math.sqrt(2 / 3))
    assert even["hi"] == pytest.approx(-3 + 2.776445105 * math.sqrt(2 / 3))
    assert even["p"] == pytest.approx(0.0213116, abs=1e-6)
    # a: mean 2.5, var 5/3, n 4; b: mean 4, var 4, n 3: se^2 = 5/12 + 4/3 = 7/4,
    # df = (7/4)^2 / ((5/12)^2 / 3 + (4/3)^2 / 2) = 1323/409
    odd = welch([1.0, 2.0, 3.0, 4.0, NAN], [2.0, 4.0, 6.0])
    assert (odd["diff"], odd["n_a"], odd["n_b"]) == (-1.5, 4, 3)
    assert odd["t"] == pytest.approx(-1.5 / math.sqrt(7 / 4)) and odd["df"] == pytest.approx(1323 / 409)
    half = sps.t.ppf(0.975, 1323 / 409) * math.sqrt(7 / 4)
    assert (odd["lo"], odd["hi"]) == pytest.approx((-1.5 - half, -1.5 + half))
    assert odd["p"] == pytest.approx(2 * sps.t.sf(1.5 / math.sqrt(7 / 4), 1323 / 409))
    assert welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], level=0.9)["hi"] == pytest.approx(
        -3 + 2.131847 * math.sqrt(2 / 3))                # t(0.95, 4) = 2.131847


def test_the_scipy_wrappers_answer_nan_or_zero_width_where_scipy_would_not():
    assert math.isnan(welch([1.0, NAN], [2.0, 3.0])["t"]) and welch([1.0], [2.0, 3.0])["n_a"] == 1
    assert math.isnan(welch([], [2.0, 3.0])["diff"])
    same = welch([1.0, 1.0, 1.0], [1.0, 1.0])
    assert (same["t"], same["p"], same["df"], same["lo"], same["hi"]) == (0.0, 1.0, 3.0, 0.0, 0.0)
    assert welch([2.0, 2.0], [1.0, 1.0])["t"] == math.inf
    assert t_interval(0.5, 0.0, 3) == (0.5, 0.5)
    # an arm stuck at chance in every seed: equal floats whose variance rounds to 3e-34, not 0
    stuck = welch([0.1] * 3, [0.7] * 3)
    assert (stuck["t"], stuck["df"], stuck["diff"]) == (-math.inf, 4.0, pytest.approx(-0.6))
    assert math.isnan(hedges_g([0.1] * 3, [0.7] * 3))
    assert welch([0.1] * 3, [0.1] * 4)["p"] == 1.0   # their means differ by 2e-17
    assert mean_ci([0.9, 0.9, 0.9])[1:] == (0.9, 0.9, 3)
    with warnings.catch_warnings():     # one arm without spread: no warning from scipy either
        warnings.simplefilter("error")
        flat = welch([0.3, 0.3, 0.3], [0.9, 0.91, 0.92])
    assert flat["diff"] == pytest.approx(-0.61) and flat["df"] == pytest.approx(2.0)
    assert flat["hi"] == pytest.approx(-0.61 + 4.302653 * 0.01 / math.sqrt(3))   # t(0.975, 2)


def test_hedges_g_matches_a_hand_computation():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    pooled = math.sqrt((3 * 5 / 3 + 2 * 4.0) / 5)
    assert hedges_g(a, b) == pytest.approx(-1.5 / pooled * (1 - 3 / (4 * 7 - 9)))
    assert math.isnan(welch([1.0], b)["p"]) and math.isnan(hedges_g([1.0], b))
    flat = welch([1.0, 1.0], [2.0, 2.0])
    assert flat["p"] == 0.0 and flat["lo"] == flat["hi"] == -1.0


def test_holm_matches_a_hand_computation():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max so far 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, NAN])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[4])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0] and len(holm([])) == 0


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


def fixed_scores(scores: dict, phase: str = "confirm", **values) -> pd.DataFrame:
    """arm -> its runs' final_val_acc, one run per seed (plus `values` in every row)."""
    return pd.DataFrame([trial(arm, "vgg11", "plain", 11, s, phase=phase, final_val_acc=v, **values)
                         for arm, runs in scores.items() for s, v in enumerate(runs)])


def test_overlapping_the_best_arm_is_not_sharing_its_rank():
    """wide's interval (0.83 to 1.07) overlaps mid's and low's, but mid's lies wholly above low's
    (0.923 > 0.917): overlap is not transitive. The sentence says what the rank column says: wide
    and mid share rank 1, low overlaps wide yet ranks 2."""
    frame = fixed_scores({"wide": [0.90, 1.00, 0.95], "mid": [0.93, 0.94, 0.935],
                          "low": [0.90, 0.91, 0.905]})
    table = q.ranking(frame, "val_acc", "max").set_index("arm")
    assert table["rank"].to_dict() == {"wide": 1, "mid": 1, "low": 2}
    assert "low" in table.loc["wide", "tied_with"]
    text = q.answers(frame, pd.DataFrame(), pd.DataFrame())["ranking"]["text"][1]
    assert "they share rank 1" not in text
    assert "its 95% interval overlaps mid, low" in text and "wide, mid share rank 1" in text
    assert "low overlaps wide yet ranks 2, as mid lies wholly above it" in text


def test_the_ranking_says_its_metric_was_selected_on_and_shows_the_test_beside_it():
    """The search chose configurations by final_val_acc: under `split: fixed` (every run on split
    seed 0, the search's) the confirmed val_acc is optimistically biased, the test metric is not;
    under `per_seed` only seed 0 shares the search's split; no sentence without a test metric."""
    searched = fixed_scores({"a": [0.9, 0.8], "b": [0.85, 0.7]}, phase="search", split_seed=0)
    confirm = fixed_scores({"a": [0.90, 0.91, 0.92], "b": [0.86, 0.87, 0.88]}, final_test_acc=0.8)
    fixed = pd.concat([searched, confirm.assign(split_seed=0)], ignore_index=True)
    assert q.selection_split(fixed) == {"searched": 4, "runs": 6, "on_search_split": 6}
    columns = list(q.ranking(fixed))
    assert columns[columns.index("ci_hi") + 1:columns.index("ci_hi") + 4] == ["test_mean", "test_ci_lo",
                                                                            "test_ci_hi"]

    def said(trials):
        return " ".join(q.answers(trials, pd.DataFrame(), pd.DataFrame())["ranking"]["text"])
    assert ("final val_acc on the same validation split that every confirmation run here is scored on "
            "(`split: fixed`), so these val_acc values are optimistically biased") in said(fixed)
    assert "the test values (final_test_acc, the test_mean column) are not" in said(fixed)
    per_seed = pd.concat([searched, confirm.assign(split_seed=confirm["seed"])], ignore_index=True)
    assert "on a validation split that 2 of the 6 confirmation runs here are scored on" in said(per_seed)
    untested = pd.concat([searched, confirm.assign(split_seed=0, final_test_acc=NAN)])
    assert "optimistically biased" not in said(untested)
    assert "optimistically biased" not in said(confirm.assign(split_seed=0))   # no search: no choice


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


def test_pairwise_verdicts_use_holm_adjusted_p_values():
    """x-y and y-z differ at p ~ 0.037 unadjusted, x-z at p ~ 0.004: over three pairs Holm keeps
    only x-z (0.004 x 3), the others become 0.037 x 2 > 0.05: tied."""
    values = {"x": [1.0, 1.1, 1.2], "y": [1.25, 1.35, 1.45], "z": [1.5, 1.6, 1.7]}
    frame = pd.DataFrame([trial(arm, "vgg11", "plain", 11, s, final_val_acc=v)
                          for arm, vs in values.items() for s, v in enumerate(vs)])
    table = q.pairwise(frame, "val_acc", "max").set_index(["arm_a", "arm_b"])
    assert (table["p"] < 0.05).all()                      # unadjusted, every pair would differ
    assert table["p_holm"].tolist() == pytest.approx(holm(table["p"]).tolist())
    assert table.loc[("z", "x"), "p_holm"] == pytest.approx(3 * table.loc[("z", "x"), "p"])
    assert table["verdict"].to_dict() == {("z", "y"): "tied", ("z", "x"): "a better", ("y", "x"): "tied"}
    text = q.answers(frame, pd.DataFrame(), pd.DataFrame(), "val_acc", "max", 4, {})["pairwise"]["text"]
    assert text[0].startswith("Of 3 pairs of arms, 1 differ") and "2 are tied" in text[0]
    assert "Holm-adjusted" in text[0] and "overlapping 95% intervals" in text[0]
    assert len(text) == 2 and text[1].startswith("z beats x")


def test_completed_trials_without_the_metric_count_as_excluded():
    frame = arms_frame({"a": 0.9, "b": 0.8})
    frame.loc[0, "final_val_acc"] = NAN
    table = q.ranking(frame, "val_acc", "max").set_index("arm")
    assert (table.loc["a", "n"], table.loc["a", "excluded"], table.loc["b", "excluded"]) == (4, 1, 0)
    text = " ".join(q.answers(frame, pd.DataFrame(), pd.DataFrame(), "val_acc", "max", 4, {})["text"])
    assert "Left out" in text and "a 1 (no final_val_acc 1)" in text


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




def test_several_studies_are_never_pooled_or_paired_across():
    """Study A has a planted degradation, study B none: A's trend degrades, B's does not, and no
    pair or gap mixes the two (same arm names but for the study prefix)."""
    both = pd.concat([depth_study(0.01, 0.0, seed=1, depths=(20, 56), study="A"),
                      depth_study(0.0, 0.0, seed=2, depths=(20, 56), study="B")], ignore_index=True)
    trend = q.depth_trend(both, "final_train_loss").set_index(["study", "family"])
    assert trend.loc[("A", "plain"), "verdict"] == "degrades" and trend.loc[("A", "plain"), "n_runs"] == 10
    assert trend.loc[("B", "plain"), "verdict"] == "no significant change"
    pairs = q.matched_pairs(both, "final_train_loss")
    assert len(pairs) == 4
    for r in pairs.itertuples():
        assert r.plain_arm.split(":")[0] == r.residual_arm.split(":")[0] == r.study
    gap = q.degradation_gap(both, "final_train_loss").set_index("study")
    assert gap.loc["A", "verdict"] == "plain degrades more with depth than residual"
    assert gap.loc["B", "verdict"] == "no significant difference in depth trend"
    assert (gap["n_runs"] == 20).all()


def test_one_seed_per_depth_is_too_few_seeds_for_a_trend():
    one = q.depth_trend(depth_study(0.01, 0.0, seeds=1), "final_train_loss")
    assert set(one["verdict"]) == {"too few seeds to tell"}           # 3 depths, 3 runs: no claim
    assert (one["n_replicated_depths"] == 0).all()
    # replicates at one depth only (5 runs at 20, 1 each at 32 and 56): still too few
    frame = depth_study(0.01, 0.0, seeds=5)
    frame = frame[(frame["depth"] == 20) | (frame["seed"] == 0)]
    assert set(q.depth_trend(frame, "final_train_loss")["verdict"]) == {"too few seeds to tell"}
    assert set(q.degradation_gap(frame, "final_train_loss")["verdict"]) == {"too few seeds to tell"}
    two = q.depth_trend(depth_study(0.01, 0.0, seeds=2, depths=(20, 56)), "final_train_loss")
    assert two.set_index("family").loc["plain", "verdict"] == "degrades"
    text = " ".join(q.answers(depth_study(0.01, 0.0, seeds=1), pd.DataFrame(), pd.DataFrame())["depth"]["text"])
    assert "too few seeds to tell (0 of 3 depths have 2 or more runs" in text and "degrades" not in text


def test_depth_text_reports_left_out_runs_and_tells_missing_data_from_a_null():
    frame = depth_study(0.0, 0.0, seeds=3)
    frame.loc[frame["arm"] == "plain56", "status"] = "diverged"
    text = " ".join(q.answers(frame, pd.DataFrame(), pd.DataFrame())["depth"]["text"])
    assert "Left out of the depth analysis" in text and "plain56 3 (diverged 3)" in text
    one_depth = depth_study(0.0, 0.0, depths=(20,))
    text = " ".join(q.answers(one_depth, pd.DataFrame(), pd.DataFrame())["depth"]["text"])
    assert "No line of plain or residual arms has completed runs at 2 or more depths" in text
    failed = depth_study(0.0, 0.0, seeds=2).assign(status="error")
    text = q.answers(failed, pd.DataFrame(), pd.DataFrame())["depth"]["text"]
    assert text[0].startswith("No completed confirmation runs of plain or residual arms")
    assert "missing data, not a null result" in text[0] and "(error 2)" in text[1]


def test_an_accuracys_interval_stays_within_0_and_1():
    """Two seeds far apart: the t-interval of the mean (12.7 standard errors each side) leaves
    [0, 1]; cut to the range, it keeps the part the true mean can be in."""
    mean, lo, hi, n = mean_ci([0.30, 0.90])
    assert (lo < 0 and hi > 1) and mean == pytest.approx(0.6)
    assert mean_ci([0.30, 0.90], within=value_range("final_val_acc")) == (pytest.approx(0.6), 0.0, 1.0, 2)
    assert value_range("final_train_loss") is None and value_range("test_acc") == (0.0, 1.0)
    trials = pd.DataFrame([{"phase": "confirm", "status": "completed", "arm": "a", "family": "mlp",
                            "depth": 2, "seed": s, "final_val_acc": v, "final_test_acc": v}
                           for s, v in enumerate([0.30, 0.90])])
    row = ranking(trials, "val_acc").iloc[0]
    assert (row["ci_lo"], row["ci_hi"], row["test_ci_lo"], row["test_ci_hi"]) == (0.0, 1.0, 0.0, 1.0)
