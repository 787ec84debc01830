"""The embedded demo: a realistic batch of signed Stripe events through the real path.

Each customer follows a dunning story told in Stripe's own event shapes; the batch is
shuffled and partly re-delivered (Stripe retries, never in order), posted to the real
webhook endpoint with real signatures, and processed by the real worker code (in-process
on the embedded default, by Celery workers on a broker).
"""

import random
from collections import Counter
from dataclasses import dataclass

from django.test import Client

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription, WebhookEvent
from billing_events.samples import sign_header, signed
from billing_events.scenarios import StripeCustomer

DAY = 86400


def soft_decline_then_paid(cus: StripeCustomer) -> str:
    cus.charge_event("charge.failed", f"ch_{cus.id}_1", decline_code="insufficient_funds")
    cus.invoice_event("invoice.payment_failed", attempt_count=1)
    cus.tick(3 * DAY)
    cus.charge_event("charge.succeeded", f"ch_{cus.id}_2", status="succeeded")
    cus.invoice_event("invoice.paid", status="paid", attempt_count=2)
    return "insufficient funds, paid on the retry 3 days later"


def expired_card_then_new_card(cus: StripeCustomer) -> str:
    cus.charge_event("charge.failed", f"ch_{cus.id}_1", decline_code="expired_card")
    cus.invoice_event("invoice.payment_failed", attempt_count=1)
    cus.subscription_event("customer.subscription.updated", status="past_due")
    cus.tick(5 * DAY)
    cus.payment_method_event("payment_method.attached", f"pm_{cus.id}_new")
    cus.customer_updated(f"pm_{cus.id}_new")
    cus.tick(60)
    cus.charge_event("charge.succeeded", f"ch_{cus.id}_2", status="succeeded")
    cus.invoice_event("invoice.paid", status="paid", attempt_count=2)
    cus.subscription_event("customer.subscription.updated", status="active")
    return "expired card, new card after 5 days, paid"


def fraud_decline(cus: StripeCustomer) -> str:
    cus.payment_intent_failed(f"pi_{cus.id}", f"ch_{cus.id}_1", decline_code="fraudulent")
    cus.charge_event("charge.failed", f"ch_{cus.id}_1", decline_code="fraudulent")
    cus.invoice_event("invoice.payment_failed", attempt_count=1)
    return "fraudulent decline, still open"


def failed_upgrade(cus: StripeCustomer) -> str:
    cus.invoice_event("invoice.paid", status="paid")
    cus.tick(10 * DAY)
    cus.charge_event(
        "charge.failed",
        f"ch_{cus.id}_up",
        invoice_id=f"in_{cus.id}_up",
        decline_code="do_not_honor",
    )
    cus.invoice_event(
        "invoice.payment_failed",
        invoice_id=f"in_{cus.id}_up",
        billing_reason="subscription_update",
        amount_due=1200,
        attempt_count=1,
    )
    return "base plan paid, upgrade proration invoice failed"


def paid_out_of_band(cus: StripeCustomer) -> str:
    cus.invoice_event("invoice.payment_failed", attempt_count=1)
    cus.tick(2 * DAY)
    cus.invoice_event("invoice.paid", status="paid", attempt_count=1, paid_out_of_band=True)
    return "failed, then paid by bank transfer (out of band)"


def voided(cus: StripeCustomer) -> str:
    cus.invoice_event("invoice.payment_failed", attempt_count=1)
    cus.tick(DAY)
    cus.invoice_event("invoice.voided", status="void", attempt_count=1)
    return "failed, then voided by finance"


def written_off(cus: StripeCustomer) -> str:
    cus.charge_event("charge.failed", f"ch_{cus.id}_1", decline_code="generic_decline")
    cus.invoice_event("invoice.payment_failed", attempt_count=4)
    cus.tick(21 * DAY)
    cus.invoice_event("invoice.marked_uncollectible", status="uncollectible", attempt_count=4)
    cus.subscription_event("customer.subscription.deleted", status="canceled")
    return "retries exhausted, marked uncollectible, subscription cancelled"


def card_expiring(cus: StripeCustomer) -> str:
    cus.invoice_event("invoice.paid", status="paid")
    cus.source_expiring(card_id=f"card_{cus.id}")
    return "paying customer, card about to expire"


STORIES = (
    soft_decline_then_paid,
    expired_card_then_new_card,
    fraud_decline,
    failed_upgrade,
    paid_out_of_band,
    voided,
    written_off,
    card_expiring,
)


@dataclass(frozen=True)
class Expected:
    """The outcome a story must end with: the case's state and resolution ("no case" when
    none opened), and whether the service may charge the card again."""

    state: str
    resolution: str = ""
    may_charge: bool = True

    def describe(self) -> str:
        text = self.state + (f" ({self.resolution})" if self.resolution else "")
        return text if self.may_charge else f"{text}, never charged"


# Every event is delivered at once, 30 days after the story began (a late delivery): the
# expected outcomes hold whatever order the shuffled batch arrives in.
EXPECTED = {
    soft_decline_then_paid: Expected("resolved", "paid"),
    expired_card_then_new_card: Expected("resolved", "paid"),
    # The decline code may arrive after the invoice's failure: no charge before it does.
    fraud_decline: Expected("awaiting_customer_action", may_charge=False),
    # Retried on the soft schedule (the demo's gateway approves), never escalated.
    failed_upgrade: Expected("resolved", "paid"),
    paid_out_of_band: Expected("resolved", "paid_out_of_band", may_charge=False),
    voided: Expected("resolved", "voided", may_charge=False),
    written_off: Expected("resolved", "written_off", may_charge=False),
    card_expiring: Expected("no case", may_charge=False),
}


@dataclass
class DemoResult:
    responses: Counter
    event_statuses: Counter
    stories: dict[str, str]
    delivered: int
    expected: dict[str, Expected]


def build_batch(*, customers: int, seed: int, start: int) -> tuple[list[dict], dict[str, str]]:
    rng = random.Random(seed)
    events: list[dict] = []
    stories: dict[str, str] = {}
    expected: dict[str, Expected] = {}
    for n in range(customers):
        story = STORIES[n % len(STORIES)]
        cus = StripeCustomer(id=f"cus_demo{n:04d}", subscription=f"sub_demo{n:04d}", t=start)
        # Every fifth customer reads French (Stripe's preferred_locales).
        cus.customer_created(preferred_locales=["fr-FR", "en"] if n % 5 == 4 else ["en-US"])
        cus.subscription_event("customer.subscription.created")
        cus.invoice_event("invoice.finalized")
        cus.tick(60)
        stories[cus.id] = story(cus)
        expected[cus.id] = EXPECTED[story]
        events.extend(cus.events)
    redelivered = rng.sample(events, k=len(events) // 5)
    batch = events + redelivered
    rng.shuffle(batch)
    return batch, stories, expected


def run_demo(*, customers: int, seed: int, secret: str, now: int) -> DemoResult:
    batch, stories, expected = build_batch(customers=customers, seed=seed, start=now - 30 * DAY)
    client = Client()
    responses: Counter = Counter()

    def post(payload: bytes, header: str) -> int:
        return client.post(
            "/webhooks/stripe/",
            data=payload,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=header,
        ).status_code

    for event in batch:
        payload, header = signed(event, secret=secret, timestamp=now)
        responses[post(payload, header)] += 1
    # What an attacker or a misconfigured proxy sends: refused, nothing stored.
    forged, _ = signed(batch[0], secret=secret, timestamp=now)
    responses[post(forged, sign_header(payload=forged, secret="whsec_wrong", timestamp=now))] += 1
    responses[
        post(b"{not json", sign_header(payload=b"{not json", secret=secret, timestamp=now))
    ] += 1

    statuses = Counter(WebhookEvent.objects.values_list("status", flat=True))
    return DemoResult(responses, statuses, stories, delivered=len(batch), expected=expected)


def actual_outcome(stripe_customer_id: str) -> Expected:
    """What the service did with one demo customer, in the shape of `Expected`."""
    from dunning.models import DunningCase

    case = (
        DunningCase.objects.filter(account__stripe_customer_id=stripe_customer_id)
        .order_by("-pk")
        .first()
    )
    # The simulated gateway's own charges carry its made-up ids.
    charged = PaymentAttempt.objects.filter(
        account__stripe_customer_id=stripe_customer_id, attempt_key__startswith="ch_sim_"
    ).exists()
    if case is None:
        return Expected("no case", may_charge=charged)
    return Expected(case.state, case.resolution, may_charge=charged)


def outcome_matches(expected: Expected, actual: Expected) -> bool:
    """A story that may charge need not have; one that may not, must not have."""
    same_case = (expected.state, expected.resolution) == (actual.state, actual.resolution)
    return same_case and (expected.may_charge or not actual.may_charge)


def account_lines() -> list[str]:
    from dunning.models import DunningCase

    lines = []
    for account in Account.objects.order_by("stripe_customer_id"):
        case = DunningCase.objects.filter(account=account).order_by("-pk").first()
        restrictions = sorted(account.restrictions.values_list("code", flat=True))
        invoices = Invoice.objects.filter(account=account).order_by("stripe_invoice_id")
        attempts = PaymentAttempt.objects.filter(account=account).order_by("attempted_at")
        subscription = Subscription.objects.filter(account=account).first()
        lines.append(
            f"{account.stripe_customer_id}  sub={subscription.status if subscription else '-':9}"
            f"  invoices=["
            + ", ".join(
                f"{i.billing_reason}:{i.status}{' (out of band)' if i.paid_out_of_band else ''}"
                for i in invoices
            )
            + "]  declines=["
            + ", ".join(a.decline_code for a in attempts if a.outcome == "failed")
            + "]"
        )
        if case is None:
            lines.append("      dunning: no case")
        else:
            lines.append(
                f"      dunning: {case.state}"
                + (f" ({case.resolution})" if case.resolution else "")
                + f", level {case.level}"
                + (f", restricted: {', '.join(restrictions)}" if restrictions else "")
            )
            if case.last_decision:
                lines.append(f"      why: {case.last_decision.summary}")
    return lines
