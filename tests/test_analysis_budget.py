"""Under-trained arms are flagged, and the verdicts that involve them are marked budget-limited:
planted frames, no Ray, a few seconds.

    .venv/bin/python -m pytest tests/test_analysis_budget.py
"""
from __future__ import annotations

import json

import pandas as pd

from analysis import budget, sentences
from analysis import questions as q
from test_analysis_stats import epochs_frame, trial


def study(accs: dict[str, float], losses: dict[str, float], seeds: int = 3) -> pd.DataFrame:
    """Confirmation trials of 6n+2 arms: arm -> mean final val_acc and train loss (+/- seed jitter)."""
    rows = []
    for arm, acc in accs.items():
        family = "plain" if arm.startswith("plain") else "residual"
        for s in range(seeds):
            jitter = (s - 1) * 0.002
            rows.append(trial(arm, arm, family, int(arm.lstrip("plainresnet")), s,
                              final_val_acc=acc + jitter, final_train_acc=acc + jitter,
                              final_train_loss=losses[arm] + jitter))
    return pd.DataFrame(rows)


def converged(arms, seeds: int = 3) -> pd.DataFrame:
    return epochs_frame({a: [[0.5, 0.93, 0.95]] * seeds for a in arms})


def test_an_arm_near_chance_is_flagged_and_a_trained_one_is_not():
    trials = study({"plain20": 0.95, "plain56": 0.17}, {"plain20": 0.2, "plain56": 2.1})
    table = budget.undertrained(trials, converged(["plain20", "plain56"]))
    reasons = {r.arm: sentences.reason(r) for r in table.itertuples()}
    table = table.set_index("arm")
    assert table.loc["plain56", "near_chance"] and table.loc["plain56", "undertrained"]
    assert not table.loc["plain20", "undertrained"] and reasons["plain20"] == ""
    assert reasons["plain56"] == "validation accuracy 0.17 is near chance (0.1)"


def test_the_chance_margin_is_measured_from_chance_to_perfect():
    threshold = 0.1 + budget.CHANCE_MARGIN * 0.9
    trials = study({"plain20": threshold + 0.01, "plain32": threshold - 0.01},
                   {"plain20": 1.0, "plain32": 1.1})
    table = budget.undertrained(trials, converged(["plain20", "plain32"])).set_index("arm")
    assert table["near_chance"].to_dict() == {"plain20": False, "plain32": True}


def test_an_arm_still_improving_steeply_in_every_seed_is_flagged():
    epochs = epochs_frame({"plain20": [[0.5, 0.93, 0.95]] * 3,          # converged
                           "resnet20": [[0.3, 0.5, 0.7]] * 3,           # censored in every seed
                           "plain32": [[0.3, 0.5, 0.7], [0.5, 0.93, 0.95], [0.3, 0.5, 0.7]]})
    trials = study({"plain20": 0.95, "resnet20": 0.7, "plain32": 0.7},
                   {"plain20": 0.2, "resnet20": 0.6, "plain32": 0.6})
    table = budget.undertrained(trials, epochs).set_index("arm")
    assert table.loc["resnet20", "still_improving"] and table.loc["resnet20", "undertrained"]
    assert table.loc["resnet20", "n_censored"] == 3
    assert sentences.reason(next(budget.undertrained(trials, epochs).query("arm == 'resnet20'")
                                 .itertuples())) == "still improving steeply at the last epoch in all 3 seeds"
    assert not table.loc["plain32", "undertrained"] and table.loc["plain32", "n_censored"] == 2
    assert not table.loc["plain20", "undertrained"]


def test_depth_and_pair_verdicts_with_an_undertrained_arm_are_budget_limited():
    accs = {"plain20": 0.95, "plain56": 0.17, "resnet20": 0.96, "resnet56": 0.25}
    losses = {"plain20": 0.2, "plain56": 2.1, "resnet20": 0.15, "resnet56": 1.9}
    result = json.loads(json.dumps(q.answers(study(accs, losses), converged(list(accs)),
                                             pd.DataFrame(), "val_acc", "max", 4, {}), allow_nan=False))
    flagged = {r["arm"] for r in result["budget"]["undertrained"] if r["undertrained"]}
    assert flagged == {"plain56", "resnet56"}
    trend = {r["series"]: r for r in result["depth"]["depth_trend"] if r["column"] == "final_train_loss"}
    assert trend["plain-6n+2"]["budget_limited"] == ["plain56"]
    assert trend["resnet-6n+2"]["verdict"] == "degrades" and trend["resnet-6n+2"]["budget_limited"]
    pairs = {r["depth"]: r["budget_limited"] for r in result["depth"]["matched_pairs"]}
    assert pairs == {20: [], 56: ["plain56", "resnet56"]}
    assert all(r["budget_limited"] for r in result["depth"]["degradation_gap"])
    limited = [r for r in result["pairwise"]["pairwise"] if r["budget_limited"]]
    assert {(r["arm_a"], r["arm_b"]) for r in limited} >= {("plain20", "plain56")}
    text = " ".join(result["depth"]["text"])
    assert "budget-limited: plain56 did not train" in text
    assert "Not trained within the budget: plain56" in " ".join(result["budget"]["text"])
    degradation = result["why"]["degradations"][0]
    assert degradation["budget_limited"] == ["plain56"] and "Budget-limited" in degradation["text"]


def test_every_arm_trained_says_so_and_marks_nothing():
    accs = {"plain20": 0.95, "plain32": 0.93, "resnet20": 0.96, "resnet32": 0.965}
    losses = {"plain20": 0.2, "plain32": 0.3, "resnet20": 0.15, "resnet32": 0.13}
    result = q.answers(study(accs, losses), converged(list(accs)), pd.DataFrame(), "val_acc", "max", 4, {})
    assert result["budget"]["text"][0].startswith("Every arm trained")
    assert not any(r["budget_limited"] for r in result["depth"]["depth_trend"])
    assert "budget-limited" not in " ".join(result["text"]).lower()
