"""A suite run as a plain-text table, JSON, and one self-contained HTML page.

The text reads well in a pipe and a CI log (fixed-width columns, no colour codes). The HTML page
has no external assets (inline CSS and an inline SVG bar chart), so it can be attached to a CI
run or mailed and still open anywhere.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from tunelab.evaluate.runner import SuiteRun

#: bar colours per model (colour-blind-safe Okabe-Ito palette)
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]


def _count(run: SuiteRun, model_index: int, tag: str | None) -> str:
    model = run.models[model_index]
    rows = [c for c in model.cases if tag is None or tag in (c.case.tags or ["(untagged)"])]
    return f"{sum(c.passed for c in rows)}/{len(rows)} {_pct(model.pass_rate(tag))}"


def text_report(run: SuiteRun, min_pass: float | None = None) -> str:
    """Pass rates per tag (rows) and model (columns), the regressions, and the gate's verdict."""
    suite, models = run.suite, run.models
    out = [f"suite {suite.name} ({suite.path}): {len(suite.cases)} cases"]
    out += [
        f"model {i + 1}: {m.name}  ({m.generated} generated, {m.cached} cached, {m.seconds:.1f} s)"
        for i, m in enumerate(models)
    ]
    header = ["tag", *(f"[{i + 1}] {m.name}" for i, m in enumerate(models))]
    body = [["all", *(_count(run, i, None) for i in range(len(models)))]]
    body += [[tag, *(_count(run, i, tag) for i in range(len(models)))] for tag in run.tags()]
    out += ["", *_table(header, body)]
    unparseable = [f"{m.name}: {m.unparseable}" for m in models if m.unparseable]
    if unparseable:
        out.append(f"judge replies without a score (counted as failures): {', '.join(unparseable)}")
    regressions = run.regressions()
    if len(models) > 1:
        out += ["", f"regressions (pass on {models[0].name}, fail on a later model): {len(regressions)}"]
        for r in regressions:
            out.append(
                f"  {r.case_id} [{', '.join(r.tags) or '-'}] -> fails on {r.model}: {'; '.join(r.reasons)[:200]}"
            )
    failing = [(m.name, c) for m in models[:1] for c in m.cases if not c.passed] if len(models) == 1 else []
    if failing:
        out += ["", f"failing cases: {len(failing)}"]
        for _, c in failing:
            reasons = {f"{a.type}: {a.reason}" for s in c.samples if not s.passed for a in s.assertions if not a.passed}
            rate = f" ({c.pass_rate:.0%} of {len(c.samples)} samples)" if len(c.samples) > 1 else ""
            out.append(f"  {c.case.id}{rate}: {'; '.join(sorted(reasons))[:200]}")
    if min_pass is not None:
        below = run.below(min_pass)
        verdict = (
            f"FAIL: below --min-pass {min_pass:g}: {', '.join(below)}"
            if below
            else f"ok: every model passes at least {min_pass:g}"
        )
        out += ["", verdict]
    return "\n".join(out)


def json_report(run: SuiteRun) -> dict:
    """Everything in the run: settings, per-model rates, every case's samples and assertions."""
    s = run.settings
    return {
        "suite": {"name": run.suite.name, "path": run.suite.path, "cases": len(run.suite.cases)},
        "settings": {
            "max_new_tokens": s.max_new_tokens if s.override_max_new_tokens else None,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
            "repeat": s.repeat,
        },
        "models": [
            {
                "name": m.name,
                "key": m.key,
                "pass_rate": m.pass_rate(),
                "passed": m.passed_count,
                "cases": len(m.cases),
                "generated": m.generated,
                "cached": m.cached,
                "seconds": round(m.seconds, 3),
                "judge_unparseable": m.unparseable,
                "by_tag": {t: m.pass_rate(t) for t in run.tags()},
                "results": [
                    {
                        "id": c.case.id,
                        "tags": c.case.tags,
                        "weight": c.case.weight,
                        "passed": c.passed,
                        "pass_rate": c.pass_rate,
                        "min_pass_rate": c.case.min_pass_rate,
                        "threshold": c.case.threshold,
                        "conversation": c.case.conversation,
                        "samples": [
                            {
                                "answer": smp.answer,
                                "score": smp.score,
                                "passed": smp.passed,
                                "cached": smp.cached,
                                "assertions": [a.__dict__ for a in smp.assertions],
                            }
                            for smp in c.samples
                        ],
                    }
                    for c in m.cases
                ],
            }
            for m in run.models
        ],
        "regressions": [r.__dict__ for r in run.regressions()],
    }


def svg_bars(run: SuiteRun) -> str:
    """Grouped horizontal bars: pass rate per tag (groups) and model (bars), with a legend."""
    tags = ["all", *run.tags()]
    n = len(run.models)
    bar, gap, label_w, chart_w = 14, 10, 170, 420
    group_h = n * bar + gap
    legend_h = 20 * n + 10
    height = legend_h + len(tags) * group_h + 30
    e = html.escape
    parts = [
        f'<svg width="{label_w + chart_w + 70}" height="{height}" '
        f'role="img" aria-label="pass rate per tag and model" font-family="system-ui,sans-serif" font-size="12">'
    ]
    for i, m in enumerate(run.models):
        y = 10 + 20 * i
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="12" height="12" fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{label_w + 18}" y="{y + 10}">[{i + 1}] {e(m.name)}</text>'
        )
    for t, tag in enumerate(tags):
        top = legend_h + t * group_h
        parts.append(f'<text x="{label_w - 8}" y="{top + n * bar / 2 + 4}" text-anchor="end">{e(tag)}</text>')
        for i, m in enumerate(run.models):
            rate = m.pass_rate(None if tag == "all" else tag) or 0.0
            y = top + i * bar
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{chart_w * rate:.1f}" height="{bar - 2}" '
                f'fill="{COLOURS[i % len(COLOURS)]}"><title>{e(m.name)} {e(tag)}: {_pct(rate)}</title></rect>'
                f'<text x="{label_w + chart_w * rate + 4:.1f}" y="{y + bar - 4}">{_pct(rate)}</text>'
            )
    axis_y = legend_h + len(tags) * group_h
    for frac in (0, 0.25, 0.5, 0.75, 1):
        x = label_w + chart_w * frac
        parts.append(
            f'<line x1="{x}" y1="{legend_h - 4}" x2="{x}" y2="{axis_y}" stroke="#ccc" stroke-dasharray="2,3"/>'
            f'<text x="{x}" y="{axis_y + 14}" text-anchor="middle" fill="#666">{int(frac * 100)}%</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;color:#222;max-width:1200px;padding:0 1em}
h1{font-size:1.5em}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f3f3f3}td.num{font-family:ui-monospace,monospace;text-align:right;white-space:nowrap}
.pass{color:#0a7d32;font-weight:600}.fail{color:#b3261e;font-weight:600}
pre{white-space:pre-wrap;margin:0;font-size:12px;max-width:520px}.muted{color:#666;font-size:13px}
details summary{cursor:pointer}
"""


def html_report(run: SuiteRun, min_pass: float | None = None) -> str:
    """One page: summary table, bar chart, regressions, then every case with each model's answers."""
    e = html.escape
    models = run.models
    head = "".join(f"<th>[{i + 1}] {e(m.name)}</th>" for i, m in enumerate(models))
    rows = "".join(
        f"<tr><td>{e(tag)}</td>"
        + "".join(
            f'<td class="num">{e(_count(run, i, None if tag == "all" else tag))}</td>' for i in range(len(models))
        )
        + "</tr>"
        for tag in ["all", *run.tags()]
    )
    info = "".join(
        f"<li>[{i + 1}] {e(m.name)} <span class='muted'>key {e(m.key)}; {m.generated} generated, "
        f"{m.cached} cached, {m.seconds:.1f} s</span></li>"
        for i, m in enumerate(models)
    )
    regressions = run.regressions()
    reg_rows = "".join(
        f"<tr><td>{e(r.case_id)}</td><td>{e(', '.join(r.tags))}</td><td>{e(r.model)}</td>"
        f"<td>{e('; '.join(r.reasons))}</td></tr>"
        for r in regressions
    )
    reg = (
        ""
        if len(models) < 2
        else (
            f"<h2>Regressions ({len(regressions)})</h2><p class='muted'>Cases that pass on {e(models[0].name)} "
            f"and fail on a later model.</p>"
            + (
                f"<table><tr><th>case</th><th>tags</th><th>fails on</th><th>why</th></tr>{reg_rows}</table>"
                if regressions
                else "<p>none</p>"
            )
        )
    )
    gate = ""
    if min_pass is not None:
        below = run.below(min_pass)
        gate = (
            f"<p class='{'fail' if below else 'pass'}'>--min-pass {min_pass:g}: "
            f"{'below: ' + e(', '.join(below)) if below else 'every model passes'}</p>"
        )
    case_rows = []
    for ci, case in enumerate(run.suite.cases):
        prompt = "\n".join(f"[{t['role']}] {t['content']}" for t in case.conversation)
        cells = []
        for m in models:
            c = m.cases[ci]
            verdict = f"<span class='{'pass' if c.passed else 'fail'}'>{'pass' if c.passed else 'FAIL'}</span>"
            rate = f" <span class='muted'>{c.pass_rate:.0%} of {len(c.samples)}</span>" if len(c.samples) > 1 else ""
            checks = "<br>".join(
                f"{'✓' if a.passed else '✗'} {e(a.type)}: {e(a.reason)}{' (weight 0)' if a.weight == 0 else ''}"
                for a in c.samples[0].assertions
            )
            cells.append(
                f"<td>{verdict}{rate}<pre>{e(c.samples[0].answer)}</pre><span class='muted'>{checks}</span></td>"
            )
        case_rows.append(
            f"<tr><td>{e(case.id)}<br><span class='muted'>{e(', '.join(case.tags))}</span></td>"
            f"<td><pre>{e(prompt)}</pre></td>{''.join(cells)}</tr>"
        )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>tunelab suite {e(run.suite.name)}</title><style>{_CSS}</style></head><body>
<h1>Suite {e(run.suite.name)}</h1>
<p class="muted">{e(run.suite.path)}: {len(run.suite.cases)} cases. A case passes when its weighted share of
passing assertions reaches its threshold in at least its minimum share of samples; a pass rate is the weighted
share of passing cases.</p>
<ul>{info}</ul>{gate}
<h2>Pass rate per tag</h2>
<table><tr><th>tag</th>{head}</tr>{rows}</table>
{svg_bars(run)}
{reg}
<h2>Cases</h2>
<table><tr><th>case</th><th>prompt</th>{head}</tr>{"".join(case_rows)}</table>
</body></html>
"""


def write_reports(
    run: SuiteRun, *, json_out: Path | None = None, html_out: Path | None = None, min_pass: float | None = None
) -> None:
    """Write the JSON and/or HTML report (parent folders created)."""
    for path, render in (
        (json_out, lambda: json.dumps(json_report(run), indent=2, ensure_ascii=False) + "\n"),
        (html_out, lambda: html_report(run, min_pass)),
    ):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(render(), encoding="utf-8")
