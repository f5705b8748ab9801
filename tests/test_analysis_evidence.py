"""The evidence beyond one search (analysis/evidence.py, space_audit.py, sentences_evidence.py) on
small synthetic frames: P(A > B) on constructed paired runs, Dodge et al.'s expected best against
brute-force resampling, the search-space audit. (End to end on the tiny study: test_analysis.py.)
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import evidence, figures_evidence, questions, space_audit
from analysis.sentences_evidence import FEW_RUNS

LR = {"lr": ("loguniform", [0.001, 0.3])}


# ---- P(A > B) ------------------------------------------------------------------------------------
def test_prob_better_counts_wins_per_pair_and_ties_as_half():
    a = [1, 2, 3, 4, 5, 6, 7, 8]
    b = [0, 3, 2, 4, 1, 7, 6, 9]          # a wins 4, loses 3, one tie: (4 + 0.5) / 8
    p = evidence.prob_better(a, b, "max")
    assert (p["n"], p["ties"], p["p_better"]) == (8, 1, 4.5 / 8)
    assert p["ci_lo"] <= p["p_better"] <= p["ci_hi"] and 0 <= p["ci_lo"] < p["ci_hi"] <= 1
    assert evidence.prob_better(a, b, "min")["p_better"] == 1 - 4.5 / 8   # lower is better
    assert evidence.prob_better([1, 1, 1], [1, 1, 1])["p_better"] == 0.5
    assert evidence.prob_better(a + [np.nan], b + [3])["n"] == 8          # an unpaired NaN is dropped


def test_prob_better_interval_is_seeded():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=12), rng.normal(size=12)
    first, again = evidence.prob_better(a, b, seed=7), evidence.prob_better(a, b, seed=7)
    assert (first["ci_lo"], first["ci_hi"]) == (again["ci_lo"], again["ci_hi"])
    assert np.isnan(evidence.prob_better([1.0], [0.0])["ci_lo"])   # one pair: no interval


def runs(arms: dict, seeds, split_seeds=None, study=None) -> pd.DataFrame:
    """Completed confirmation runs: arms {name: (family, depth, [score per run])}."""
    rows = []
    for arm, (family, depth, scores) in arms.items():
        for i, score in enumerate(scores):
            rows.append({"phase": "confirm", "status": "completed", "arm": arm, "family": family,
                         "depth": depth, "batchnorm": True, "width": 1.0, "seed": seeds[i],
                         "final_val_acc": score, "study": study,
                         **({"split_seed": split_seeds[i]} if split_seeds is not None else {})})
    return pd.DataFrame(rows)


def test_few_paired_runs_give_no_verdict_and_say_so():
    trials = runs({"resnet20": ("residual", 20, [0.9, 0.91, 0.92]),
                   "plain20": ("plain", 20, [0.8, 0.81, 0.82])}, seeds=[0, 1, 2])
    table = evidence.prob_better_table(trials, order=["resnet20", "plain20"])
    row = table.iloc[0]
    assert (row["n"], row["p_better"], row["matched"], row["few_runs"]) == (3, 1.0, True, True)
    assert row["verdict"] == "too few paired runs" and row["meaningful"] is None
    words = questions.answers(trials, pd.DataFrame(), pd.DataFrame())["evidence"]["text"]
    assert any(FEW_RUNS in s and "matched depth" in s for s in words)


def test_few_paired_runs_claim_nothing_and_agree_only_where_both_decided():
    """3 paired runs, every one won by a: P = 1 with a "1 to 1" interval, yet too few to mean
    anything: `meaningful` and `agree` are empty (None), not "a better" and True, and the sentences
    show no interval. With 6 runs both verdicts are decided and compared."""
    few = runs({"a": ("mlp", 2, [0.90, 0.91, 0.92]), "b": ("mlp", 2, [0.80, 0.81, 0.82])}, seeds=[0, 1, 2])
    answers = questions.answers(few, pd.DataFrame(), pd.DataFrame())
    (row,) = answers["evidence"]["prob_better"]
    assert (row["ci_lo"], row["ci_hi"], row["few_runs"], row["welch_verdict"]) == (1.0, 1.0, True, "a better")
    assert row["meaningful"] is None and row["agree"] is None
    text = " ".join(answers["evidence"]["text"])
    assert "95% CI 1 to 1" not in text and "disagree" not in text
    assert "the table leaves that rule (`meaningful`) and the comparison with Welch's verdict (`agree`) empty" in text
    assert evidence.agreement("a better", "too few seeds") is None and evidence.agreement("", "tied") is None
    assert evidence.agreement("tied", "tied") is True and evidence.agreement("a better", "tied") is False
    many = runs({"a": ("mlp", 2, np.arange(6) / 100 + 0.9), "b": ("mlp", 2, np.arange(6) / 100 + 0.8)},
                seeds=range(6))
    (row,) = questions.answers(many, pd.DataFrame(), pd.DataFrame())["evidence"]["prob_better"]
    assert (row["few_runs"], row["verdict"], row["meaningful"], row["agree"]) == (False, "a better", "a better", True)


def test_runs_pair_on_seed_and_split_seed_when_there_is_one():
    seeds, splits = [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]
    trials = runs({"a": ("mlp", 2, [0.9] * 6), "b": ("mlp", 2, [0.8] * 5 + [0.95])}, seeds, splits)
    trials = trials.drop(index=trials.index[-1])   # b's run (2, 1) is missing: that key has no pair
    row = evidence.prob_better_table(trials).iloc[0]
    assert row["keys"] == ["seed", "split_seed"] and row["n"] == 5 and row["p_better"] == 1.0


def test_a_disagreement_with_welch_is_said():
    """A beats B by 0.001 in every seed, but the seeds spread far more: the paired probability says
    'a better', Welch's unpaired test 'tied', and a sentence says that they disagree."""
    base = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.55])
    trials = runs({"a": ("mlp", 2, base + 0.001), "b": ("mlp", 2, base)}, seeds=range(6))
    answers = questions.answers(trials, pd.DataFrame(), pd.DataFrame())
    (row,) = answers["evidence"]["prob_better"]
    assert (row["verdict"], row["welch_verdict"], row["agree"]) == ("a better", "tied", False)
    assert any("disagree" in s for s in answers["evidence"]["text"])
    other = runs({"a": ("mlp", 2, base + 0.001)}, seeds=range(6), study="other")
    both = pd.concat([trials.assign(study="s"), other.assign(arm="o")])
    assert evidence.prob_better_table(both)[["arm_a", "arm_b"]].values.tolist() == [["a", "b"]]


# ---- expected best ---------------------------------------------------------------------------------
def test_expected_best_matches_brute_force_resampling():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.8, 0.05, size=12)
    mean, std = evidence.expected_best(scores)
    assert mean[0] == pytest.approx(scores.mean()) and np.all(np.diff(mean) > 0)
    v, big_n = np.sort(scores), len(scores)   # Dodge et al.'s eq. 1 as written
    eq1 = [sum(v[i - 1] * ((i / big_n) ** n - ((i - 1) / big_n) ** n) for i in range(1, big_n + 1))
           for n in range(1, big_n + 1)]
    assert mean == pytest.approx(eq1) and mean[-1] < v[-1]
    for n in (1, 2, 5, 12):
        draws = rng.choice(scores, size=(100_000, n)).max(axis=1)
        assert mean[n - 1] == pytest.approx(draws.mean(), abs=1e-3), n
        assert std[n - 1] == pytest.approx(draws.std(), abs=1e-3), n
    low, _ = evidence.expected_best(scores, "min")   # the best of a loss is its minimum
    assert np.allclose(low, -evidence.expected_best(-scores)[0]) and np.all(np.diff(low) < 0)
    assert evidence.expected_best([np.nan])[0].size == 0
    flat = evidence.expected_best([0.1, 0.1, 0.1])
    assert flat[0].tolist() == [0.1] * 3 and flat[1].tolist() == [0.0] * 3   # exact on ties


def test_expected_best_table_costs_n_times_the_search_cost_per_completed_trial():
    rows = [{"phase": "search", "status": s, "arm": "a", "final_val_acc": v, "cpu_seconds": 10.0,
             "gpu_seconds": 0.0, "wall_seconds": 5.0}
            for s, v in (("completed", 0.7), ("completed", 0.9), ("pruned", np.nan), ("diverged", np.nan))]
    curve = evidence.expected_best_table(pd.DataFrame(rows))
    assert curve["trials"].tolist() == [1, 2] and curve["n_completed"].tolist() == [2, 2]
    assert curve["expected"].tolist() == pytest.approx([0.8, 0.7 * 0.25 + 0.9 * 0.75])
    assert curve["cpu_seconds"].tolist() == [20.0, 40.0]   # 4 trials x 10 s over 2 completed


# ---- search-space audit ----------------------------------------------------------------------------
@pytest.mark.parametrize("value, kind, args, end", [
    (0.95, "uniform", [0, 1], "high"), (0.5, "uniform", [0, 1], None), (0.04, "uniform", [0, 1], "low"),
    (0.29, "loguniform", [0.001, 0.3], "high"), (0.0012, "loguniform", [0.001, 0.3], "low"),
    (0.0173, "loguniform", [0.001, 0.3], None),   # the middle on the log scale (0.055 linearly)
    (16, "int", [16, 128], "low"), ("sgd", "choice", ["sgd", "adam"], None),
])
def test_a_best_value_near_a_bound_says_widen_the_range(value, kind, args, end):
    assert space_audit.edge(space_audit.range_position(value, kind, args)) == end


def search(arm: str, lrs: list, statuses: list, score: float = 0.8) -> list[dict]:
    return [{"phase": "search", "status": s, "arm": arm, "family": "mlp", "depth": 2, "batchnorm": True,
             "width": 1.0, "final_val_acc": score + 0.01 * i if s == "completed" else np.nan,
             "param_lr": lr, "trial_id": f"{arm}{i}", "optuna_trial": i}
            for i, (lr, s) in enumerate(zip(lrs, statuses))]


def test_the_audit_flags_edges_and_under_searched_arms_in_ranking_and_depth():
    trials = pd.DataFrame(search("wide", [0.01, 0.02, 0.29], ["completed"] * 3)
                          + search("thin", [0.01, 0.02, 0.03], ["completed", "completed", "pruned"]))
    audit = space_audit.space_audit(trials, LR)
    assert audit["widen"].tolist() == [["lr (high end)"], []]
    assert audit["under_searched"].tolist() == [False, True]
    assert audit.loc[1, ["pruned", "share_pruned"]].tolist() == [1, pytest.approx(1 / 3)]
    assert space_audit.under_searched(audit) == ["thin"]
    confirm = runs({"wide": ("plain", 20, [0.9, 0.91]), "thin": ("residual", 20, [0.8, 0.82])}, [0, 1])
    confirm = confirm.assign(model="m", line="6n+2", final_train_loss=0.1)
    answers = questions.answers(pd.concat([trials, confirm]), pd.DataFrame(), pd.DataFrame(), space=LR)
    assert {r["arm"]: r["under_searched"] for r in answers["ranking"]["ranking"]} == {"wide": False, "thin": True}
    assert [r["under_searched"] for r in answers["depth"]["matched_pairs"]] == [["thin"], ["thin"]]
    assert any("Under-searched: thin" in s for s in answers["ranking"]["text"])
    assert any("Under-searched: thin" in s and "At depth 20" in s for s in answers["depth"]["text"])
    assert any("widen the range" in s for s in answers["evidence"]["text"])


def test_the_expected_best_figure_overlays_arms_and_says_what_it_assumes():
    rows = [{"phase": "search", "status": "completed", "arm": arm, "final_val_acc": 0.5 + 0.1 * i,
             "cpu_seconds": 10.0, "gpu_seconds": 0.0, "wall_seconds": 10.0}
            for arm in ("a", "b") for i in range(3)]
    fig = figures_evidence.expected_best(evidence.expected_best_table(pd.DataFrame(rows)), "val_acc",
                                         {"a": "#1f77b4", "b": "#ff7f0e"})
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["a", "a", "b", "b"]   # trials and CPU-seconds; no GPU reserved
    assert list(lines[1].x) == [10.0, 20.0, 30.0] and "TPE and ASHA trials are not" in fig.layout.title.text
    assert figures_evidence.expected_best(evidence.expected_best_table(pd.DataFrame()), "val_acc",
                                          {}).layout.annotations
