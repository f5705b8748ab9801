"""The answer first: a compact ranking and one sentence per research question, read in a minute.

    headline(answers, metric="val_acc", level=0.95)   # {"ranking": [...], "sentences": [...]}
    headline_text(h)                                   # at most ~20 lines for the terminal

Built from the records of questions.answers() only (numbers in, words out): the ranking table (arm,
mean, interval, n), then depth (each line's training-loss trend), plain vs residual (the difference
of their slopes), why (optimisation or generalisation, vanishing gradients), the budget (arms
that did not train) and the search (how many arms are under-searched). `archstudy run` and
`archstudy analyze` print it before the paths to answers.md and report.html, which hold every
detail; report.html opens with it.

Tests: .venv/bin/python -m pytest tests/test_analysis_headline.py
"""
from __future__ import annotations

from .common import ci, line_name, num, sci
from .attenuation import VANISHING_RATIO
from .space_audit import MIN_COMPLETED

DEPTH_COLUMN = "final_train_loss"   # He et al.'s degradation is about training error


def headline(answers: dict, metric: str = "val_acc", level: float = 0.95) -> dict:
    """{"title", "ranking": [{arm, mean, ci_lo, ci_hi, n}], "sentences": [...]} from answers."""
    ranking = [{k: r.get(k) for k in ("arm", "mean", "ci_lo", "ci_hi", "n")}
               for r in answers.get("ranking", {}).get("ranking", []) if r.get("n")]
    depth = answers.get("depth", {})
    sentences = [_depth(depth.get("depth_trend", []), level),
                 _plain_vs_residual(depth.get("degradation_gap", []), level),
                 _why(answers.get("why", {})),
                 _budget(answers.get("budget", {}).get("undertrained", [])),
                 _searched(answers.get("evidence", {}).get("space_audit", []))]
    return {"title": f"{metric}, mean over confirmation seeds with its {level:.0%} CI",
            "ci_label": f"{level:.0%} CI", "ranking": ranking, "sentences": [s for s in sentences if s]}


def _limited(rows: list[dict]) -> str:
    arms = sorted({a for r in rows for a in r.get("budget_limited") or []})
    return f" (budget-limited: {', '.join(arms)} did not train)" if arms else ""


def _clause(head: str, sep: str, r: dict, key: str, what: str, level: float) -> str:
    """'<head><sep><verdict> (<what><value> per layer, 95% CI lo to hi)', or without the numbers
    when the verdict is 'too few ...'; `sep` joins head and verdict (' ' or ': ')."""
    if r[key] is None or r["verdict"].startswith("too few"):
        return f"{head}: {r['verdict']}" if head else r["verdict"]
    return (f"{head}{sep if head else ''}{r['verdict']} ({what}{r[key]:+.3g} per layer, "
            f"{ci(r['ci_lo'], r['ci_hi'], level)})")


def _depth(trend: list[dict], level: float) -> str:
    rows = [r for r in trend if r.get("column") == DEPTH_COLUMN]
    if not rows:
        return "Depth: no line of plain or residual arms to study."
    parts = [_clause(line_name(r["family"], r["series"]), " ", r, "slope", "", level) for r in rows]
    return "Depth (final training loss against depth): " + "; ".join(parts) + "." + _limited(rows)


def _plain_vs_residual(gap: list[dict], level: float) -> str:
    rows = [r for r in gap if r.get("column") == DEPTH_COLUMN]
    if not rows:
        return "Plain vs residual: no plain and residual arms at matched depths."
    parts = [_clause("" if len(rows) == 1 else f"{'with' if r['batchnorm'] else 'without'} BatchNorm",
                     ": ", r, "diff", "plain minus residual slope ", level) for r in rows]
    return "Plain vs residual: " + "; ".join(parts) + "." + _limited(rows)


# why.diagnose()'s `where` of a deeper plain arm with a lower mean than a shallower one, in words;
# the first two and "unresolved" are deficits beyond seed noise, the last two are not shown to be.
WHERE = {"optimisation": "trains worse too: an optimisation difficulty",
         "generalisation": "trains no worse: a generalisation gap",
         "unresolved": "scores worse beyond seed noise, but whether it trains worse is not resolved",
         "gap unresolved": "scores worse beyond seed noise and trains no worse, but a larger "
                           "generalisation gap is not shown either",
         "no train loss": "scores worse beyond seed noise; no training loss to say why",
         "within noise": "scores lower, but only within seed noise (no deficit shown)",
         "too few seeds": "scores lower, with too few seeds to tell it from noise"}


def _why(why: dict) -> str:
    found = why.get("degradations", [])
    parts = [f"{d['arm']} vs {d['reference']} {WHERE[d['where']]}" for d in found]
    beyond = [d for d in found if d["where"] not in ("within noise", "too few seeds")]
    text = "; ".join(parts)
    if not beyond:
        none = "no plain arm scores worse than a shallower one beyond noise"
        text = f"{none} ({text})" if text else none
    att = why.get("attenuation", [])
    if att:
        vanish = [r["arm"] for r in att if r.get("vanishing")]
        text += (f"; gradients vanish in {', '.join(vanish)}" if vanish else
                 f"; no arm's gradients vanish (first/last-layer ratio above {sci(VANISHING_RATIO)} in some seed)")
    return f"Why: {text}." + _limited(found)


def _budget(flags: list[dict]) -> str:
    bad = [r for r in flags if r.get("undertrained")]
    if not flags:
        return ""
    if not bad:
        return "Budget: every arm trained (none near chance or still improving steeply at the end)."
    return ("Budget: not trained within the budget: " + "; ".join(f"{r['arm']} ({r['reason']})" for r in bad)
            + ". Verdicts involving them measure the budget, not the architecture.")


def _searched(audit: list[dict]) -> str:
    """How many arms space_audit marks under-searched ('' when none is, or without a search)."""
    thin = [r for r in audit if r.get("under_searched")]
    if not thin:
        return ""
    return (f"Search: {len(thin)} of {len(audit)} arms under-searched (fewer than {MIN_COMPLETED} "
            "completed search trials): verdicts may reflect the search, not the architecture.")


def ranking_cells(h: dict) -> list[tuple[str, str, str, str]]:
    """The ranking's cells as the terminal and report.html both show them: (arm, mean, interval,
    n) per arm, numbers to 3 significant digits, '-' for an interval of fewer than 2 seeds."""
    return [(r["arm"], num(r["mean"]), f"{num(r['ci_lo'])} to {num(r['ci_hi'])}"
             if r["ci_lo"] is not None else "-", str(r["n"])) for r in h["ranking"]]


def headline_text(h: dict, width: int = 100) -> str:
    """The headline as terminal lines: the ranking table, then the sentences wrapped to `width`."""
    import textwrap
    lines = [f"Answer ({h['title']}):"]
    if h["ranking"]:
        arm_width = max(len("arm"), *(len(r["arm"]) for r in h["ranking"]))
        lines.append(f"  {'arm':<{arm_width}}  {'mean':>6}  {h['ci_label']:<15}  n")
        for arm, mean, interval, n in ranking_cells(h):
            lines.append(f"  {arm:<{arm_width}}  {mean:>6}  {interval:<15}  {n}")
    else:
        lines.append("  no arm has completed confirmation runs")
    for s in h["sentences"]:
        lines.append(textwrap.fill(s, width, initial_indent="- ", subsequent_indent="  "))
    return "\n".join(lines)
