"""The values archstudy passes to W&B are checked by `validate` against W&B's own rules
(study/wandb_rules.py, issue 12 items 2 and 3): at each rule's edge, the spec validate accepts is
one whose values a real offline `wandb.init` takes, and one character more is refused by both.
The invalid specs themselves, through `archstudy validate` and `run` (exit 2, one line, nothing
written, no Ray), are in tests/data/bad_specs/ (test_bad_specs.py).

    .venv/bin/python -m pytest tests/test_wandb_rules.py -q
"""
from __future__ import annotations

import pytest

from study import wandb_rules
from study.spec_errors import SpecError
from study.spec_file import parse_spec
from trainables.models import model_depth, model_family

ARM_64 = "a" * 64
PROJECT_128 = "p" * 128
NAME_100 = "n" * 100   # the longest study name (NAME_RE): the group, and the start of every run id


def spec_text(project: str = "archstudy", arm: str = "mlp", entity: str | None = None,
              name: str = "rules") -> str:
    entity_line = "" if entity is None else f", entity: {entity!r}"
    return (f"name: {name}\narms: [{{model: mlp, hidden: [8], name: {arm!r}}}]\n"
            f"wandb: {{project: {project!r}{entity_line}, mode: offline}}\n")


@pytest.mark.parametrize("text, where", [
    (spec_text(arm=ARM_64 + "b"), "arms[0].name"),
    (spec_text(project=PROJECT_128 + "p"), "wandb.project"),
    *[(spec_text(project=f"lab{c}x"), "wandb.project") for c in "/\\#?%:"],
    *[(spec_text(entity=e), "wandb.entity") for e in ["", " lab", "team/lab", "lab:x"]],
])
def test_what_wandb_refuses_validate_refuses(text, where):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert str(info.value).startswith(f"{where}: ") and " is not allowed; " in str(info.value)


def test_the_builders_are_what_trials_use():
    assert wandb_rules.run_tags("arm", "residual", 20) == ["arm", "residual", "depth-20"]
    assert wandb_rules.run_id("study", "0123abcd") == "study-0123abcd"
    assert wandb_rules.run_name("arm", "0123abcd") == "arm-0123abcd"
    assert wandb_rules.wandb_refusal(run_id="study:x") is not None   # the SDK is the judge
    assert wandb_rules.wandb_refusal(run_tags=["t" * 65]) is not None


def test_the_longest_values_validate_accepts_open_a_real_offline_run(tmp_path, study_env):
    """The edge of each rule on the real thing: wandb.init offline with the longest project, arm
    name (a tag) and study name (group, run id) that validate accepts; then one more character of
    tag, which validate refuses, fails wandb.init too."""
    import wandb

    from studyfiles.wandb_names import LEAN_SETTINGS
    spec = parse_spec(spec_text(project=PROJECT_128, arm=ARM_64, entity="lab", name=NAME_100))
    arm = spec.arms[0]
    values = wandb_rules.arm_values(spec.name, arm.name, model_family(arm.model),
                                    model_depth(arm.model, arm.hidden))
    run = wandb.init(project=spec.wandb.project, group=values["run_group"], id=values["run_id"],
                     name=values["run_name"], tags=values["run_tags"], job_type=values["run_job_type"],
                     dir=str(tmp_path), mode="offline", settings=wandb.Settings(**LEAN_SETTINGS),
                     reinit="create_new")
    try:
        assert run.project == PROJECT_128 and run.id == f"{NAME_100}-0123abcd"
        assert list(run.tags) == [ARM_64, "mlp", "depth-2"] and run.group == NAME_100
    finally:
        run.finish()
    with pytest.raises(Exception, match="65 characters"):
        wandb.init(project="archstudy", tags=[ARM_64 + "b"], dir=str(tmp_path), mode="offline",
                   settings=wandb.Settings(**LEAN_SETTINGS), reinit="create_new")
