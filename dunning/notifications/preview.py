"""A stored notice as the customer reads (or would read) it: for the demo and support."""

from datetime import datetime

from django.core.mail import get_connection

from billing_events.models import Account
from dunning.models import CustomerNotice
from dunning.notifications.context import build_context
from dunning.notifications.delivery import email_for
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


def print_through_console(now: datetime, stream) -> int:
    """Every customer's notices through Django's console email backend (text part), each
    headed by its state: what the embedded demo shows. Returns how many were printed."""
    connection = get_connection("django.core.mail.backends.console.EmailBackend", stream=stream)
    rows = CustomerNotice.objects.select_related("account").order_by(
        "account__stripe_customer_id", "due_at", "pk"
    )
    printed = 0
    for notice in rows:
        when = notice.sent_at or notice.due_at
        head = (
            f"[{notice.account.stripe_customer_id} {notice.kind}: {notice.status}, {when:%Y-%m-%d}]"
        )
        try:
            rendered = render_stored(notice, now)
        except ValueError as error:
            stream.write(f"{head} cannot be written: {error}\n")
            continue
        # The header as read (a French subject is MIME-encoded in the message below).
        stream.write(f"{head} {rendered.subject}\n")
        recipient = notice.recipient or notice.account.email or "(no address)"
        email = email_for(notice, rendered, recipient)
        email.alternatives = []  # the text part is what a terminal shows
        connection.send_messages([email])
        printed += 1
    return printed
