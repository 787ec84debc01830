"""The report's charts as inline SVG (no script, no external file)."""

from html import escape

LEVEL_COLOURS = {
    "notice": "#c6dbef",
    "upgrade_restricted": "#6baed6",
    "premium_restricted": "#fdae6b",
    "read_only": "#e6550d",
    "suspended": "#a50f15",
}
LEGACY_COLOURS = {
    "retrying": "#c6dbef",
    "bad_debt": "#a50f15",
}
LEGACY_GREY, SERVICE_BLUE = "#969696", "#2171b5"
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 240, 48, 36, 12


def _svg_open(width: int = WIDTH, height: int = HEIGHT, label: str = "") -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
    )


def nice_max(value: float) -> float:
    if value <= 0:
        return 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step * 5:
            return step * 5 if value > step * 4 else step * 4 if value > step * 3 else step * 3
    return value


def _axes(ymax: float, height: int, width: int) -> list[str]:
    bottom = height - PAD_BOTTOM
    parts = [
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{bottom}" stroke="#999"/>',
        f'<line x1="{PAD_LEFT}" y1="{bottom}" x2="{width - 8}" y2="{bottom}" stroke="#999"/>',
    ]
    for tick in range(5):
        value = ymax * tick / 4
        y = bottom - (bottom - PAD_TOP) * tick / 4
        parts.append(
            f'<line x1="{PAD_LEFT - 3}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" '
            f'stroke="#eee"/><text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{value:g}</text>'
        )
    return parts


def recovery_chart(legacy: dict, service: dict) -> str:
    """Grouped bars: recovered invoices per days-to-recovery bucket, legacy vs service."""
    buckets = [label for label, _ in legacy["days_to_recovery_histogram"]]
    values = [
        (old, new)
        for (_, old), (_, new) in zip(
            legacy["days_to_recovery_histogram"], service["days_to_recovery_histogram"], strict=True
        )
    ]
    ymax = nice_max(max((max(pair) for pair in values), default=0))
    bottom, plot = HEIGHT - PAD_BOTTOM, HEIGHT - PAD_BOTTOM - PAD_TOP
    group = (WIDTH - PAD_LEFT - 16) / max(len(buckets), 1)
    bar = group * 0.36
    parts = [_svg_open(label="days to recovery"), *_axes(ymax, HEIGHT, WIDTH)]
    for index, (bucket, (old, new)) in enumerate(zip(buckets, values, strict=True)):
        x = PAD_LEFT + 8 + index * group
        for offset, (count, colour, who) in enumerate(
            ((old, LEGACY_GREY, "legacy"), (new, SERVICE_BLUE, "this service"))
        ):
            h = plot * count / ymax
            parts.append(
                f'<rect x="{x + offset * bar:.1f}" y="{bottom - h:.1f}" width="{bar - 1:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{who}, {bucket} days: {count}'
                "</title></rect>"
            )
        parts.append(
            f'<text x="{x + bar:.1f}" y="{bottom + 14}" text-anchor="middle">{bucket}</text>'
        )
    parts.append(
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">'
        "days from the first failed charge to the money</text></svg>"
    )
    return "".join(parts)


def stacked_days_chart(series: dict[str, list[int]], colours: dict[str, str], ymax: float) -> str:
    """Stacked bars, one per day: accounts in each state."""
    days = len(next(iter(series.values()), []))
    bottom, plot = HEIGHT - PAD_BOTTOM, HEIGHT - PAD_BOTTOM - PAD_TOP
    step = (WIDTH - PAD_LEFT - 16) / max(days, 1)
    parts = [_svg_open(label="accounts by state per day"), *_axes(ymax, HEIGHT, WIDTH)]
    for day in range(days):
        x, height_so_far = PAD_LEFT + 4 + day * step, 0.0
        for name, colour in colours.items():
            count = series.get(name, [0] * days)[day]
            if not count:
                continue
            h = plot * count / ymax
            parts.append(
                f'<rect x="{x:.1f}" y="{bottom - height_so_far - h:.1f}" '
                f'width="{max(step - 0.6, 0.6):.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>day {day + 1}, {name}: {count}</title></rect>"
            )
            height_so_far += h
    for day in range(0, days + 1, max(days // 6, 1)):
        x = PAD_LEFT + 4 + day * step
        parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{day}</text>')
    parts.append(
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">day of the run</text>'
        "</svg>"
    )
    return "".join(parts)


def legend(colours: dict[str, str]) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{colour}"></i>{escape(name.replace("_", " "))}</span>'
            for name, colour in colours.items()
        )
        + "</div>"
    )
