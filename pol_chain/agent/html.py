"""A self-contained HTML page per challenge report (table + embedded plot)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from pol_chain.format import Check, Report

__all__ = ["write_html_report"]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3e}"
    return html.escape(str(value))


def _check(name: str, check: Check) -> str:
    state = "ok" if check.ok else "FAILED"
    return f"<li><b>{html.escape(name)}</b>: {state} {html.escape('; '.join(check.details))}</li>"


def write_html_report(
    report: Report, png: Path | None, path: Path, context: dict[str, str]
) -> Path:
    """Write ``path``: the verdict, reasons, thresholds and per-segment distances."""
    rho, c = report.thresholds.rho, report.thresholds.c
    rows = []
    for seg in report.segments:
        m = seg.metrics
        ok = "pass" if seg.passed else "fail"

        def metric(name: str, m: Any = m) -> str:
            return _fmt(getattr(m, name) if m is not None else None)

        rows.append(
            f"<tr class='{ok}'><td>{seg.index}</td><td>{seg.start_step}→{seg.end_step}</td>"
            f"<td>{_fmt(', '.join(seg.selected_by))}</td>"
            f"<td>{metric('l1')}</td><td>{metric('l2')}</td><td>{metric('linf')}</td>"
            f"<td>{metric('cosine')}</td><td>{metric('normalized_error')}</td>"
            f"<td>{_fmt(rho)}</td><td>{metric('direction_cosine')}</td><td>{_fmt(c)}</td>"
            f"<td>{'yes' if seg.bitwise_identical else 'no'}</td><td>{ok}</td></tr>"
        )
    checks = "".join(_check(name, v) for name, v in sorted(report.checks.items()))
    img = ""
    if png is not None and png.exists():
        data = base64.b64encode(png.read_bytes()).decode()
        img = f"<img alt='per-segment normalized error' src='data:image/png;base64,{data}'>"
    ctx = "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>"
        for k, v in context.items()
    )
    verdict = report.verdict
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pol_chain report — {verdict}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:left}}
tr.fail td{{background:#fde8e8}}tr.pass td{{background:#eefbea}}
.verdict{{font-size:1.4em;font-weight:bold;color:{"#1a7f37" if verdict == "pass" else "#cf222e"}}}
</style></head><body>
<h1>Proof-of-learning verification</h1>
<p class="verdict">verdict: {verdict}</p>
<p>reasons: {_fmt(", ".join(report.reason_codes) or "none")}</p>
<table>{ctx}</table>
<h2>Checks</h2><ul>{checks}</ul>
<h2>Replayed segments</h2>
<p>Accepted when normalized error ≤ ρ and direction cosine ≥ c, over the full state
(parameters, buffers, optimizer state).</p>
<table><tr><th>segment</th><th>steps</th><th>selected by</th><th>l1</th><th>l2</th><th>l∞</th>
<th>cosine</th><th>normalized error</th><th>ρ</th><th>direction cos</th><th>c</th>
<th>bitwise</th><th>verdict</th></tr>{"".join(rows)}</table>
{img}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
