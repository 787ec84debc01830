"""What a message says: the plan's facts, the customer, and the one action to take."""

from datetime import datetime

from django.conf import settings

from billing_events.models import Account, Invoice
from dunning.models import CustomerNotice

Kind = CustomerNotice.Kind
# Declines only a new card (or the bank) fixes: the action is the payment method.
NEEDS_NEW_CARD = frozenset({"hard", "fraud"})


def build_context(kind: str, facts: dict, account: Account, now: datetime) -> dict:
    action, url = _action(kind, facts, account)
    context = {
        **facts,
        "email": account.email,
        "stripe_customer_id": account.stripe_customer_id,
        "action": action,
        "action_url": url,
        "upgrade": bool(facts.get("upgrade", False)),
    }
    if kind == Kind.CARD_EXPIRING:
        expires = datetime.fromisoformat(facts["expires_at"])
        context["days_left"] = max((expires - now).days, 0)
    if context.get("next_retry_at") and datetime.fromisoformat(context["next_retry_at"]) < now:
        context["next_retry_at"] = now.isoformat()  # due now: the retry runs today
    return context


def _action(kind: str, facts: dict, account: Account) -> tuple[str, str]:
    """Stripe's hosted invoice page where it helps (pay, authenticate on-session), the
    configured update-payment-method page where only a new card helps."""
    update_url = settings.DUNNING_UPDATE_PAYMENT_METHOD_URL.replace(
        "{stripe_customer_id}", account.stripe_customer_id
    )
    if kind == Kind.CARD_EXPIRING:
        return "update_payment_method", update_url
    if kind in (Kind.RECOVERED, Kind.BAD_DEBT_PAID):
        return "pay_invoice", ""  # good news: nothing left for the customer to do
    hosted = (
        Invoice.objects.filter(stripe_invoice_id=facts.get("invoice", ""))
        .values_list("hosted_invoice_url", flat=True)
        .first()
        or ""
    )
    decline_class = facts.get("decline_class", "")
    if decline_class == "auth_required":
        return "authenticate", hosted
    if decline_class in NEEDS_NEW_CARD:
        return "update_payment_method", update_url or hosted
    return "pay_invoice", hosted or update_url
