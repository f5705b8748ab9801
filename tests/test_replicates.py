"""Search replicates (`search.replicates`) and a split per seed (`split: per_seed`):
study/replicates.py, trainables.data.resplit, analysis/search_variance.py.

    python -m pytest tests/test_replicates.py

- one small study end to end on the session's Ray (two tiny MLP arms, 2 search replicates of 2
  trials, 2 seeds, split per seed): its tables, Optuna studies and answers;
- a study folder written before the keys existed resumes as it ran, with its hash;
- the variance decomposition finds a planted search spread, and no spread where none was planted;
  the per-replicate verdicts say which verdict changes with the search.
(Bad values are in tests/data/bad_specs/search_replicates_*.yaml and split_unknown.yaml; the
split itself in test_data.py.)
"""
from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from studies import spec_text
from study import replicates, runner
from study.searcher import study_name
from study.spec_file import load_spec, spec_hash
from studyfiles.spec_data import canonical_hash

from test_analysis import FIGURES

from analysis.search_variance import (replicate_verdicts, search_spread, spread_verdict,
                                      variance_components)
from analysis.sentences_replicates import search_variance_answer

ARMS = ["model: mlp, hidden: [8]", "model: mlp, hidden: [16]"]
ARM_NAMES = ["mlp-h8", "mlp-h16"]


@pytest.fixture(scope="module")
def replicated(ray_local, study_env, tmp_path_factory):
    """The two-arm study with 2 search replicates and a split per seed, run once, and analysed."""
    from analysis import analyze
    root = tmp_path_factory.mktemp("replicated")
    text = spec_text(root / "results", name="replicated", epochs=2, seeds=[0, 1], arms=ARMS)
    text = text.replace("trials_per_arm: 3", "trials_per_arm: 2\n  replicates: 2") + "split: per_seed\n"
    (root / "spec.yaml").write_text(text)
    study = runner.prepare(load_spec(root / "spec.yaml"))
    study.run()
    analyze([study.out], wandb_mode="disabled")
    return study.out, pd.read_parquet(study.out / "trials.parquet")


def test_each_replicate_is_its_own_search_and_its_winner_is_confirmed(replicated):
    out, t = replicated
    assert {"replicate", "split_seed"} <= set(t.columns) and t.trial_id.is_unique
    search, confirm = t[t.phase == "search"], t[t.phase == "confirm"]
    assert search.groupby(["arm", "replicate"]).size().to_dict() == {
        (arm, k): 2 for arm in ARM_NAMES for k in (0, 1)}
    assert confirm.groupby(["arm", "replicate"]).seed.apply(sorted).to_dict() == {
        (arm, k): [0, 1] for arm in ARM_NAMES for k in (0, 1)}
    # each replicate's search trials train with their own seed, on split seed 0
    assert search.groupby("replicate").seed.unique().apply(list).to_dict() == {0: [2], 1: [3]}
    assert (search.split_seed == 0).all() and (confirm.split_seed == confirm.seed).all()
    # under one seed every arm and replicate trains on the same split: the comparison stays paired
    assert confirm.groupby("seed").split_seed.nunique().eq(1).all()
    params = [json.loads((out / p / "params.json").read_text()) for p in confirm.path]
    assert all(p["split_seed"] == p["seed"] and p["replicate"] in (0, 1) for p in params)
    storage = f"sqlite:///{out / 'optuna.db'}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {study_name("replicated", f"{arm}/r{k}") for arm in ARM_NAMES for k in (0, 1)}
    for arm in ARM_NAMES:   # each replicate's winner is what its own Optuna study found best
        for k in (0, 1):
            best = optuna.load_study(study_name=f"replicated/{arm}/r{k}", storage=storage).best_trial
            runs = confirm[(confirm.arm == arm) & (confirm.replicate == k)]
            assert (runs.param_lr == best.params["lr"]).all()


def test_the_answers_measure_the_search_variance(replicated):
    out, _ = replicated
    answers = json.loads((out / "answers.json").read_text())
    found = answers["evidence"]["search_variance"]
    assert found["replicates"] == 2 and found["measured"] is True
    assert sorted(row["arm"] for row in found["spread"]) == sorted(ARM_NAMES)
    assert all(row["replicates"] == 2 and row["runs"] == 4 for row in found["spread"])
    assert found["verdicts"] and {row["question"] for row in found["verdicts"]} >= {"ranking", "pairwise"}
    assert found["text"][0].startswith("Search variance over 2 search replicates per arm")
    markdown = (out / "answers.md").read_text()
    assert "## 6. Evidence" in markdown and found["text"][0] in markdown
    # the rest of the evidence, and every figure, on this study too
    assert {"search_variance", "prob_better", "expected_best", "space_audit"} <= set(answers["evidence"])
    assert {r["arm"] for r in answers["why"]["signal_propagation"]} == set(ARM_NAMES)
    html = (out / "report.html").read_text()
    assert all(f'id="fig-{name}"' in html for name in FIGURES), [n for n in FIGURES if f'id="fig-{n}"' not in html]


def test_a_study_written_before_the_keys_existed_resumes_as_it_ran(study_env, tmp_path):
    """No `split` nor `search.replicates` in its spec.yaml and study.json: a fixed split, one
    replicate, the same hash (what the hash was then: the keys are not hashed at those values)."""
    path = tmp_path / "old.yaml"
    path.write_text(spec_text(tmp_path / "results", name="old", epochs=2, seeds=[0, 1], arms=ARMS))
    out = runner.prepare(load_spec(path)).out
    spec = yaml.safe_load((out / "spec.yaml").read_text())
    del spec["split"], spec["search"]["replicates"]
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    state = json.loads((out / "study.json").read_text())
    del state["spec"]["split"], state["spec"]["search"]["replicates"]
    state["spec_hash"] = canonical_hash(spec)
    (out / "study.json").write_text(json.dumps(state))
    reopened = runner.reopen(out)
    assert (reopened.spec.split, reopened.spec.search.replicates) == ("fixed", 1)
    assert spec_hash(reopened.spec) == state["spec_hash"]
    assert list(replicates.search_configs(reopened.spec)) == ARM_NAMES   # unit = arm, as before
    assert all("split_seed" not in c and "replicate" not in c
               for c in replicates.search_configs(reopened.spec).values())


# ---- the analysis, on synthetic frames ---------------------------------------------------------------
def confirm_frame(means: dict[str, list[float]], seed_sd: float, seeds: int = 4, rng_seed: int = 0):
    """Completed confirmation rows: arm -> one planted mean per replicate, plus seed noise."""
    rng = np.random.default_rng(rng_seed)
    rows = [{"phase": "confirm", "status": "completed", "arm": arm, "replicate": k, "seed": s,
             "family": "mlp", "depth": 2, "model": "mlp", "line": "mlp", "batchnorm": True, "width": 1.0,
             "final_val_acc": mean + rng.normal(0, seed_sd), "final_train_loss": 0.1}
            for arm, per_replicate in means.items() for k, mean in enumerate(per_replicate)
            for s in range(seeds)]
    return pd.DataFrame(rows)


def test_a_planted_search_spread_is_found_and_none_is_not():
    trials = confirm_frame({"spread": [0.80, 0.90, 0.85], "steady": [0.85, 0.85, 0.85]}, seed_sd=0.005)
    spread = search_spread(trials, "val_acc").set_index("arm")
    assert spread.loc["spread", "verdict"] == "search spread" and spread.loc["spread", "p"] < 0.001
    assert spread.loc["spread", "var_between"] > 10 * spread.loc["spread", "var_within"]
    assert spread.loc["spread", "var_between_lo"] > 0
    # the planted between-replicate variance (0.0025) lies in its interval, the seed variance in its own
    assert spread.loc["spread", "var_between_lo"] < 0.0025 < spread.loc["spread", "var_between_hi"]
    assert spread.loc["steady", "var_within_lo"] < 0.005 ** 2 < spread.loc["steady", "var_within_hi"]
    assert spread.loc["steady", "verdict"] == "no detectable search spread"
    assert spread.loc["steady", "var_between_lo"] == 0
    assert spread.loc["spread", "replicate_means"] == pytest.approx([0.80, 0.90, 0.85], abs=0.01)
    text = search_variance_answer(trials, "val_acc", "max")["text"][0]
    assert "for spread (" in text and "intervals for these arms are too narrow" in text


def test_variance_components_match_the_anova_by_hand():
    """2 replicates x 2 seeds, y = [[1, 2], [3, 5]]: SS replicates 6.25, seeds 2.25, residual 0.25
    (1 df each), so var_between = (6.25 - 0.25) / 2, var_within = (2.25 - 0.25) / 2 + 0.25."""
    found = variance_components([1, 2, 3, 5], [0, 0, 1, 1], [0, 1, 0, 1])
    assert (found["var_between"], found["var_within"], found["F"]) == pytest.approx((3.0, 1.25, 25.0))
    assert found["p"] == pytest.approx(0.1257, abs=1e-4)   # F(1, 1) > 25
    assert found["var_between_lo"] < 3.0 < found["var_between_hi"]
    assert np.isnan(variance_components([1, 2], [0, 1], [0, 0])["var_within"])   # one seed: no spread
    one = variance_components([0.9, 0.8, 0.85], [0, 0, 0], [0, 1, 2])   # one replicate: the seeds alone
    assert one["var_within"] == pytest.approx(0.0025) and np.isnan(one["var_between"])
    # a seed missing from one replicate is left out of the decomposition (a balanced table)
    gap = variance_components([1, 2, 7, 3, 5], [0, 0, 0, 1, 1], [0, 1, 2, 0, 1])
    assert (gap["blocks"], gap["n"], gap["var_between"]) == (2, 4, pytest.approx(3.0))
    flat = variance_components([0.1] * 6, [0, 0, 0, 1, 1, 1], [0, 1, 2] * 2)   # no spread at all
    assert (flat["var_between"], flat["var_within"]) == (0, 0) and not flat["p"] < 0.05


def test_a_seed_effect_shared_by_the_replicates_does_not_hide_their_spread():
    """Each replicate's winner is confirmed over the same seeds: replicate 2 is 0.02 above replicate
    0 on every seed, which a one-way split (seed effects as noise) calls "no detectable spread"."""
    seeds = [0.90, 0.86, 0.92, 0.88, 0.84]
    found = variance_components([v + 0.01 * k for k in range(3) for v in seeds],
                                [k for k in range(3) for _ in seeds], list(range(5)) * 3)
    assert found["p"] == 0 and found["var_between"] == pytest.approx(1e-4)
    assert spread_verdict(found, 0.95) == "search spread"
    # over many studies: the F test keeps its size without a search effect and finds one that is there
    rng = np.random.default_rng(1)
    def rejections(var_search, studies=200, r=3, s=5):
        found = 0
        for _ in range(studies):
            y = (rng.normal(0, np.sqrt(var_search), (r, 1)) + rng.normal(0, 1, (1, s))
                 + rng.normal(0, np.sqrt(0.2), (r, s)))
            groups, blocks = np.repeat(np.arange(r), s), np.tile(np.arange(s), r)
            found += variance_components(y.ravel(), groups, blocks)["p"] < 0.05
        return found / studies
    assert rejections(0.0) < 0.1 and rejections(0.2) > 0.3   # one-way: 0.05 and about 0.08


def test_a_verdict_that_changes_with_the_search_is_named():
    # replicate 0 finds a better config for a, replicate 1 one for b
    trials = confirm_frame({"a": [0.90, 0.80], "b": [0.79, 0.90]}, seed_sd=0.002)
    table = replicate_verdicts(trials, "val_acc", "max")
    pair = table[table.question == "pairwise"].iloc[0]
    assert pair["overall"] == "tied" and pair["per_replicate"] == ["a better", "b better"]
    assert not pair["holds"] and pair["reversed"]
    steady = replicate_verdicts(confirm_frame({"a": [0.90, 0.90], "b": [0.80, 0.80]}, 0.002), "val_acc")
    assert steady["holds"].all() and "a better" in steady["overall"].tolist()
    answer = search_variance_answer(trials, "val_acc", "max")
    assert ("reversed by some replicate, so they depend on which configuration the search found: "
            "ranking best arm (a overall; per replicate: a, b); pairwise a vs b (tied overall; "
            "per replicate: a better, b better).") in answer["text"][1]
    # with half the runs each, a replicate may leave a verdict undecided: that is not a reversal
    weaker = confirm_frame({"a": [0.90, 0.90], "b": [0.87, 0.87]}, 0, seeds=2)
    weaker["final_val_acc"] += np.tile([0, 0.02], 4)   # seed 1 0.02 above seed 0, in every replicate
    weaker = replicate_verdicts(weaker, "val_acc")
    pair = weaker[weaker.question == "pairwise"].iloc[0]
    assert pair["overall"] == "a better" and "tied" in pair["per_replicate"] and not pair["reversed"]


def test_no_null_result_is_claimed_from_runs_too_few_to_test():
    trials = confirm_frame({"a": [0.9, 0.8], "b": [0.8, 0.7]}, seed_sd=0.01, seeds=1)
    text = search_variance_answer(trials, "val_acc", "max")["text"][0]
    assert "no arm has the runs to tell" in text and "differ by more" not in text


def test_one_replicate_is_not_measured():
    trials = confirm_frame({"a": [0.9], "b": [0.8]}, seed_sd=0.01).drop(columns="replicate")
    answer = search_variance_answer(trials, "val_acc", "max")
    assert (answer["replicates"], answer["measured"]) == (1, False)
    assert set(answer) == {"replicates", "measured", "text"}   # no numbers invented
    assert answer["text"][0].startswith("Search variance: not measured")
