"""Has every arm trained? An arm that has not says something about the budget, not the architecture.

    undertrained(trials, epochs, metric="val_acc")        # one row per arm: flagged or not, and why
    flagged_in(["plain20", "resnet20"], table)            # which of these arms are flagged

An arm is flagged (`undertrained`) when, over its completed confirmation runs, either
- it is near chance: its mean final validation accuracy is below chance + CHANCE_MARGIN of the way
  from chance to perfect (1 / num_classes + 0.25 * (1 - 1 / num_classes): 0.325 with 10 classes);
  the validation accuracy is used whatever the study's metric, since it has a chance level; or
- it is still improving steeply at the last epoch: its convergence is censored in every seed (it
  reached 95% of its own final `metric` only at the last epoch, convergence.epochs_to_fraction), so
  more epochs would have moved it.

A depth slope, a matched pair or a pairwise test that involves a flagged arm measures how far each
arm got in the budget: the question modules mark such verdicts `budget_limited` (the flagged arms).
"""
from __future__ import annotations

import pandas as pd

from .common import confirmed
from .convergence import epochs_to_fraction

CHANCE_MARGIN = 0.25    # fraction of the distance from chance to 1.0 that still counts as "near chance"
NUM_CLASSES = 10        # every dataset archstudy ships (MNIST, Fashion-MNIST, CIFAR-10, mnist-5k)
COLUMNS = ["arm", "n", "val_acc", "chance", "near_chance", "n_censored", "still_improving",
           "undertrained"]


def chance_level(num_classes: int = NUM_CLASSES) -> float:
    """Accuracy of guessing uniformly among `num_classes` classes."""
    return 1.0 / num_classes


def undertrained(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str = "val_acc",
                 num_classes: int = NUM_CLASSES, margin: float = CHANCE_MARGIN) -> pd.DataFrame:
    """One row per arm with completed confirmation runs.

    Needs trials columns: phase, status, arm, final_val_acc; epochs columns: phase, status,
    trial_id, arm, epoch, `metric`. Columns: arm, n (completed seeds), val_acc (mean final
    validation accuracy; NaN without one), chance (1 / num_classes), near_chance, n_censored (seeds
    still improving steeply at their last epoch), still_improving (every seed censored),
    undertrained (either).
    """
    runs = confirmed(trials, need=("final_val_acc",))
    reach = epochs_to_fraction(epochs, 0.95, metric, "confirm").set_index("arm")
    chance = chance_level(num_classes)
    table = []
    for arm, g in runs.groupby("arm", sort=False):
        acc = g["final_val_acc"].mean()
        near = bool(pd.notna(acc) and acc < chance + margin * (1 - chance))
        censored = int(reach.loc[arm, "n_censored"]) if arm in reach.index else 0
        improving = bool(arm in reach.index and reach.loc[arm, "all_censored"])
        table.append({"arm": arm, "n": len(g), "val_acc": acc, "chance": chance, "near_chance": near,
                      "n_censored": censored, "still_improving": improving,
                      "undertrained": near or improving})
    return pd.DataFrame(table, columns=COLUMNS)


def flagged_in(arms, table: pd.DataFrame) -> list[str]:
    """The arms among `arms` that `table` (undertrained()'s result) flags, in the order given."""
    flagged = set(table.loc[table["undertrained"], "arm"]) if len(table) else set()
    return [a for a in arms if a in flagged]


def mark(frame: pd.DataFrame, arm_columns: tuple[str, ...], table: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a `budget_limited` column: per row, the flagged arms (see flagged_in) among the
    arms named in `arm_columns` (each a column holding an arm name or a list of them)."""
    def arms_of(row) -> list[str]:
        names = []
        for col in arm_columns:
            value = row[col]
            names += list(value) if isinstance(value, (list, tuple)) else [value]
        return flagged_in(dict.fromkeys(names), table)
    out = frame.copy()
    out["budget_limited"] = [arms_of(r) for _, r in out.iterrows()] if len(out) else []
    return out
