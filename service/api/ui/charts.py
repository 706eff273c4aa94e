"""Charts as inline SVG, drawn on the server: no JavaScript, nothing fetched, testable as text.

Two shapes cover the dashboard: columns (stacked when there are several series: verdicts per
time bucket; one series plus a marker line: the score histogram) and horizontal bar groups
(latency per stage, rates per framework). Every bar carries a <title> (the browser's tooltip)
and a `data-value`, and colours come from CSS classes (`series-<name>`), so the page's
Content-Security-Policy can forbid inline styles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 200
_LEFT, _BOTTOM, _TOP = 44, 22, 10


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # also the CSS class suffix
    values: Sequence[float]


def _svg(label: str, body: list[str], height: int = HEIGHT) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body) + "</svg>"
    )


def _bar(x: float, y: float, w: float, h: float, series: str, value: float, tip: str) -> str:
    return (
        f'<rect class="bar series-{escape(series)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
        f'height="{h:.1f}" data-value="{value:g}"><title>{escape(tip)}</title></rect>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def columns(
    label: str, categories: Sequence[str], series: Sequence[Series], *,
    markers: Sequence[tuple[float, str]] = (),
) -> Markup:
    """One column per category, the series stacked in it. Each of `markers` (a position 0–1
    across the plot, a label) draws a labelled vertical line, e.g. a threshold over a score
    histogram; the labels are stacked so that close lines stay readable."""
    plot_w, plot_h = WIDTH - _LEFT - 8, HEIGHT - _BOTTOM - _TOP
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    top = max(totals, default=0) or 1
    step = plot_w / max(len(categories), 1)
    body = [
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{WIDTH - 8}" y2="{_TOP + plot_h}"/>',
        _text(_LEFT - 4, _TOP + 8, f"{top:g}", "end"),
        _text(_LEFT - 4, _TOP + plot_h, "0", "end"),
    ]
    for index, category in enumerate(categories):
        base = _TOP + plot_h
        for one in series:
            value = one.values[index]
            if value <= 0:
                continue
            height = plot_h * value / top
            base -= height
            body.append(_bar(_LEFT + index * step + 1, base, max(step - 2, 1), height,
                             one.name, value, f"{category} · {one.name}: {value:g}"))
    if categories:
        body.append(_text(_LEFT, HEIGHT - 6, categories[0]))
        body.append(_text(WIDTH - 8, HEIGHT - 6, categories[-1], "end"))
    for index, (position, marker_label) in enumerate(markers):
        x = _LEFT + plot_w * min(max(position, 0.0), 1.0)
        body.append(f'<line class="marker" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_TOP + plot_h}"/>')
        body.append(_text(x + 4, _TOP + 10 + 12 * index, marker_label))
    return _svg(label, body)


def duration(ms: float) -> str:
    """A latency as people read it: "850 ms" below a second, "20.7 s" (not "2.07e+04 ms") above."""
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s" if ms < 100_000 else f"{ms / 1000:.0f} s"


def bar_groups(
    label: str, groups: Sequence[str], series: Sequence[Series], unit: str = "",
    label_of: Callable[[float], str] | None = None,
) -> Markup:
    """Horizontal bars: one group per name in `groups`, one bar per series in each. A value's
    text is `label_of(value)`, else the value with `unit`."""
    label_of = label_of or (lambda value: f"{value:.3g}{unit}")
    row, gap, label_w = 14, 10, 150
    height = _TOP + len(groups) * (row * len(series) + gap) + 4
    values = [v for s in series for v in s.values]
    top = max(values, default=0) or 1
    plot_w = WIDTH - label_w - 90
    body: list[str] = []
    y = float(_TOP)
    for index, group in enumerate(groups):
        body.append(_text(label_w - 6, y + row * len(series) / 2 + 4, group, "end"))
        for one in series:
            value = one.values[index]
            width = plot_w * value / top
            tip = f"{group} · {one.name}: {label_of(value)}"
            body.append(_bar(label_w, y, max(width, 0.5), row - 2, one.name, value, tip))
            body.append(_text(label_w + width + 4, y + row - 4, f"{one.name} {label_of(value)}"))
            y += row
        y += gap
    return _svg(label, body, height=int(height))
