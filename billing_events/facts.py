"""The plain facts dunning reads about Stripe objects, and the defensive readers of an
object's fields that the parsers (`billing_events.normalize`) share. Pure: no database.

Field access is defensive because Stripe's shapes vary by API version (an id may come
expanded, the invoice's subscription moved under `parent` in newer versions).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class MalformedEvent(ValueError):
    """The event cannot be understood; processing it again will not help."""


class NoCustomer(MalformedEvent):
    """A well-formed event about no customer (a one-off guest charge): nothing to dun."""


def object_id(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def attempt_key(*, charge_id: str, payment_intent_id: str) -> str:
    """One row per charge: the charge id when known, else the payment intent's, so the
    charge and payment intent events (and a lookup) about one charge meet on one row."""
    return charge_id or payment_intent_id


@dataclass(frozen=True)
class EventVersion:
    """Orders facts about one object by Stripe's clock, not by arrival."""

    created: datetime
    event_id: str


@dataclass(frozen=True)
class LinePrice:
    """One invoice line reduced to what it bills: a price, a quantity, and whether it is
    a proration (so an upgrade invoice says which prices it was for)."""

    price: str
    quantity: int
    proration: bool

    def as_json(self) -> dict:
        return {"price": self.price, "quantity": self.quantity, "proration": self.proration}


@dataclass(frozen=True)
class SubscriptionItem:
    price: str
    quantity: int

    def as_json(self) -> dict:
        return {"price": self.price, "quantity": self.quantity}


@dataclass(frozen=True)
class InvoiceFact:
    version: EventVersion
    stripe_invoice_id: str
    customer_id: str
    subscription_id: str
    status: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    currency: str
    billing_reason: str
    attempt_count: int
    paid_out_of_band: bool
    created: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    marked_uncollectible_at: datetime | None
    next_payment_attempt: datetime | None
    charge_id: str
    payment_intent_id: str
    payment_failed_at: datetime | None = None
    hosted_invoice_url: str = ""
    line_prices: tuple[LinePrice, ...] = ()


@dataclass(frozen=True)
class AttemptFact:
    attempt_key: str
    customer_id: str
    invoice_id: str
    charge_id: str
    payment_intent_id: str
    payment_method: str
    outcome: str
    amount: int
    currency: str
    decline_code: str
    failure_code: str
    advice_code: str
    network_advice_code: str
    network_decline_code: str
    attempted_at: datetime
    card_brand: str = ""
    customer_initiated: bool = False


@dataclass(frozen=True)
class SubscriptionFact:
    version: EventVersion
    stripe_subscription_id: str
    customer_id: str
    status: str
    canceled_at: datetime | None
    price_ids: tuple[str, ...]
    items: tuple[SubscriptionItem, ...] = ()
    # Set only on an update that was an upgrade: the items as they were before it.
    items_before_upgrade: tuple[SubscriptionItem, ...] | None = None


@dataclass(frozen=True)
class CustomerFact:
    version: EventVersion
    customer_id: str
    email: str
    default_payment_method: str
    payment_method_changed: bool
    # Stripe's `preferred_locales`, most preferred first: the language of customer notices.
    preferred_locales: tuple[str, ...] = ()


@dataclass(frozen=True)
class PaymentMethodFact:
    version: EventVersion
    customer_id: str
    payment_method_id: str
    card_expiring_at: datetime | None
    # A new payment method, or new card details (number, expiry) on the same one: a reason
    # to retry at once. A billing-address or metadata update is not.
    changes_card: bool = True


Fact = InvoiceFact | AttemptFact | SubscriptionFact | CustomerFact | PaymentMethodFact


def require_field(obj: dict, key: str) -> Any:
    if key == "customer" and not obj.get(key):
        raise NoCustomer("data.object has no customer")
    if key not in obj or obj[key] is None:
        raise MalformedEvent(f"data.object has no {key}")
    return obj[key]


def int_field(obj: dict, key: str, default: int = 0) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent(f"data.object.{key} is not an integer")
    return value


def str_field(obj: dict, key: str) -> str:
    value = obj.get(key)
    return "" if value is None else str(value)


def item_quantity(value: Any) -> int:
    # Metered prices carry no quantity; zero keeps them comparable with licensed ones.
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value


# Older objects (Card, Source) name networks in title case; payment methods use these ids.
LEGACY_CARD_BRANDS = {
    "american express": "amex",
    "diners club": "diners",
    "eftpos australia": "eftpos_au",
    "unknown": "",
}


def card_brand(value: Any) -> str:
    """Stripe's card network id, lowercase ("visa", "mastercard", "amex"); "" when unknown,
    so a source that knows the brand can still fill it in."""
    brand = str(value or "").strip().lower()
    return LEGACY_CARD_BRANDS.get(brand, brand)


INVOICE_STATUS_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 4}
