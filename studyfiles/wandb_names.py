"""The W&B names and settings shared by the trials' runs (study/tracking.py) and the analysis run
(analysis/io.py). `study/wandb_rules.py` checks every such value against W&B's own rules before a
study starts.

    python -m pytest tests/test_wandb_rules.py
"""
from __future__ import annotations

# What wandb would collect per run besides our config and metrics (system stats, console, git state,
# pip requirements, code, machine info) is off: it cost 0.23 of the 0.25 s of each warm
# `wandb.init` here, and the config already carries the git commit and the spec's hash.
LEAN_SETTINGS = dict(console="off", silent=True, x_disable_stats=True, x_disable_meta=True,
                     x_disable_machine_info=True, x_save_requirements=False, disable_git=True,
                     disable_code=True, save_code=False, disable_job_creation=True)


def analysis_values(study: str, stamp: str = "20250101-000000") -> dict:
    """The wandb.Settings fields of the analysis run (stamp: time.strftime's %Y%m%d-%H%M%S; the
    default has its length, for checking a study's name before it runs)."""
    return {"run_group": study, "run_id": f"{study}-analysis-{stamp}", "run_name": f"analysis-{stamp}",
            "run_tags": ["analysis"], "run_job_type": "analysis"}
