"""Stories for the snapshot readers' tests: each step a few Stripe events (or a support
action) at the project clock's time, and generated stories made of any few of them."""

from datetime import timedelta

from hypothesis import strategies as st

from core import clock
from dunning import support
from dunning import test_clock as clock_service
from dunning.models import OPEN_STATES, DunningCase
from tests.dunning_helpers import account_of, on_stripe_clock
from tests.events import Customer, deliver

DAY = 86400


def send(sender, cus: Customer, *builders) -> None:
    events = []
    for build in builders:
        on_stripe_clock(cus)
        events.append(build(cus))
    deliver(sender, *events)


def fails(sender, cus: Customer, code: str = "insufficient_funds", **invoice) -> None:
    send(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}_{c.t}", decline_code=code),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1, **invoice),
    )


def second_invoice_fails(sender, cus: Customer) -> None:
    second = f"{cus.invoice_id}_2"
    send(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}_2", invoice_id=second),
        lambda c: c.invoice_event("invoice.payment_failed", invoice_id=second, attempt_count=1),
    )


def pays(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.invoice_event("invoice.paid", status="paid", attempt_count=2))


def fails_without_a_code(sender, cus: Customer) -> None:
    # No charge event: the engine has to ask Stripe for the decline code.
    send(sender, cus, lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1))


def upgrade_fails(sender, cus: Customer) -> None:
    send(
        sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.paid", invoice_id=f"in_{c.id}_base", status="paid", attempt_count=1
        ),
        lambda c: c.charge_event(
            "charge.failed",
            f"ch_{c.id}_up",
            invoice_id=f"in_{c.id}_up",
            decline_code="do_not_honor",
        ),
        lambda c: c.invoice_event(
            "invoice.payment_failed",
            invoice_id=f"in_{c.id}_up",
            billing_reason="subscription_update",
            attempt_count=1,
        ),
    )


def written_off(sender, cus: Customer) -> None:
    send(
        sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible", status="uncollectible", attempt_count=2
        ),
    )


def cancelled(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.subscription_event("customer.subscription.deleted", "canceled"))


def paused(sender, cus: Customer, days: int = 10) -> None:
    support.pause_dunning(
        account_id=account_of(cus).pk,
        until=clock.now() + timedelta(days=days),
        reason="promised to pay",
        actor="agent",
    )


def card_expiring(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.source_expiring(exp_month=12, exp_year=2026))


def new_card(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.customer_updated(default_payment_method=f"pm_{c.t}"))


def signs_up(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.customer_created(email=f"{c.id}@example.com"))


# Every step a generated story may take, by name.
STEPS = {
    "soft": fails,
    "hard": lambda s, c: fails(s, c, "expired_card"),
    "generic": lambda s, c: fails(s, c, "generic_decline", amount_due=300),
    "no_code": fails_without_a_code,
    "pays": pays,
    "upgrade": upgrade_fails,
    "written_off": written_off,
    "cancelled": cancelled,
    "card_expiring": card_expiring,
    "new_card": new_card,
    "signs_up": signs_up,
}


def story_steps(*, days: list[int]):
    """Any few steps, in any order, on either of two customers, the clock walking by one of
    `days` (in days) between them."""
    step = st.one_of(
        st.tuples(st.sampled_from(sorted(STEPS)), st.integers(0, 1)),
        st.tuples(st.just("pause"), st.integers(0, 1)),
        st.tuples(st.just("days"), st.sampled_from(days)),
    )
    return st.lists(step, min_size=1, max_size=6)


def play_story(sender, tag: str, steps) -> list[int]:
    """Two customers sign up, then the steps run (a pause only where a case is open); their
    account ids."""
    customers = [Customer(id=f"cus_{tag}x{k}", subscription=f"sub_{tag}x{k}") for k in (0, 1)]
    for cus in customers:
        signs_up(sender, cus)
    for name, arg in steps:
        if name == "days":
            clock_service.advance(seconds=arg * DAY)
        elif name == "pause":
            cus = customers[arg]
            if DunningCase.objects.filter(
                account__stripe_customer_id=cus.id, state__in=OPEN_STATES
            ).exists():
                paused(sender, cus)
        else:
            STEPS[name](sender, customers[arg])
    return [account_of(cus).pk for cus in customers]
