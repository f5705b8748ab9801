"""The why question's sentences (see sentences.py, which calls them): each diagnosis of
why.diagnose() in one sentence, and the section's text around them.

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py
"""
from __future__ import annotations

from .common import TRAIN_LOSS, ci, left_out_text, num, pval, sci
from .attenuation import EXPLODING_RATIO, VANISHING_RATIO
from .why import TRAIN_LOSS_MARGIN


def why(found: dict, degradations: list[dict], with_bn: list[dict], metric: str) -> list[str]:
    """The why section of questions.results() (`found`) in sentences: each diagnosis (`degradations`
    and `with_bn`, with their "text" as sentences.words() made it), why there is none, what was
    left out, and the gradient flow of every arm (found["attenuation"])."""
    text = [e["text"] for e in degradations + with_bn]
    if not degradations:
        text.insert(0, _nothing_to_diagnose(found, metric))
    if found["left_out"]:
        text.append(f"Left out of the diagnosis: plain confirmation runs that did not complete or "
                    f"lack final_{metric} / final_train_loss ({left_out_text(found['left_out'])}).")
    att = found["attenuation"]
    if att.empty:
        text.append("Gradient flow was recorded for no completed confirmation run, so vanishing "
                    "gradients can be neither claimed nor ruled out." if found["recorded"] else
                    "Gradient flow was not recorded for the confirmation runs, so vanishing "
                    "gradients can be neither claimed nor ruled out.")
    else:
        vanish, explode = att[att["vanishing"]], att[att["exploding"]]
        text.append("Completed confirmation runs only: gradients vanish (first/last-layer "
                    f"gradient-norm ratio below {sci(VANISHING_RATIO)} in every seed) in: "
                    f"{', '.join(vanish['arm']) or 'no arm'}; they explode towards the input (ratio "
                    f"above {sci(EXPLODING_RATIO)} in every seed) in: {', '.join(explode['arm']) or 'no arm'}; "
                    "first/last ratio at the first epoch, geometric mean over seeds: "
                    + "; ".join(f"{r.arm} {num(r.ratio_first)}" for r in att.itertuples()) + ".")
    return text


def _nothing_to_diagnose(found: dict, metric: str) -> str:
    if not found["plain_arms"]:
        return "No plain arms: no depth degradation to diagnose."
    if not found["plain_runs"]:
        return ("No completed confirmation runs of plain arms: nothing to diagnose (missing data, "
                "not a null result).")
    if not found["plain_lines"]:
        return ("No line of plain arms has completed runs at 2 or more depths: no deeper-vs-"
                "shallower comparison to diagnose (missing data, not a null result).")
    return (f"No plain arm has a worse mean {metric} than a shallower plain arm of the same line, so "
            "there is no depth degradation to diagnose (see the depth trend for the tests).")


def degradation(e: dict, level: float) -> str:
    """One degradation of why.diagnose() in a sentence (sentences.words() adds its budget caveat)."""
    head = (f"{e['arm']} scores worse than {e['reference']} on {e['metric']} ({num(e['mean'])} vs "
            f"{num(e['reference_mean'])}, difference {num(e['diff'])}, "
            f"{ci(e['diff_ci_lo'], e['diff_ci_hi'], level)}, {pval(e['p'])})")
    loss = (f"final {TRAIN_LOSS} {num(e['train_loss'])} vs {num(e['reference_train_loss'])}, "
            f"difference {num(e['train_loss_diff'])}, "
            f"{ci(e['train_loss_ci_lo'], e['train_loss_ci_hi'], level)}, {pval(e['train_loss_p'])}")
    margin = f"{TRAIN_LOSS_MARGIN:.0%} of the reference's ({num(e['train_loss_margin'])})"
    gap = (f"final generalisation gap larger by {num(e['gap_diff'])} "
           f"({ci(e['gap_ci_lo'], e['gap_ci_hi'], level)}, {pval(e['gap_p'])})")
    body = {
        "too few seeds": "but with fewer than 2 seeds per arm there is no telling it from seed noise",
        "within noise": f"but this pair's difference is not resolved at n={e['n']} vs "
                        f"{e['reference_n']} seeds (see the depth trend)",
        "no train loss": "and the final training loss is missing, so optimisation and generalisation "
                         "cannot be told apart",
        "optimisation": f"and also trains worse ({loss}): an optimisation difficulty",
        "unresolved": f"but its training-loss difference is not resolved ({loss}: the interval holds "
                      f"both no change and a worsening of more than {margin}), so optimisation cannot "
                      "be told from generalisation",
        "gap unresolved": f"and trains no worse ({loss}), but its {gap} is not resolved, so the "
                          "deficit is pinned on neither optimisation nor generalisation",
        "generalisation": f"but trains no worse ({loss}: a worsening of more than {margin} is ruled "
                          f"out) and its {gap}: a generalisation gap, not an optimisation difficulty",
    }[e["where"]]
    return f"{head} {body}; {_gradients(e)}."


def _gradients(e: dict) -> str:
    if e["vanishing"] is None:
        return "gradient flow was not recorded for its completed runs"
    ratios = (f"first/last-layer gradient-norm ratio {num(e['ratio_first'])} at the first epoch, "
              f"{num(e['ratio_last'])} at the last")
    if e["vanishing"]:
        return f"its gradients vanish towards the input ({ratios})"
    if e["exploding"]:
        return f"its gradients explode towards the input ({ratios})"
    return (f"its {ratios.replace('ratio ', 'ratio (geometric mean over seeds) ', 1)}: not below the "
            f"{sci(VANISHING_RATIO)} threshold, nor above {sci(EXPLODING_RATIO)}, in every seed")


def batchnorm(e: dict, level: float) -> str:
    """One with-vs-without-BatchNorm comparison of why.diagnose() in a sentence."""
    def flow(vanishing, exploding) -> str:
        if vanishing is None:
            return "not recorded"
        return "vanishing" if vanishing else "exploding" if exploding else (
            f"neither vanishing nor exploding (first/last ratio within {sci(VANISHING_RATIO)} "
            f"to {sci(EXPLODING_RATIO)})")
    return (f"{e['model']} with vs without BatchNorm on {e['metric']}: {num(e['mean_bn'])} vs "
            f"{num(e['mean_nobn'])} ({ci(e['diff_ci_lo'], e['diff_ci_hi'], level)}, {pval(e['p'])}): "
            f"{e['verdict']}; gradient flow with BN: {flow(e['vanishing_bn'], e['exploding_bn'])}, "
            f"without: {flow(e['vanishing_nobn'], e['exploding_nobn'])}.")
