"""Legacy verdicts (manage.py import_legacy_flags) and the shadow report's day-one view."""

import pytest
from django.core.management import CommandError, call_command

from billing_events.scenarios import StripeCustomer
from dunning import rollout
from dunning import test_clock as clock_service
from dunning.legacy import LegacyFileError, parse_rows
from dunning.models import LegacyVerdict
from tests.dunning_helpers import account_of, deliver_now

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"customer_id": "cus_a", "bad_debt": "1", "banned": "0", "since": "2025-03-01"},
            {"bad_debt": True, "banned": False, "since": "2025-03-01T00:00:00+00:00"},
        ),
        (
            {"customer_id": " cus_b ", "bad_debt": "no", "banned": "TRUE", "since": ""},
            {"bad_debt": False, "banned": True, "since": None},
        ),
    ],
)
def test_rows_parse_flags_and_dates_as_utc(row, expected):
    [verdict] = parse_rows([row])
    since = verdict["since"].isoformat() if verdict["since"] else None
    assert {"bad_debt": verdict["bad_debt"], "banned": verdict["banned"], "since": since} == (
        expected
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"customer_id": "42", "bad_debt": "1", "banned": "0", "since": ""}, "not a Stripe id"),
        ({"customer_id": "cus_a", "bad_debt": "maybe", "banned": "0", "since": ""}, "bad_debt"),
        ({"customer_id": "cus_a", "bad_debt": "1", "banned": "0", "since": "soon"}, "ISO date"),
    ],
)
def test_bad_rows_are_refused_with_their_line(row, message):
    with pytest.raises(LegacyFileError, match=f"line 2: .*{message}"):
        parse_rows([row])


def write(tmp_path, text: str) -> str:
    path = tmp_path / "legacy.csv"
    path.write_text(text)
    return str(path)


def test_the_command_stores_all_or_nothing_and_a_rerun_changes_nothing(tmp_path, capsys):
    good = write(tmp_path, "customer_id,bad_debt,banned,since\ncus_a,1,0,2025-03-01\ncus_b,0,1,\n")
    call_command("import_legacy_flags", good)
    call_command("import_legacy_flags", good)
    out = capsys.readouterr().out
    assert "created=2 updated=0 unchanged=0" in out and "created=0 updated=0 unchanged=2" in out
    assert LegacyVerdict.objects.get(stripe_customer_id="cus_b").banned

    bad = write(tmp_path, "customer_id,bad_debt,banned,since\ncus_c,1,0,\ncus_d,perhaps,0,\n")
    with pytest.raises(CommandError, match="line 3"):
        call_command("import_legacy_flags", bad)
    assert not LegacyVerdict.objects.filter(stripe_customer_id="cus_c").exists()
    with pytest.raises(CommandError, match="missing columns: banned"):
        call_command("import_legacy_flags", write(tmp_path, "customer_id,bad_debt,since\n"))


def in_bad_debt(sender, cus: StripeCustomer) -> None:
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code="do_not_honor"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    clock_service.advance(seconds=2 * 86400)
    deliver_now(
        sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible", status="uncollectible", attempt_count=2
        ),
    )


def test_day_one_lists_both_disagreements_with_the_engines_explanation(
    support_reader, stripe_sender, test_clock, tmp_path
):
    rollout.set_gate(stage="off", kill_switch=False, allowlist=[], actor="ops", reason="go-live")
    engine_only = StripeCustomer(id="cus_engineonly", subscription="sub_e")
    both = StripeCustomer(id="cus_both", subscription="sub_b")
    in_bad_debt(stripe_sender, engine_only)
    in_bad_debt(stripe_sender, both)
    call_command(
        "import_legacy_flags",
        write(
            tmp_path,
            "customer_id,bad_debt,banned,since\n"
            "cus_both,1,0,2026-10-01\ncus_legacyonly,1,1,2026-06-01\ncus_clean,0,0,\n",
        ),
    )

    body = support_reader.get("/api/v1/rollout/day-one/").json()

    assert (body["legacy_bad_debt"], body["engine_bad_debt"], body["agree"]) == (2, 2, 1)
    [legacy_only] = body["legacy_only"]
    assert legacy_only["stripe_customer_id"] == "cus_legacyonly"
    assert legacy_only["legacy"]["banned"] is True
    assert legacy_only["engine"]["bad_debt"] is False
    assert legacy_only["engine"]["summary"] == "no failed payment in the mirror"
    [only_engine] = body["engine_only"]
    assert only_engine["stripe_customer_id"] == "cus_engineonly"
    assert only_engine["account_id"] == account_of(engine_only).pk
    assert only_engine["engine"]["state"] == "escalated"
    assert only_engine["engine"]["summary"] and only_engine["engine"]["explanation"]
    assert only_engine["legacy"] == {"bad_debt": False, "banned": False, "since": None}
