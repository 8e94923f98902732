"""A self-contained HTML page per challenge report (table + embedded plot)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

__all__ = ["write_html_report"]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3e}"
    return html.escape(str(value))


def _details(check: dict[str, Any]) -> list[str]:
    found = check.get("details", check.get("detail", []))
    return [str(d) for d in found] if isinstance(found, list) else [str(found)]


def write_html_report(
    report: dict[str, Any], png: Path | None, path: Path, context: dict[str, str]
) -> Path:
    """Write ``path``: the verdict, reasons, thresholds and per-segment distances."""
    rho = report["thresholds"]["rho"]
    c = report["thresholds"]["c"]
    rows = []
    for seg in report["segments"]:
        m = seg["metrics"]
        ok = "pass" if seg["passed"] else "fail"
        rows.append(
            f"<tr class='{ok}'><td>{seg['index']}</td><td>{seg['start_step']}→{seg['end_step']}</td>"
            f"<td>{_fmt(', '.join(seg.get('selected_by', [])))}</td>"
            f"<td>{_fmt(m.get('l1'))}</td><td>{_fmt(m.get('l2'))}</td><td>{_fmt(m.get('linf'))}</td>"
            f"<td>{_fmt(m.get('cosine'))}</td><td>{_fmt(m.get('normalized_error'))}</td>"
            f"<td>{_fmt(rho)}</td><td>{_fmt(m.get('direction_cosine'))}</td><td>{_fmt(c)}</td>"
            f"<td>{'yes' if seg.get('bitwise_identical') else 'no'}</td><td>{ok}</td></tr>"
        )
    checks = "".join(
        f"<li><b>{html.escape(name)}</b>: {'ok' if v.get('ok') else 'FAILED'} "
        f"{html.escape('; '.join(_details(v)))}</li>"
        for name, v in sorted(report.get("checks", {}).items())
    )
    img = ""
    if png is not None and png.exists():
        data = base64.b64encode(png.read_bytes()).decode()
        img = f"<img alt='per-segment normalized error' src='data:image/png;base64,{data}'>"
    ctx = "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>"
        for k, v in context.items()
    )
    verdict = report["verdict"]
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
<p>reasons: {_fmt(", ".join(report.get("reasons", [])) or "none")}</p>
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
