"""The red-team report: JSON for scripts, a plain-text table for a terminal or a pipe, and one
self-contained HTML page (inline CSS, no scripts, no external assets) for people.

Every number is printed with its counts and its 95% interval; the corrected rate (for the
detectors' measured errors) stands next to the raw one, and two targets stand side by side so a
fine-tune reads against its base. Nothing is said by colour alone: the HTML bars repeat the
numbers as text.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from tunelab.security.redteam import TargetRun
from tunelab.security.redteam_calibration import DetectorStats
from tunelab.security.redteam_probes import CATEGORIES
from tunelab.security.redteam_stats import Rate

TITLES = {**CATEGORIES, "all": "All categories"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"[{100 * low:.1f}-{100 * high:.1f}]"


def raw_cell(r: Rate) -> str:
    return f"{_pct(r.raw)} {r.successes}/{r.judged} {_ci(r.raw_low, r.raw_high) if r.judged else ''}".rstrip()


def corrected_cell(r: Rate) -> str:
    return f"{_pct(r.corrected)} {_ci(r.corrected_low, r.corrected_high)}".rstrip()


def report_json(runs: Sequence[TargetRun], stats: dict[str, DetectorStats], settings: dict) -> dict:
    """The whole report as one JSON-ready dict (also the HTML page's source)."""
    return {
        "report": "tunelab redteam",
        "settings": settings,
        "detectors": {name: {"sensitivity": round(s.sensitivity, 4), "specificity": round(s.specificity, 4),
                             "labelled": s.labelled} for name, s in stats.items()},
        "targets": [{
            "name": run.name,
            "summary": {guard: {cat: r.to_json() for cat, r in per.items()} for guard, per in run.summary.items()},
            "benign": run.benign.to_json() if run.benign else None,
            "attempts": [r.to_json() for r in run.results],
        } for run in runs],
    }


def _rows(runs: Sequence[TargetRun]) -> list[tuple[str, str]]:
    """(category, guard) rows in report order, over every target's summary."""
    guards = list(dict.fromkeys(g for run in runs for g in run.summary))
    cats = [c for c in TITLES if any(c in run.summary.get(g, {}) for run in runs for g in guards)]
    return [(c, g) for c in cats for g in guards]


def terminal_table(runs: Sequence[TargetRun], stats: dict[str, DetectorStats]) -> str:
    """Fixed-width text: one row per category and guard setting, targets side by side."""
    header = ["category", "guardrails"]
    for i in range(len(runs)):
        label = "AB"[i] if len(runs) == 2 else ""
        header += [f"{label}{': ' if label else ''}ASR k/n [95% CI]", "corrected [95% CI]", "unjudged"]
    body = []
    for cat, guard in _rows(runs):
        row = [TITLES[cat], guard]
        for run in runs:
            r = run.summary.get(guard, {}).get(cat)
            row += ["-", "-", "-"] if r is None else [raw_cell(r), corrected_cell(r), str(r.unjudged)]
        body.append(row)
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = ["attack success rate (ASR) per category: successes / judged attempts, 95% Wilson interval; "
           "corrected for the detectors' measured sensitivity and specificity (Rogan-Gladen)"]
    if len(runs) == 2:
        out += [f"A = {runs[0].name}", f"B = {runs[1].name}"]
    elif runs:
        out.append(f"target = {runs[0].name}")
    out += ["", line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    for run in runs:
        if run.benign:
            b = run.benign.to_json()
            scope = "" if b["answers_checked"] else " (inputs only)"
            out.append(f"benign prompts blocked with guardrails on{scope} ({run.name}): {b['blocked']}/{b['total']} = "
                       f"{_pct(b['false_block_rate'])} {_ci(*b['ci95'])}")
    out.append("detectors: " + "; ".join(f"{n} sensitivity {s.sensitivity:.3f} specificity {s.specificity:.3f} "
                                        f"(n={s.labelled})" for n, s in stats.items()))
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top;font-size:14px}th{background:#f0f0f0}td.num{font-family:ui-monospace,monospace;white-space:nowrap}
.bar{position:relative;width:160px;height:12px;background:#eee;border:1px solid #bbb;margin-top:3px}
.fill{position:absolute;left:0;top:0;bottom:0;background:#c0392b}
.ci{position:absolute;top:5px;height:2px;background:#000}
pre{white-space:pre-wrap;max-width:700px;margin:0;font-size:12px}details{margin:.5em 0}
.muted{color:#666;font-size:13px}
"""


def _bar(r: Rate) -> str:
    if r.raw is None:
        return ""
    width = 100 * r.raw
    left, right = 100 * r.raw_low, 100 * r.raw_high
    return (f'<div class="bar" role="img" aria-label="ASR {_pct(r.raw)}, 95% CI {_ci(r.raw_low, r.raw_high)}">'
            f'<div class="fill" style="width:{width:.1f}%"></div>'
            f'<div class="ci" style="left:{left:.1f}%;width:{max(right - left, 0.5):.1f}%"></div></div>')


def render_html(runs: Sequence[TargetRun], stats: dict[str, DetectorStats], settings: dict) -> str:
    """One self-contained page: summary table with bars, benign false blocks, detectors, every attempt."""
    e = html.escape
    head = "".join(f"<th>{e(run.name)}: ASR k/n [95% CI]</th><th>corrected [95% CI]</th>" for run in runs)
    rows = []
    for cat, guard in _rows(runs):
        cells = ""
        for run in runs:
            r = run.summary.get(guard, {}).get(cat)
            if r is None:
                cells += "<td>-</td><td>-</td>"
                continue
            unj = f' <span class="muted">({r.unjudged} unjudged)</span>' if r.unjudged else ""
            cells += f'<td class="num">{e(raw_cell(r))}{unj}{_bar(r)}</td><td class="num">{e(corrected_cell(r))}</td>'
        rows.append(f"<tr><td>{e(TITLES[cat])}</td><td>{e(guard)}</td>{cells}</tr>")
    benign = "".join(
        f"<li>{e(run.name)}: {b['blocked']}/{b['total']} benign prompts blocked = {_pct(b['false_block_rate'])} "
        f"{_ci(*b['ci95'])}{'' if b['answers_checked'] else ' (inputs only)'}</li>"
        for run in runs if run.benign for b in [run.benign.to_json()])
    detectors = "".join(f"<tr><td>{e(n)}</td><td class='num'>{s.sensitivity:.3f}</td>"
                        f"<td class='num'>{s.specificity:.3f}</td><td class='num'>{s.labelled}</td></tr>"
                        for n, s in stats.items())
    details = []
    for run in runs:
        items = []
        for res in run.results:
            a = res.attempt
            prompt = "\n".join(f"[{role}] {text}" for role, text in a.messages)
            outcome = {True: "attack succeeded", False: "attack failed", None: "cannot judge"}[res.success]
            items.append(f"<tr><td>{e(a.id)}</td><td>{e(TITLES[a.category])}</td><td>{e(res.guard)}</td>"
                         f"<td>{e(a.goal)}<pre>{e(prompt)}</pre></td><td><pre>{e(res.output)}</pre></td>"
                         f"<td>{e(outcome)}<br><span class='muted'>{e(res.judgement)}: {e(res.reason)}</span>"
                         "</td></tr>")
        guards = ", ".join(dict.fromkeys(r.guard for r in run.results))
        n = len({r.attempt.id for r in run.results})
        details.append(f"<details><summary>{e(run.name)}: {n} attempts, guardrails {e(guards)}</summary>"
                       "<table><tr><th>id</th>"
                       "<th>category</th><th>guardrails</th><th>goal and prompt</th><th>answer</th><th>verdict</th>"
                       f"</tr>{''.join(items)}</table></details>")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tunelab redteam report</title>
<style>{_CSS}</style></head><body>
<h1>Red-team report</h1>
<p class="muted">Attack success rate (ASR) = attempts the detector judged successful / attempts it could judge,
with a 95% Wilson interval. Corrected = the rate behind the detectors' measured errors (Rogan-Gladen), its
interval the Wilson bounds mapped through the same correction (rows judged by several detectors: each
group corrected apart at a Bonferroni-adjusted level, then weighted by its count).
Settings: {e(json.dumps(settings))}</p>
<table><tr><th>category</th><th>guardrails</th>{head}</tr>{''.join(rows)}</table>
{f'<h2>Guardrail cost</h2><ul>{benign}</ul>' if benign else ''}
<h2>Detectors</h2><table><tr><th>detector</th><th>sensitivity</th><th>specificity</th><th>labelled outputs</th></tr>
{detectors}</table>
<h2>Attempts</h2>{''.join(details)}
</body></html>
"""


def write_reports(runs: Sequence[TargetRun], stats: dict[str, DetectorStats], settings: dict, *,
                  json_out: Path | None = None, html_out: Path | None = None) -> None:
    """Write the JSON and/or HTML report (parent folders created)."""
    outputs = [(json_out, lambda: json.dumps(report_json(runs, stats, settings), indent=2) + "\n"),
               (html_out, lambda: render_html(runs, stats, settings))]
    for path, text in outputs:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text(), encoding="utf-8")
