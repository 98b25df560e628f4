"""Small inline-SVG charts for the HTML report: no JavaScript library, no network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 16, 40


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _frame(title: str, kind: str, body: list[str], legend: Sequence[str]) -> str:
    items = [
        f'<g class="legend-item"><rect x="{WIDTH - RIGHT + 12}" y="{TOP + 16 * i}" width="10" '
        f'height="10" fill="{PALETTE[i % len(PALETTE)]}"/><text x="{WIDTH - RIGHT + 28}" '
        f'y="{TOP + 16 * i + 9}" font-size="11">{escape(name[:22])}</text></g>'
        for i, name in enumerate(legend)
    ]
    return (
        f'<figure class="chart-figure"><figcaption>{escape(title)}</figcaption>'
        f'<svg class="chart" data-kind="{kind}" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg">' + "".join(body + items) + "</svg></figure>"
    )


def _axes(ymax: float, labels: Sequence[str]) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#888"/>',
    ]
    for i in range(5):
        v = ymax * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{_fmt(v)}</text>"
        )
    step = max(1, len(labels) // 6)
    for i in range(0, len(labels), step):
        x = LEFT + plot_w * (i + 0.5) / max(len(labels), 1)
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="10" '
            f'text-anchor="middle">{escape(labels[i])}</text>'
        )
    return out


def empty_chart(title: str, message: str = "no data in this window") -> str:
    """A placeholder with the same frame, so a reader sees the chart exists but is empty."""
    body = [
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="13" '
        f'fill="#666">{escape(message)}</text>'
    ]
    return _frame(title, "empty", body, [])


def line_chart(
    title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]]
) -> str:
    """One polyline per series over shared x labels (None: a gap)."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not labels or not values:
        return empty_chart(title)
    ymax = max(values) * 1.05 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    body = _axes(ymax, labels)
    for i, (name, vs) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = []
        for j, v in enumerate(vs):
            if v is None:
                continue
            x = LEFT + plot_w * (j + 0.5) / len(labels)
            y = TOP + plot_h - plot_h * v / ymax
            points.append(f"{x:.1f},{y:.1f}")
            body.append(
                f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)} {escape(labels[j])}: {_fmt(v)}</title></circle>"
            )
        if len(points) > 1:
            body.append(
                f'<polyline class="mark" fill="none" stroke="{colour}" stroke-width="2" '
                f'points="{" ".join(points)}"/>'
            )
    return _frame(title, "line", body, list(series))


def stacked_bars(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]]) -> str:
    """Stacked bars per x label, one colour per series."""
    totals = [sum(vs[j] for vs in series.values()) for j in range(len(labels))]
    if not labels or not any(totals):
        return empty_chart(title)
    ymax = max(totals) * 1.05
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bar_w = plot_w / len(labels) * 0.8
    body = _axes(ymax, labels)
    base = [0.0] * len(labels)
    for i, (name, vs) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        for j, v in enumerate(vs):
            if not v:
                continue
            h = plot_h * v / ymax
            x = LEFT + plot_w * j / len(labels) + (plot_w / len(labels) - bar_w) / 2
            y = TOP + plot_h - plot_h * base[j] / ymax - h
            base[j] += v
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)} '
                f"{escape(labels[j])}: {_fmt(v)}</title></rect>"
            )
    return _frame(title, "stacked-bars", body, list(series))


def bar_chart(title: str, values: Mapping[str, float]) -> str:
    """One bar per category."""
    if not values or not any(values.values()):
        return empty_chart(title, "none in this window")
    labels = list(values)
    return stacked_bars(title, labels, {"count": [values[k] for k in labels]}).replace(
        'data-kind="stacked-bars"', 'data-kind="bars"'
    )
