"""A stored notice as the customer reads (or would read) it: for the demo and support."""

from datetime import datetime

from billing_events.models import Account
from dunning.models import CustomerNotice
from dunning.notifications.context import build_context
from dunning.notifications.render import RenderedNotice, choose_language, render_notice


def render_stored(notice: CustomerNotice, now: datetime) -> RenderedNotice:
    """What went out, re-rendered from its context; for one not sent yet (waiting, or in
    shadow mode), the message as it would read from the facts planned."""
    context = notice.context
    language = notice.language
    if not context:
        account = Account.objects.get(pk=notice.account_id)
        # As it reads on its day, not today.
        context = build_context(notice.kind, notice.facts, account, max(now, notice.due_at))
        language = choose_language(account.preferred_locales)
    return render_notice(notice.kind, context, preferred_locales=[language])


def notice_lines(now: datetime) -> list[str]:
    """Every customer's notices, each with its state and the words it carries."""
    lines = []
    rows = CustomerNotice.objects.select_related("account").order_by(
        "account__stripe_customer_id", "due_at", "pk"
    )
    for notice in rows:
        when = notice.sent_at or notice.due_at
        lines.append(
            f"{notice.account.stripe_customer_id}  {notice.kind}  {notice.status} ({when:%Y-%m-%d})"
        )
        try:
            rendered = render_stored(notice, now)
        except ValueError as error:
            lines.append(f"    cannot be written: {error}")
            continue
        lines.append(f"    To: {notice.recipient or notice.account.email or '(no address)'}")
        lines.append(f"    Subject: {rendered.subject}")
        lines.extend(f"    {line}".rstrip() for line in rendered.text.splitlines())
    return lines
