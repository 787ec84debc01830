"""Turn a Stripe event into plain facts about Stripe objects (`billing_events.facts`), one
parser per handled event type. Pure: no database."""

from dataclasses import replace
from datetime import datetime
from typing import Any

from billing_events.facts import (
    INVOICE_STATUS_RANK,
    AttemptFact,
    CustomerFact,
    EventVersion,
    Fact,
    InvoiceFact,
    LinePrice,
    MalformedEvent,
    PaymentMethodFact,
    SubscriptionFact,
    SubscriptionItem,
    attempt_key,
    card_brand,
    int_field,
    item_quantity,
    object_id,
    require_field,
    str_field,
)
from core.clock import from_unix


def _line_proration(line: dict) -> bool:
    if line.get("proration") is not None:
        return bool(line["proration"])
    # Newer API versions moved it under the parent, keyed by the parent's type.
    parent = line.get("parent") or {}
    details = parent.get(str(parent.get("type") or "")) or {}
    return bool(details.get("proration"))


def parse_line_prices(obj: dict) -> tuple[LinePrice, ...]:
    """The priced lines of an invoice in Stripe's order. Lines without a price (one-off
    invoice items) say nothing about a plan and are left out."""
    lines = (obj.get("lines") or {}).get("data") or []
    result = []
    for line in lines:
        if not isinstance(line, dict):
            continue
        price_details = (line.get("pricing") or {}).get("price_details") or {}
        price = object_id(line.get("price")) or object_id(price_details.get("price"))
        if price:
            result.append(
                LinePrice(price, item_quantity(line.get("quantity")), _line_proration(line))
            )
    return tuple(result)


def parse_items(items: Any) -> tuple[SubscriptionItem, ...]:
    """A subscription's items, sorted so two events listing them differently compare equal."""
    data = (items.get("data") if isinstance(items, dict) else None) or []
    parsed = [
        SubscriptionItem(
            object_id(item.get("price") or item.get("plan")), item_quantity(item.get("quantity"))
        )
        for item in data
        if isinstance(item, dict) and (item.get("price") or item.get("plan"))
    ]
    return tuple(sorted(parsed, key=lambda item: (item.price, item.quantity)))


def is_upgrade(before: tuple[SubscriptionItem, ...], after: tuple[SubscriptionItem, ...]) -> bool:
    """An upgrade adds a price or raises a quantity. Prices carry no rank here, so a swap
    to another price counts as an upgrade too."""
    had = {item.price: item.quantity for item in before}
    return any(item.price not in had or item.quantity > had[item.price] for item in after)


def parse_invoice(obj: dict, version: EventVersion) -> InvoiceFact:
    transitions = obj.get("status_transitions") or {}
    parent = obj.get("parent") or {}
    subscription = obj.get("subscription") or (parent.get("subscription_details") or {}).get(
        "subscription"
    )
    status = str(require_field(obj, "status"))
    if status not in INVOICE_STATUS_RANK:
        raise MalformedEvent(f"unknown invoice status {status!r}")
    currency = str(require_field(obj, "currency")).lower()
    return InvoiceFact(
        version=version,
        stripe_invoice_id=object_id(require_field(obj, "id")),
        customer_id=object_id(require_field(obj, "customer")),
        subscription_id=object_id(subscription),
        status=status,
        amount_due=int_field(obj, "amount_due"),
        amount_paid=int_field(obj, "amount_paid"),
        amount_remaining=int_field(obj, "amount_remaining"),
        currency=currency,
        billing_reason=str_field(obj, "billing_reason"),
        attempt_count=int_field(obj, "attempt_count"),
        paid_out_of_band=bool(obj.get("paid_out_of_band")),
        created=from_unix(int_field(obj, "created")),
        finalized_at=from_unix(transitions.get("finalized_at")),
        paid_at=from_unix(transitions.get("paid_at")),
        voided_at=from_unix(transitions.get("voided_at")),
        marked_uncollectible_at=from_unix(transitions.get("marked_uncollectible_at")),
        next_payment_attempt=from_unix(obj.get("next_payment_attempt")),
        charge_id=object_id(obj.get("charge")),
        payment_intent_id=object_id(obj.get("payment_intent")),
        hosted_invoice_url=str_field(obj, "hosted_invoice_url"),
        line_prices=parse_line_prices(obj),
    )


def parse_charge(obj: dict, version: EventVersion) -> AttemptFact:
    outcome = obj.get("outcome") or {}
    card = (obj.get("payment_method_details") or {}).get("card") or {}
    three_d_secure = card.get("three_d_secure") or {}
    status = str_field(obj, "status")
    metadata = obj.get("metadata") or {}
    return AttemptFact(
        attempt_key=attempt_key(
            charge_id=object_id(require_field(obj, "id")),
            payment_intent_id=object_id(obj.get("payment_intent")),
        ),
        customer_id=object_id(require_field(obj, "customer")),
        invoice_id=object_id(obj.get("invoice")) or str(metadata.get("invoice") or ""),
        charge_id=object_id(obj.get("id")),
        payment_intent_id=object_id(obj.get("payment_intent")),
        payment_method=object_id(obj.get("payment_method")),
        outcome="succeeded" if status == "succeeded" else "failed",
        amount=int_field(obj, "amount"),
        currency=str(require_field(obj, "currency")).lower(),
        # Stripe puts the issuer's reason on outcome.reason as well as on failure_code.
        decline_code=str_field(obj, "decline_code")
        or (str_field(outcome, "reason") if status != "succeeded" else ""),
        failure_code=str_field(obj, "failure_code"),
        advice_code=str_field(outcome, "advice_code"),
        network_advice_code=str_field(outcome, "network_advice_code"),
        network_decline_code=str_field(outcome, "network_decline_code"),
        attempted_at=from_unix(int_field(obj, "created")) or version.created,
        card_brand=card_brand(card.get("brand")),
        # Stripe never challenges a cardholder who is not there (an off-session payment
        # fails with authentication_required instead), so a challenge proves the customer
        # was present. Nothing else on a charge or intent says so; absent, it stays False.
        customer_initiated=three_d_secure.get("authentication_flow") == "challenge",
    )


def parse_payment_intent(obj: dict, version: EventVersion) -> AttemptFact:
    error = obj.get("last_payment_error") or {}
    error_method = error.get("payment_method") or {}
    if not isinstance(error_method, dict):
        error_method = {"id": error_method}
    charge_id = object_id(error.get("charge")) or object_id(obj.get("latest_charge"))
    metadata = obj.get("metadata") or {}
    return AttemptFact(
        attempt_key=attempt_key(
            charge_id=charge_id, payment_intent_id=object_id(require_field(obj, "id"))
        ),
        customer_id=object_id(require_field(obj, "customer")),
        invoice_id=object_id(obj.get("invoice")) or str(metadata.get("invoice") or ""),
        charge_id=charge_id,
        payment_intent_id=object_id(obj.get("id")),
        payment_method=object_id(error_method.get("id")) or object_id(obj.get("payment_method")),
        outcome="failed",
        amount=int_field(obj, "amount"),
        currency=str(require_field(obj, "currency")).lower(),
        decline_code=str_field(error, "decline_code"),
        failure_code=str_field(error, "code"),
        advice_code=str_field(error, "advice_code"),
        network_advice_code=str_field(error, "network_advice_code"),
        network_decline_code=str_field(error, "network_decline_code"),
        attempted_at=version.created,
        card_brand=card_brand((error_method.get("card") or {}).get("brand")),
    )


def parse_subscription(
    obj: dict, version: EventVersion, previous: dict | None = None
) -> SubscriptionFact:
    items = parse_items(obj.get("items"))
    prices = tuple(item.price for item in items)
    before = None
    previous = previous or {}
    if isinstance(previous.get("items"), dict):
        earlier = parse_items(previous["items"])
        if is_upgrade(earlier, items):
            before = earlier
    return SubscriptionFact(
        version=version,
        stripe_subscription_id=object_id(require_field(obj, "id")),
        customer_id=object_id(require_field(obj, "customer")),
        status=str(require_field(obj, "status")),
        canceled_at=from_unix(obj.get("canceled_at") or obj.get("ended_at")),
        price_ids=prices,
        items=items,
        items_before_upgrade=before,
    )


PAYMENT_METHOD_KEYS = {"invoice_settings", "default_source", "default_payment_method"}


def parse_customer(obj: dict, version: EventVersion, previous: dict) -> CustomerFact:
    settings = obj.get("invoice_settings") or {}
    return CustomerFact(
        version=version,
        customer_id=object_id(require_field(obj, "id")),
        email=str_field(obj, "email"),
        default_payment_method=object_id(settings.get("default_payment_method"))
        or object_id(obj.get("default_source")),
        payment_method_changed=bool(PAYMENT_METHOD_KEYS & set(previous)),
        preferred_locales=tuple(
            str(locale)[:35] for locale in (obj.get("preferred_locales") or ())[:10]
        ),
    )


def parse_payment_method(obj: dict, version: EventVersion) -> PaymentMethodFact:
    return PaymentMethodFact(
        version=version,
        customer_id=object_id(require_field(obj, "customer")),
        payment_method_id=object_id(require_field(obj, "id")),
        card_expiring_at=None,
    )


CARD_DETAIL_KEYS = {"exp_month", "exp_year", "last4", "fingerprint", "number"}


def parse_payment_method_update(
    obj: dict, version: EventVersion, previous: dict
) -> PaymentMethodFact:
    """payment_method.updated: a card change only when its number or expiry changed."""
    card_before = previous.get("card")
    changed = isinstance(card_before, dict) and bool(CARD_DETAIL_KEYS & set(card_before))
    return replace(parse_payment_method(obj, version), changes_card=changed)


def parse_expiring_source(obj: dict, version: EventVersion) -> PaymentMethodFact:
    card = obj.get("card") if obj.get("object") == "payment_method" else obj
    card = card or {}
    month, year = card.get("exp_month"), card.get("exp_year")
    expires = None
    if isinstance(month, int) and isinstance(year, int) and 1 <= month <= 12:
        # A card is good through the last day of its expiry month.
        expires = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=version.created.tzinfo)
    return PaymentMethodFact(
        version=version,
        customer_id=object_id(require_field(obj, "customer")),
        payment_method_id=object_id(require_field(obj, "id")),
        card_expiring_at=expires,
    )


# The parser of each event type dunning acts on; each takes (object, version) and, for the
# types whose `previous_attributes` matter, those too. Which trigger a type becomes is
# dunning's business (`dunning/intake/triggers.py`).
PARSERS: dict[str, Any] = {
    "invoice.payment_failed": parse_invoice,
    "invoice.paid": parse_invoice,
    "invoice.payment_succeeded": parse_invoice,
    "invoice.marked_uncollectible": parse_invoice,
    "invoice.voided": parse_invoice,
    "invoice.finalized": parse_invoice,
    "invoice.updated": parse_invoice,
    "charge.failed": parse_charge,
    "charge.succeeded": parse_charge,
    "payment_intent.payment_failed": parse_payment_intent,
    "customer.subscription.created": parse_subscription,
    "customer.subscription.updated": parse_subscription,
    "customer.subscription.deleted": parse_subscription,
    # The customer's email and preferred_locales: who customer notices go to, in which
    # language (an account first seen through its invoices has neither).
    "customer.created": parse_customer,
    "customer.updated": parse_customer,
    "payment_method.attached": parse_payment_method,
    "payment_method.updated": parse_payment_method_update,
    "customer.source.expiring": parse_expiring_source,
}

HANDLED_EVENT_TYPES = frozenset(PARSERS)


def parse_event(event: dict) -> Fact:
    parse = PARSERS.get(event.get("type", ""))
    if parse is None:
        raise MalformedEvent(f"unhandled event type {event.get('type')!r}")
    data = event.get("data") or {}
    obj = data.get("object")
    if not isinstance(obj, dict):
        raise MalformedEvent("event has no data.object")
    version = EventVersion(created=from_unix(event["created"]), event_id=event["id"])
    if parse in (parse_customer, parse_subscription, parse_payment_method_update):
        fact = parse(obj, version, data.get("previous_attributes") or {})
    else:
        fact = parse(obj, version)
    if event["type"] == "invoice.payment_failed":
        fact = replace(fact, payment_failed_at=version.created)
    return fact
