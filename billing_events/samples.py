"""Stripe-shaped objects and events built from Stripe's own example objects.

The demo, the simulator, the benchmarks and the tests all start from the vendored
copies in `stripe_samples/` (Stripe's openapi fixtures, MIT) and set only the fields a
scenario needs, so payloads keep Stripe's real shape.
"""

import copy
import itertools
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from billing_events.signature import sign_header

SAMPLES_DIR = Path(__file__).resolve().parent / "stripe_samples"
_sequence = itertools.count(1)


@cache
def _text(name: str) -> str:
    return (SAMPLES_DIR / f"{name}.json").read_text()


def sample(name: str) -> dict:
    # Parsing the text is about three times faster than a deepcopy of the parsed object.
    return json.loads(_text(name))


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_sequence):014d}"


INVOICE_TRANSITION = {
    "open": None,
    "paid": "paid_at",
    "void": "voided_at",
    "uncollectible": "marked_uncollectible_at",
}


def invoice(
    *,
    id: str,
    customer: str,
    created: int,
    status: str = "open",
    amount_due: int = 2000,
    currency: str = "usd",
    billing_reason: str = "subscription_cycle",
    attempt_count: int = 0,
    subscription: str | None = None,
    paid_out_of_band: bool = False,
    status_at: int | None = None,
    next_payment_attempt: int | None = None,
    hosted_invoice_url: str | None = None,
    lines: Sequence[tuple[str, int, bool]] | None = None,
) -> dict:
    """`lines` are (price id, quantity, proration) in the newest API shape; without them
    the invoice keeps the example's single line, which names no price."""
    obj = sample("invoice")
    paid = status == "paid"
    obj.update(
        id=id,
        customer=customer,
        created=created,
        status=status,
        amount_due=amount_due,
        amount_paid=amount_due if paid else 0,
        amount_remaining=0 if paid or status == "void" else amount_due,
        total=amount_due,
        subtotal=amount_due,
        currency=currency,
        billing_reason=billing_reason,
        attempt_count=attempt_count,
        attempted=attempt_count > 0,
        paid_out_of_band=paid_out_of_band,
        next_payment_attempt=next_payment_attempt,
        collection_method="charge_automatically",
        hosted_invoice_url=hosted_invoice_url
        or (None if status == "draft" else f"https://invoice.stripe.com/i/acct_test/{id}"),
    )
    obj["parent"] = {
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": subscription},
        "type": "subscription_details",
    }
    transitions = {key: None for key in obj["status_transitions"]}
    transitions["finalized_at"] = created
    if field := INVOICE_TRANSITION.get(status):
        transitions[field] = status_at or created
    obj["status_transitions"] = transitions
    if lines is None:
        for line in obj["lines"]["data"]:
            line.update(amount=amount_due)
    else:
        example = obj["lines"]["data"][0]
        obj["lines"]["data"] = _invoice_lines(example, id, subscription, lines, amount_due)
    for line in obj["lines"]["data"]:
        line.update(invoice=id, currency=currency)
    return obj


def _invoice_lines(
    template: dict,
    invoice_id: str,
    subscription: str | None,
    lines: Sequence[tuple[str, int, bool]],
    amount_due: int,
) -> list[dict]:
    """A copy of the example's line (`template`) for each of `lines`."""
    result = []
    for index, (price, quantity, proration) in enumerate(lines):
        line = copy.deepcopy(template)
        share, rest = divmod(amount_due, len(lines))
        line.update(
            id=f"il_{invoice_id}_{index}",
            amount=share + (rest if index == 0 else 0),
            quantity=quantity,
            pricing={
                "price_details": {"price": price, "product": "prod_QXg1hqf4jFNsqG"},
                "type": "price_details",
                "unit_amount_decimal": None,
            },
            parent={
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": subscription,
                    "subscription_item": f"si_{price}",
                },
                "type": "subscription_item_details",
            },
        )
        result.append(line)
    return result


def charge(
    *,
    id: str,
    customer: str,
    created: int,
    invoice: str | None = None,
    status: str = "failed",
    amount: int = 2000,
    currency: str = "usd",
    decline_code: str | None = None,
    failure_code: str | None = None,
    advice_code: str | None = None,
    network_advice_code: str | None = None,
    network_decline_code: str | None = None,
    payment_method: str = "pm_card_visa",
    payment_intent: str | None = None,
    brand: str = "visa",
    authentication_flow: str | None = None,
) -> dict:
    """`authentication_flow` ("challenge", "frictionless") marks a 3-D Secure payment."""
    obj = sample("charge")
    failed = status == "failed"
    obj.update(
        id=id,
        customer=customer,
        created=created,
        status=status,
        paid=not failed,
        captured=not failed,
        amount=amount,
        amount_captured=0 if failed else amount,
        currency=currency,
        payment_method=payment_method,
        payment_intent=payment_intent,
        failure_code=(failure_code or "card_declined") if failed else None,
        failure_message="Your card was declined." if failed else None,
    )
    obj["invoice"] = invoice  # Stripe sends it on charges for invoice payments
    card = obj["payment_method_details"]["card"]
    card.update(brand=brand, network=brand)
    if authentication_flow is not None:
        card["three_d_secure"].update(
            authentication_flow=authentication_flow, result="authenticated", version="2.2.0"
        )
    obj["outcome"].update(
        type="issuer_declined" if failed else "authorized",
        network_status="declined_by_network" if failed else "approved_by_network",
        reason=decline_code if failed else None,
        advice_code=advice_code,
        network_advice_code=network_advice_code,
        network_decline_code=network_decline_code,
        seller_message="The bank did not return any further details with this decline."
        if failed
        else "Payment complete.",
    )
    return obj


def payment_intent_failed(
    *,
    id: str,
    customer: str,
    created: int,
    charge: str,
    invoice: str | None = None,
    amount: int = 2000,
    currency: str = "usd",
    decline_code: str = "generic_decline",
    advice_code: str | None = None,
    brand: str | None = None,
    payment_method: str | None = None,
) -> dict:
    """With `brand` or `payment_method`, the error carries the card that failed, as Stripe
    sends it on card errors; without, it names no payment method."""
    obj = sample("payment_intent")
    obj.update(
        id=id,
        customer=customer,
        created=created,
        amount=amount,
        currency=currency,
        status="requires_payment_method",
        latest_charge=charge,
        metadata={"invoice": invoice} if invoice else {},
    )
    obj["last_payment_error"] = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": decline_code,
        "advice_code": advice_code,
        "charge": charge,
        "message": "Your card was declined.",
    }
    if brand is not None or payment_method is not None:
        method = sample("payment_method")
        method.update(id=payment_method or "pm_card_visa", customer=customer)
        method["card"].update(brand=brand or "visa", display_brand=brand or "visa")
        obj["last_payment_error"]["payment_method"] = method
    return obj


def subscription(
    *,
    id: str,
    customer: str,
    created: int,
    status: str = "active",
    items: Sequence[tuple[str, int]] | None = None,
) -> dict:
    """`items` are (price id, quantity); without them the example's single item stays."""
    obj = sample("subscription")
    obj.update(id=id, customer=customer, created=created, status=status)
    if status == "canceled":
        obj.update(canceled_at=created, ended_at=created)
    if items is not None:
        obj["items"] = subscription_items(id, items)
    return obj


def subscription_items(subscription: str, items: Sequence[tuple[str, int]]) -> dict:
    """A subscription's `items` list object; also what `previous_attributes.items` holds."""
    template = sample("subscription")["items"]["data"][0]
    data = []
    for price, quantity in items:
        item = copy.deepcopy(template)
        item.update(id=f"si_{price}", quantity=quantity, subscription=subscription)
        item["price"]["id"] = price
        item["plan"]["id"] = price
        data.append(item)
    return {
        "data": data,
        "has_more": False,
        "object": "list",
        "url": f"/v1/subscription_items?subscription={subscription}",
    }


def customer(
    *,
    id: str,
    created: int,
    default_payment_method: str | None = None,
    email: str | None = None,
    preferred_locales: list[str] | None = None,
) -> dict:
    obj = sample("customer")
    obj.update(id=id, created=created, email=email or f"{id}@example.com")
    obj["invoice_settings"]["default_payment_method"] = default_payment_method
    if preferred_locales is not None:
        obj["preferred_locales"] = preferred_locales
    return obj


def payment_method(*, id: str, customer: str, created: int) -> dict:
    obj = sample("payment_method")
    obj.update(id=id, customer=customer, created=created)
    return obj


def event(
    type: str,
    obj: dict,
    *,
    created: int,
    id: str | None = None,
    previous_attributes: dict | None = None,
) -> dict:
    envelope = sample("event")
    envelope.update(id=id or new_id("evt"), type=type, created=created)
    envelope["data"] = {"object": obj}
    if previous_attributes is not None:
        envelope["data"]["previous_attributes"] = previous_attributes
    return envelope


def signed(event: dict, *, secret: str, timestamp: int) -> tuple[bytes, str]:
    payload = json.dumps(event, separators=(",", ":")).encode()
    return payload, sign_header(payload=payload, secret=secret, timestamp=timestamp)
