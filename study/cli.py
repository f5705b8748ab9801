"""The archstudy command (also `python -m study`).

    archstudy run SPEC [--name NAME] [--storage PATH] [--wandb-mode offline|online|disabled] [--address auto]
    archstudy submit SPEC --address http://HEAD:8265 [--name] [--storage] [--wandb-mode] [--wait]
    archstudy resume DIR
    archstudy analyze DIR [DIR ...] [--out DIR] [--wandb-mode ...] [--wandb-report]
    archstudy dashboard DIR [--port 8080] [--tensorboard [--tensorboard-port 6006]]
    archstudy validate SPEC
    archstudy schema
    archstudy models

Spec errors print one line (key path, bad value, what is allowed) and exit with code 2, before Ray
starts and before anything is written. Any command piped into `head` ends quietly when `head` has
read its fill (exit code 141, as for a process that SIGPIPE ended: studyfiles/pipes.py). `run` and
`resume` stopped by Ctrl+C (SIGINT) or a scheduler's SIGTERM exit with 130 or 143, the current
phase unfinished, and say on their last line how to continue (`archstudy resume DIR`).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from analysis import cli as analysis_cli
from studyfiles.errors import StudyError
from studyfiles.pipes import quiet_on_broken_pipe
from studyfiles.storage import join
from studyfiles.wandb_key import missing_key
from trainables.data import DatasetUnavailable

from . import interrupt
from .interrupt import Interrupted, catching
from .spec_errors import SpecError
from .spec_file import json_schema, load_spec


def cmd_validate(args) -> int:
    """Checks that hold on any machine refuse the spec (exit 2); what only this machine lacks
    (resources.cpu or .gpu, which a cluster may have: `run` refuses it here without --address; a
    W&B API key for online mode, which the machine that runs it may have: `run` refuses it) and
    what is allowed but probably not meant are warnings on stderr (exit 0)."""
    spec = load_spec(args.spec)
    from .resources import local_problem
    machine = [local_problem(spec), missing_key(spec.wandb.resolved_mode())]
    for warning in [*spec.warnings(), *filter(None, machine)]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.spec}: ok: study {spec.name!r}, {len(spec.arms)} arms "
          f"({', '.join(spec.arm_names)}), {spec.search.trials_per_arm} trials per arm"
          f"{f' x {spec.search.replicates} search replicates' * (spec.search.replicates > 1)}, "
          f"{len(spec.seeds)} seeds, {spec.epochs} epochs, data {spec.data}")
    return 0


def warn(spec) -> None:
    """What the spec allows but probably does not mean (StudySpec.warnings), on stderr."""
    for warning in spec.warnings():
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def cmd_schema(args) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_models(args) -> int:
    from trainables.models import list_models, model_depth, model_family
    for name in list_models():
        print(f"{name:<10} {model_family(name):<9} depth {model_depth(name)}")
    return 0


def finish(study) -> int:
    import pandas as pd
    print()
    analysis_cli.print_analysis([str(study.store)])
    trials = pd.read_parquet(study.out / "trials.parquet")
    from analysis.common import unconfirmed_arms
    unconfirmed = unconfirmed_arms(trials, study.spec.metric)
    for arm, why in unconfirmed.items():
        print(f"  {arm:<18} no result: {why}")
    counts = trials.groupby(["phase", "status"]).size().to_dict()
    print("trials: " + ", ".join(f"{p}/{s} {n}" for (p, s), n in counts.items()))
    print(f"results: {study.store}")
    if study.spec.wandb.resolved_mode() == "offline":
        if study.store.remote:
            print(f"W&B offline runs: {join(study.store.remote, 'wandb')} (also in {study.out}/wandb); "
                  f"upload them with wandb sync {study.out}/wandb/offline-run-*")
        else:
            print(f"W&B offline runs: wandb sync {study.out}/wandb/offline-run-*")
    # an arm whose every search trial diverged, or whose every confirmation run diverged with its
    # best searched configuration, is a result (it does not train at these settings); one left out
    # for any other reason (no search trial completed: pruned against a trial that diverged later;
    # failed runs) is a missing answer
    def all_diverged(phase: str, arm: str) -> bool:
        return set(trials.loc[(trials.phase == phase) & (trials.arm == arm), "status"]) == {"diverged"}
    missing = [arm for arm in unconfirmed
               if not (all_diverged("search", arm) or all_diverged("confirm", arm))]
    if missing:
        print(f"error: no answer for arm{'s' * (len(missing) > 1)} {', '.join(missing)}: "
              f"{unconfirmed[missing[0]]}; raise search.trials_per_arm or change search.space "
              "and run the study again", file=sys.stderr)
        return 1
    return 0


def cmd_analyze(args) -> int:
    return analysis_cli.run(args)


def cmd_dashboard(args) -> int:
    from . import dashboard
    return dashboard.run(args)


def check_local_resources(spec, address: str | None) -> None:
    """Without --address, a trial must fit this machine (study/resources.py): refused in one line
    rather than pending for ever. Called before Ray starts (against what Ray would count) and again
    after (against what the local instance has)."""
    if not address:
        from .resources import check_local_resources
        check_local_resources(spec)


def check_wandb_key(spec) -> None:
    """W&B online mode needs an API key where the driver runs (studyfiles/wandb_key.py): refused
    in one line before Ray starts, rather than in every trial's wandb.init and the analysis's."""
    if (problem := missing_key(spec.wandb.resolved_mode())) is not None:
        raise SpecError(problem)


def run_to_the_end(study, data) -> int:
    """Run the study's remaining phases and print its results; on a stop signal, say where it
    stopped and how to go on."""
    interrupt.resume_hint = f"continue with: archstudy resume {shlex.quote(str(study.store))}"
    try:
        study.run(data)
        return finish(study)
    except Interrupted as e:
        phase = study.state().get("phase", "search")
        where = "the study is done, its analysis was cut short" if phase == "done" else \
            f"the {phase} phase is unfinished (nothing of it is confirmed or analysed)"
        print(f"\ninterrupted by {e.name}: {where}; {interrupt.resume_hint}", file=sys.stderr)
        return e.exit_code


def cmd_run(args) -> int:
    spec = load_spec(args.spec).with_overrides(name=args.name, storage=args.storage,
                                               wandb_mode=args.wandb_mode)
    check_wandb_key(spec)
    check_local_resources(spec, args.address)
    from . import runner
    with catching():   # a signal before the study folder exists: nothing to resume
        data = runner.study_data(spec)
        runner.check_new_study(spec)
        runner.start_ray(args.address)
        check_local_resources(spec, args.address)
        interrupt.reinstall()
        if args.address:
            from .cluster import check_cluster
            check_cluster(spec)
        warn(spec)   # after every check: a refused spec gets its one line alone
        study = runner.prepare(spec)
        return run_to_the_end(study, data)


def cmd_submit(args) -> int:
    """No W&B key check here: the job does not take this machine's key (nothing forwards it); its
    driver, `run` on the head node, checks the cluster's own before Ray Tune starts a trial."""
    from .cluster import follow_up, submit
    spec = load_spec(args.spec).with_overrides(name=args.name, storage=args.storage,
                                               wandb_mode=args.wandb_mode)
    job_id = submit(spec, args.address, python=args.python)
    warn(spec)   # after submit's checks: a refused spec gets its one line alone
    print(follow_up(spec, args.address, job_id), flush=True)   # before --wait blocks
    if args.wait:
        from .cluster import job_client, wait_for
        status = wait_for(job_client(args.address), job_id)
        print(f"job {job_id}: {status}")
        return 0 if status == "SUCCEEDED" else 1
    return 0


def cmd_resume(args) -> int:
    from . import runner
    with catching():
        study = runner.reopen(args.dir)
        check_wandb_key(study.spec)
        try:
            data = runner.study_data(study.spec)
            check_local_resources(study.spec, args.address)
            runner.start_ray(args.address)
            check_local_resources(study.spec, args.address)
            interrupt.reinstall()
        except Interrupted as e:
            print(f"interrupted by {e.name} before the study went on; continue with: archstudy "
                  f"resume {shlex.quote(str(study.store))}", file=sys.stderr)
            return e.exit_code
        return run_to_the_end(study, data)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archstudy", description="Architecture studies on Ray Tune.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study from a spec")
    run.add_argument("spec")
    run.add_argument("--name", help="override the spec's name (output folder, W&B group)")
    run.add_argument("--storage", help="override the spec's storage (a path, s3:// or gs://)")
    run.add_argument("--wandb-mode", choices=["offline", "online", "disabled"])
    run.add_argument("--address", help="Ray cluster address (auto, ray://HOST:10001); default: a local instance")
    run.set_defaults(fn=cmd_run)
    submit = sub.add_parser("submit", help="submit a study to a Ray cluster as a Ray Job")
    submit.add_argument("spec")
    submit.add_argument("--address", required=True, help="the cluster's job server, http://HEAD:8265")
    submit.add_argument("--name", help="override the spec's name (output folder, W&B group)")
    submit.add_argument("--storage", help="override the spec's storage (s3://, gs:// or a shared path)")
    submit.add_argument("--wandb-mode", choices=["offline", "online", "disabled"])
    submit.add_argument("--python", default="python",
                        help="the cluster's Python that has archstudy installed (default: python)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it succeeded")
    submit.set_defaults(fn=cmd_submit)
    resume = sub.add_parser("resume", help="finish an interrupted study")
    resume.add_argument("dir")
    resume.add_argument("--address")
    resume.set_defaults(fn=cmd_resume)
    analyze = sub.add_parser("analyze", help="answer a study's questions: answers.md/.json, report.html")
    analysis_cli.add_arguments(analyze).set_defaults(fn=cmd_analyze)
    dashboard = sub.add_parser("dashboard", help="serve optuna-dashboard (and TensorBoard) on a study, on 127.0.0.1")
    from .dashboard import add_arguments as dashboard_arguments
    dashboard_arguments(dashboard).set_defaults(fn=cmd_dashboard)
    validate = sub.add_parser("validate", help="check a spec without running it")
    validate.add_argument("spec")
    validate.set_defaults(fn=cmd_validate)
    sub.add_parser("schema", help="print the spec's JSON Schema").set_defaults(fn=cmd_schema)
    sub.add_parser("models", help="list the registered models").set_defaults(fn=cmd_models)
    return p


@quiet_on_broken_pipe   # `archstudy schema | head`: no BrokenPipeError traceback, exit 141
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (SpecError, StudyError, DatasetUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:   # before a study folder was written (or reopened)
        print(f"interrupted by {e.name} before anything ran", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:   # Ctrl+C outside `run` and `resume`
        print("interrupted by SIGINT", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
