"""A settled case's news (recovered, bad debt paid) is claimed from one small statement
(`dunning.notifications.settled_read`), not the account's snapshot: it decides exactly as
the full read does (generated accounts), and the recovered message of a paid retry goes
out without a snapshot read."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_events.gateway.results import succeeded
from billing_events.models import Account
from dunning import outbox, rollout
from dunning.models import CustomerNotice, OutboxItem
from dunning.notifications import sending
from tests.test_customer_notices import customer, fail, walk

pytestmark = pytest.mark.django_db
Kind, Status = CustomerNotice.Kind, CustomerNotice.Status
HOUR = timedelta(hours=1)


def test_a_paid_retrys_recovered_message_goes_out_without_a_snapshot_read(
    stripe_sender, test_clock, smtp, simulated_gateway
):
    cus = customer(stripe_sender, test_clock, "SettledClaim")
    fail(stripe_sender, cus)
    simulated_gateway.default = succeeded()  # the first retry pays
    with CaptureQueriesContext(connection) as captured:
        walk(test_clock, 2)
    recovered = CustomerNotice.objects.get(kind=Kind.RECOVERED)
    assert recovered.status == Status.SENT
    assert recovered.recipient == "cus_SettledClaim@example.com"
    sent = [message["Subject"] for message in smtp.inbox.messages]
    assert recovered.subject in sent
    claims = [q["sql"] for q in captured.captured_queries if "settled_notice_read" in q["sql"]]
    assert claims, "the recovered message was not claimed by the settled read"


def _notice(account, key: str, kind: str, status: str, due, claimed=None) -> CustomerNotice:
    return CustomerNotice.objects.create(
        account=account,
        key=key,
        kind=kind,
        status=status,
        channel=CustomerNotice.Channel.EMAIL,
        due_at=due,
        claimed_at=claimed,
        created_at=due - HOUR,
    )


OTHERS = st.lists(
    st.tuples(
        st.sampled_from(Kind.values),
        st.sampled_from(Status.values),
        st.integers(min_value=-80 * 24, max_value=48),  # due, hours from now
        st.one_of(st.none(), st.integers(min_value=-80 * 24, max_value=0)),  # claimed
    ),
    max_size=5,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(sorted(sending.SETTLED_KINDS)),
    status=st.sampled_from([Status.SCHEDULED, Status.SENDING, Status.SENT]),
    others=OTHERS,
    stage=st.sampled_from(["off", "5", "100"]),
    kill_switch=st.booleans(),
    allowlisted=st.booleans(),
)
def test_the_settled_read_decides_as_the_snapshot_does(
    test_clock, kind, status, others, stage, kill_switch, allowlisted
):
    now = test_clock
    with transaction.atomic():
        rollout.set_gate(
            stage=stage,
            kill_switch=kill_switch,
            allowlist=["cus_settled_parity"] if allowlisted else [],
            actor="test",
            reason="parity",
        )
        account = Account.objects.create(
            stripe_customer_id="cus_settled_parity", email="parity@example.com"
        )
        notice = _notice(account, f"{kind}:in_1", kind, status, now - HOUR)
        for index, (other_kind, other_status, due, claimed) in enumerate(others):
            claimed_at = now + timedelta(hours=claimed) if claimed is not None else None
            _notice(
                account,
                f"other:{index}",
                other_kind,
                other_status,
                now + timedelta(hours=due),
                claimed_at,
            )
        light = sending._read(notice.pk, account.pk, kind, now)
        full = sending._read(notice.pk, account.pk, "", now)
        assert light.snapshot is None and full.snapshot is not None  # the two paths were taken
        assert light.notice.pk == full.notice.pk == notice.pk
        assert light.account.email == full.account.email
        assert light.enforced == full.enforced
        assert sending._must_wait(notice, None, light.notices, now) == sending._must_wait(
            notice, None, full.notices, now
        )
        transaction.set_rollback(True)


def test_an_item_naming_a_settled_kind_for_another_message_takes_the_full_read(test_clock):
    account = Account.objects.create(stripe_customer_id="cus_mismatch", email="m@example.com")
    notice = _notice(
        account, "payment_failed:in_1", Kind.PAYMENT_FAILED, Status.SCHEDULED, test_clock
    )
    with transaction.atomic():
        read = sending._read(notice.pk, account.pk, Kind.RECOVERED, test_clock)
    assert read.snapshot is not None  # the plan check is not skipped for a reminder


def test_an_unknown_account_or_message_is_dropped(test_clock):
    account = Account.objects.create(stripe_customer_id="cus_nothing", email="n@example.com")
    assert (
        sending.claim(999_999, account_id=account.pk, kind=Kind.RECOVERED).verdict == sending.DROP
    )
    assert sending.claim(1, account_id=999_999, kind=Kind.RECOVERED).verdict == sending.DROP
    assert not OutboxItem.objects.exists() and outbox.drain() == 0
