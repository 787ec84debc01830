"""Bad-debt aggregates for finance and support: entries and exits per day by reason,
who is in bad debt now, and how long stays last."""

import statistics
from collections import defaultdict
from datetime import datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncDate

from dunning.models import BadDebtEpisode


def _per_day(rows, key: str) -> list[dict]:
    days: dict = defaultdict(dict)
    for row in rows:
        days[row["day"]][row[key]] = row["n"]
    return [{"day": day.isoformat(), "by_reason": days[day]} for day in sorted(days)]


def bad_debt_metrics(*, now: datetime, days: int) -> dict:
    since = now - timedelta(days=days)
    entries = (
        BadDebtEpisode.objects.filter(entered_at__gte=since)
        .annotate(day=TruncDate("entered_at"))
        .values("day", "reason")
        .annotate(n=Count("pk"))
    )
    exits = (
        BadDebtEpisode.objects.filter(exited_at__gte=since)
        .annotate(day=TruncDate("exited_at"))
        .values("day", "exit_reason")
        .annotate(n=Count("pk"))
    )
    current = dict(
        BadDebtEpisode.objects.filter(exited_at__isnull=True)
        .values_list("reason")
        .annotate(n=Count("pk"))
        .values_list("reason", "n")
    )
    stays = [
        (exited - entered).total_seconds() / 86400
        for entered, exited in BadDebtEpisode.objects.filter(exited_at__gte=since).values_list(
            "entered_at", "exited_at"
        )
    ]
    return {
        "window_days": days,
        "entries_per_day": _per_day(entries, "reason"),
        "exits_per_day": _per_day(exits, "exit_reason"),
        "in_bad_debt_now": sum(current.values()),
        "in_bad_debt_now_by_reason": current,
        "median_days_in_bad_debt": round(statistics.median(stays), 2) if stays else None,
        "exits_in_window": len(stays),
    }
