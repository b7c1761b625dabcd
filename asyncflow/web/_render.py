"""The runs page's HTML, rendered on the server: plain functions from data to text.

No templates and no JavaScript: every value goes through :func:`html.escape`, pictures are
inline SVG, and a page that shows something moving refreshes itself with a ``<meta>`` tag.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from ._live import BatchView, HostView

__all__ = ["COLOURS", "StepRow", "dag_svg", "gantt_svg", "page"]

#: Fill colour of each step or run status, in the tables, the timeline and the graph.
COLOURS = {
    "succeeded": "#2e7d32",
    "restored": "#1565c0",
    "failed": "#c62828",
    "skipped": "#9e9e9e",
    "cancelled": "#ef6c00",
    "running": "#f9a825",
    "pending": "#cfd8dc",
    "closed": "#2e7d32",
    "open": "#c62828",
    "half-open": "#f9a825",
}
_OTHER = "#757575"

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#212121}
a{color:#0d47a1}table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e0e0e0;text-align:left;vertical-align:top}
th{background:#f5f5f5}.badge{color:#fff;border-radius:3px;padding:0 .4rem;white-space:nowrap}
form{margin:.5rem 0 1rem}input,select{margin-right:.6rem}.err{color:#b71c1c}
.cause{margin-left:1.2rem;color:#5d4037}.bar{background:#eceff1;width:240px;height:12px}
.fill{height:12px}.muted{color:#757575}code{font-size:12px}
"""


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step as the run page shows it."""

    name: str
    status: str
    attempts: int | None = None
    after: tuple[str, ...] = ()
    started_at: float | None = None  # wall-clock seconds
    finished_at: float | None = None
    duration: float | None = None
    error: Mapping[str, object] | None = None


def colour(status: str) -> str:
    """The colour a status is drawn in."""
    return COLOURS.get(status, _OTHER)


def badge(status: str) -> str:
    """A status as a coloured label."""
    return f'<span class="badge" style="background:{colour(status)}">{escape(status)}</span>'


def when(iso_or_seconds: str | float | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS`` UTC; text that is no time is shown as it is."""
    if iso_or_seconds is None or iso_or_seconds == "":
        return "-"
    try:
        if isinstance(iso_or_seconds, str):
            t = dt.datetime.fromisoformat(iso_or_seconds)
        else:
            t = dt.datetime.fromtimestamp(iso_or_seconds, dt.UTC)
    except (ValueError, OverflowError, OSError):
        return escape(str(iso_or_seconds))
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def page(title: str, body: str, *, refresh: float | None = None) -> str:
    """A whole HTML document; ``refresh``: reload every that many seconds."""
    meta = f'<meta http-equiv="refresh" content="{refresh:g}">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def table(head: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str) -> str:
    """An HTML table; cells are HTML already (escape text before)."""
    lines = [f"<tr>{''.join(f'<td>{c}</td>' for c in row)}</tr>" for row in rows]
    if not lines:
        return f'<p class="muted">{escape(empty)}</p>'
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    thead = f"<thead><tr>{header}</tr></thead>" if any(head) else ""
    return f"<table>{thead}<tbody>{''.join(lines)}</tbody></table>"


def error_html(error: Mapping[str, object] | None) -> str:
    """A recorded error and its cause chain."""
    if not error:
        return ""
    out = [
        f'<div class="err">{escape(str(error.get("type")))}: {escape(str(error.get("message")))}</div>'
    ]
    causes = error.get("causes")
    for cause in causes if isinstance(causes, list) else []:
        if isinstance(cause, dict):
            out.append(
                f'<div class="cause">caused by {escape(str(cause.get("type")))}: '
                f"{escape(str(cause.get('message')))}</div>"
            )
    return "".join(out)


def gantt_svg(steps: Sequence[StepRow], *, width: int = 720) -> str:
    """A timeline: one bar per step that ran, from its start to its finish (or now, if running)."""
    timed = [s for s in steps if s.started_at is not None]
    if not timed:
        return '<p class="muted">No step has recorded times yet.</p>'
    t0 = min(s.started_at for s in timed if s.started_at is not None)
    t1 = max((s.finished_at or s.started_at or t0) for s in timed)
    if any(s.finished_at is None and s.status == "running" for s in timed):
        t1 = max(t1, time.time())  # a running step's bar reaches now
    span = max(t1 - t0, 1e-3)
    label, row, pad = 160, 24, 4
    plot = width - label - 90
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" '
        f'height="{row * len(timed) + 24}" role="img" aria-label="step timeline">'
    ]
    for k, s in enumerate(timed):
        assert s.started_at is not None
        x = label + (s.started_at - t0) / span * plot
        end = s.finished_at if s.finished_at is not None else t1
        w = max((end - s.started_at) / span * plot, 3.0)
        y = k * row
        took = f"{end - s.started_at:.3f} s"
        parts.append(
            f'<text x="0" y="{y + 16}" font-size="12">{escape(s.name)}</text>'
            f'<rect data-step="{escape(s.name)}" x="{x:.1f}" y="{y + pad}" width="{w:.1f}" '
            f'height="{row - 2 * pad}" fill="{colour(s.status)}"><title>{escape(s.name)}: '
            f"{escape(s.status)}, {took}</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 16}" font-size="11" fill="#555">{took}</text>'
        )
    parts.append(
        f'<text x="{label}" y="{row * len(timed) + 16}" font-size="11" fill="#555">0 s</text>'
        f'<text x="{label + plot}" y="{row * len(timed) + 16}" font-size="11" fill="#555" '
        f'text-anchor="end">{span:.3f} s</text></svg>'
    )
    return "".join(parts)


def _layers(steps: Sequence[StepRow]) -> dict[str, int]:
    """Each step's column: one past its furthest dependency.

    Steps come in the flow's order, which is topological (a step after its dependencies), so
    one pass suffices; a dependency not seen yet is left out rather than looped on.
    """
    layer: dict[str, int] = {}
    for s in steps:
        layer[s.name] = 1 + max((layer[a] for a in s.after if a in layer), default=-1)
    return layer


def dag_svg(steps: Sequence[StepRow]) -> str:
    """The flow's graph, left to right, each step a box coloured by its status."""
    if not steps:
        return '<p class="muted">No steps known.</p>'
    layer = _layers(steps)
    columns: dict[int, list[str]] = {}
    for s in steps:
        columns.setdefault(layer[s.name], []).append(s.name)
    bw, bh, gx, gy = 140, 34, 50, 16
    pos = {
        name: (c * (bw + gx) + 4, r * (bh + gy) + 4)
        for c, names in columns.items()
        for r, name in enumerate(names)
    }
    width = (max(columns) + 1) * (bw + gx) - gx + 8
    height = max(len(n) for n in columns.values()) * (bh + gy) - gy + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}" '
        f'role="img" aria-label="flow graph"><defs><marker id="arrow" viewBox="0 0 10 10" '
        f'refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto">'
        f'<path d="M0,0L10,5L0,10z" fill="#616161"/></marker></defs>'
    ]
    for s in steps:
        x2, y2 = pos[s.name]
        for a in s.after:
            if a in pos:
                x1, y1 = pos[a]
                parts.append(
                    f'<line x1="{x1 + bw}" y1="{y1 + bh / 2}" x2="{x2}" y2="{y2 + bh / 2}" '
                    f'stroke="#616161" marker-end="url(#arrow)"/>'
                )
    for s in steps:
        x, y = pos[s.name]
        parts.append(
            f'<g data-step="{escape(s.name)}"><rect x="{x}" y="{y}" width="{bw}" height="{bh}" '
            f'rx="5" fill="{colour(s.status)}"><title>{escape(s.name)}: {escape(s.status)}'
            f'</title></rect><text x="{x + bw / 2}" y="{y + bh / 2 + 4}" font-size="12" '
            f'fill="#fff" text-anchor="middle">{escape(s.name[:20])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def hosts_html(hosts: Mapping[str, HostView]) -> str:
    """Each host's circuit state and its recent transitions, most recently changed first."""
    rows = []
    for key, h in reversed(list(hosts.items())):
        moves = "<br>".join(
            f"{when(t)} {escape(str(old))} &rarr; {escape(str(new))}"
            for t, old, new in reversed(h.transitions)
        )
        rows.append((escape(key), badge(str(h.state)), when(h.since), moves))
    return table(
        ("Host", "Circuit", "Since", "Recent transitions"),
        rows,
        empty="No circuit has changed state.",
    )


def batches_html(batches: Mapping[str, BatchView]) -> str:
    """Each batch's progress: a bar when its total is known, counts, rate and time left."""
    rows = []
    for b in reversed(list(batches.values())):
        p = b.progress
        share = p.done / p.total if p.total else (1.0 if p.finished else 0.0)
        bar = (
            f'<div class="bar"><div class="fill" style="width:{share * 100:.1f}%;'
            f'background:{colour("succeeded" if not p.failed else "failed")}"></div></div>'
        )
        left = "-" if p.eta is None or p.finished else f"{p.eta:.0f} s"
        state = "finished" if p.finished else "running"
        rows.append(
            (
                f"{escape(p.batch)}<br><code>{escape(p.batch_id)}</code>",
                badge("succeeded" if p.finished and not p.failed else state),
                bar,
                f"{p.done}" + (f" / {p.total}" if p.total is not None else ""),
                f"{p.succeeded} ok, {p.failed} failed, {p.restored} restored, "
                f"{p.in_flight} in flight",
                f"{p.rate:.1f}/s",
                left,
            )
        )
    return table(
        ("Batch", "State", "Progress", "Done", "Runs", "Rate", "Left"),
        rows,
        empty="No batch has run.",
    )


def inputs_html(inputs: str) -> str:
    """A run's inputs (JSON text) as a small table of name and value."""
    try:
        parsed = json.loads(inputs) if inputs else {}
    except ValueError:
        return f"<code>{escape(inputs)}</code>"
    if not isinstance(parsed, dict):
        return f"<code>{escape(inputs)}</code>"
    rows = [
        (escape(str(k)), f"<code>{escape(json.dumps(v, ensure_ascii=False)[:500])}</code>")
        for k, v in parsed.items()
    ]
    return table(("Input", "Value"), rows, empty="No inputs.")
