"""Every value archstudy passes to W&B, built in one place and checked against W&B's own rules
before anything runs (`archstudy validate`, and so `archstudy run`), so that no trial fails in
`wandb.init` (an arm whose runs all fail there is an arm silently missing from the answer).

What a trial's run gets (study/tracking.py) and the analysis run (analysis/io.py):

    project, entity     the spec's wandb.project and wandb.entity
    group               the study's name
    id                  <study>-<Tune trial id>            (<study>-analysis-<time> for the analysis)
    name                <arm>-<Tune trial id>              (analysis-<time>)
    job_type            search, confirm                    (analysis)
    tags                <arm>, <model family>, depth-<n>   (analysis)

The judge is W&B's SDK itself: `wandb.Settings` (public API) validates project, run id, group,
name, job type and tags when it is built, offline too, with the rules in wandb/sdk/wandb_settings.py
(wandb 0.31: `validate_project`: at most 128 characters, none of / \\ # ? % :;
`validate_run_id`: not empty, no surrounding spaces, none of : ; , # ? / ';
`validate_run_tags`: each tag 1-64 characters). It reads no environment variables and writes
nothing. The SDK has no rule for the entity (a user or team name, checked by the server): we
refuse what cannot be part of W&B's paths `entity/project/run`, with the project's forbidden
characters, or be a name at all (empty, surrounding spaces). Group, name and job type have no rule
in the SDK; ours are at most 125 characters (names are at most 100).
"""
from __future__ import annotations

TRIAL_ID_SAMPLE = "0123abcd"   # Ray Tune's trial ids with a searcher: 8 hex digits (Trial.generate_id)
ENTITY_FORBIDDEN = "/\\#?%:"     # wandb_settings.py validate_project's characters
TAG_MAX = 64                     # wandb_settings.py validate_run_tags (for the message only)

# What W&B allows, per wandb.Settings field, for the one-line messages.
ALLOWED = {
    "project": "W&B project names have at most 128 characters and none of / \\ # ? % :",
    "run_id": "W&B run ids (<name>-<trial id>) are not empty, have no surrounding spaces and none of "
              ": ; , # ? / '",
    "run_group": "W&B refuses it as the study's run group",
    "run_name": "W&B refuses the arm's run names (<arm>-<trial id>)",
    "run_job_type": "W&B refuses the job type",
    "run_tags": "W&B tags have 1-64 characters, and the arm's name tags each of its runs: give the "
                "arm a 'name' of at most 64 characters",
}


def run_tags(arm: str, family: str, depth: int) -> list[str]:
    return [arm, family, f"depth-{depth}"]


def run_id(group: str, trial_id: str) -> str:
    return f"{group}-{trial_id}"


def run_name(arm: str, trial_id: str) -> str:
    return f"{arm}-{trial_id}"


def wandb_refusal(**settings) -> str | None:
    """Why wandb.Settings refuses these values (one line), or None when it takes them."""
    import wandb
    try:
        wandb.Settings(**settings)
    except Exception as e:   # wandb.errors.UsageError, or pydantic's ValidationError for tags
        errors = getattr(e, "errors", None)
        text = errors()[0]["msg"] if callable(errors) else str(e)
        return " ".join(text.removeprefix("Value error, ").split())
    return None


def entity_refusal(entity: str) -> str | None:
    if not entity.strip() or entity != entity.strip():
        return "a W&B entity (user or team) is a non-empty name without surrounding spaces"
    if any(c in ENTITY_FORBIDDEN for c in entity):
        return ("a W&B entity (user or team) has none of / \\ # ? % : (it is part of W&B's paths "
                "entity/project/run)")
    return None


def arm_values(study: str, arm: str, family: str, depth: int) -> dict:
    """The wandb.Settings fields of a trial run of this arm (a sample trial id)."""
    return {"run_group": study, "run_id": run_id(study, TRIAL_ID_SAMPLE),
            "run_name": run_name(arm, TRIAL_ID_SAMPLE), "run_tags": run_tags(arm, family, depth),
            "run_job_type": "search"}


def first_refused(project: str, values: dict) -> tuple[str, str] | None:
    """(field, W&B's reason) of the first value wandb.Settings refuses, or None: one Settings for
    all of them, and field by field only when that one fails."""
    if wandb_refusal(project=project, **values) is None:
        return None
    for field, value in {"project": project, **values}.items():
        reason = wandb_refusal(**{field: value})
        if reason is not None:
            return field, reason
    return "project", wandb_refusal(project=project, **values)
