"""Validly signed but hostile webhook bodies: a 4xx with the reason and nothing stored, or
a 2xx for an event that processing then handles. Never a 5xx, never an event that is
accepted and then fails until it is dead."""

import json
import time

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import event as outcome
from hypothesis import strategies as st

from billing_events import samples
from billing_events.models import WebhookEvent
from billing_events.normalize import HANDLED_EVENT_TYPES
from billing_events.validation import Rejected, envelope_problem, loads_strict, nesting_exceeds
from dunning.intake.processing import process_event
from tests.conftest import SECRET
from tests.events import Customer

pytestmark = pytest.mark.django_db

NOW = int(time.time())


def signed_post(client, payload: bytes, content_type: str = "application/json"):
    header = samples.sign_header(payload=payload, secret=SECRET, timestamp=int(time.time()))
    return client.post(
        "/webhooks/stripe/",
        data=payload,
        content_type=content_type,
        HTTP_STRIPE_SIGNATURE=header,
    )


def failed_invoice() -> dict:
    cus = Customer(id="cus_hostile", t=NOW)
    return cus.invoice_event("invoice.payment_failed", attempt_count=1)


def failed_charge() -> dict:
    cus = Customer(id="cus_hostile", t=NOW)
    return cus.charge_event("charge.failed", "ch_hostile", decline_code="insufficient_funds")


def dumps(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


# --- pure rules on plain values ---------------------------------------------------------
@pytest.mark.parametrize(
    "value, deeper_than_4",
    [
        ({}, False),
        ("[[[[[[[[", False),  # brackets in strings do not nest
        ({"a": [{"b": [1]}]}, False),
        ({"a": [{"b": [{}]}]}, True),
        ([[[[[]]]]], True),
        ([[], [], [], [], [], [], []], False),  # many containers, shallow
        ([1, [2, [3, [4]]], {"x": {"y": {"z": {"w": {}}}}}], True),  # the deep one is last
    ],
)
def test_nesting_depth_counts_containers_only(value, deeper_than_4):
    assert nesting_exceeds(value, 4) is deeper_than_4


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"a": NaN}', "NaN is not a number"),
        (b'{"a": -Infinity}', "-Infinity is not a number"),
        (b'{"a": 1e999}', "number out of range"),
        (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
        ('{"a": 1}'.encode("utf-16"), "not valid UTF-8"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b"[" * 70 + b"]" * 70, "nests deeper than 64 levels"),
        (b"[" * 100_000, "nests deeper than 64 levels"),
        (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),  # over int's digit limit
        (b'{"a": 1', "not valid JSON"),
    ],
)
def test_strict_json_refuses_with_a_reason(raw, reason):
    with pytest.raises(Rejected, match=reason):
        loads_strict(raw)


def test_strict_json_keeps_the_text_it_parsed():
    assert loads_strict('{"name": "Zoë", "n": 1.5}'.encode()) == (
        '{"name": "Zoë", "n": 1.5}',
        {"name": "Zoë", "n": 1.5},
    )


@pytest.mark.parametrize("raw", [b"[" * 64 + b"]" * 64, b"[" + b",".join([b"[[]]"] * 100) + b"]"])
def test_deep_enough_and_many_containers_are_fine(raw):
    assert loads_strict(raw)[1] is not None


def envelope(**fields) -> dict:
    return {"id": "evt_1", "type": "invoice.paid", "created": NOW, "data": {"object": {}}} | fields


@pytest.mark.parametrize(
    "event, reason",
    [
        (envelope(), None),
        (envelope(id="evt_" + "x" * 251), None),
        (envelope(id="evt_" + "x" * 252), "event id is longer than 255"),
        (envelope(id="evt_\x00"), "event id contains NUL"),
        (envelope(id="evt_\ud800"), "unpaired surrogate"),
        (envelope(type="t" * 100), None),
        (envelope(type="t" * 101), "event type is longer than 100"),
        (envelope(type="invoice.paid\x00"), "event type contains NUL"),
        (envelope(created=253402300800), "between 2000 and 2100"),  # year 10000
        (envelope(created=10**20), "between 2000 and 2100"),
        (envelope(created=1e9), "positive unix timestamp"),
        (envelope(created=True), "positive unix timestamp"),
        (envelope(created=946684799), "between 2000 and 2100"),
        (envelope(created=946684800), None),
    ],
)
def test_envelope_fields_must_fit_their_columns(event, reason):
    problem = envelope_problem(event)
    if reason is None:
        assert problem is None
    else:
        assert reason in problem


# --- the cases through the real endpoint ---------------------------------------
def with_object(event: dict, **fields) -> dict:
    event["data"]["object"].update(fields)
    return event


def nested(depth: int) -> bytes:
    """An invoice event whose metadata nests `depth` objects deep (json.dumps cannot)."""
    body = dumps(with_object(failed_invoice(), metadata="DEEP"))
    return body.replace(b'"DEEP"', b'{"x":' * depth + b"{}" + b"}" * depth)


HOSTILE_BODIES = {
    "nested deeper than the recursion limit": (nested(5000), "nests deeper"),
    "nested deeper than 64": (nested(70), "nests deeper"),
    "utf-16": (json.dumps(failed_invoice()).encode("utf-16"), "not valid UTF-8"),
    "utf-8 with a BOM": (b"\xef\xbb\xbf" + dumps(failed_invoice()), "byte order mark"),
    "NaN literal": (
        dumps(failed_invoice()).replace(b'"amount_due":2000', b'"amount_due":NaN'),
        "NaN",
    ),
    "event id over 255": (dumps(failed_invoice() | {"id": "evt_" + "1" * 300}), "event id"),
    "event id with NUL": (dumps(failed_invoice() | {"id": "evt_1\x00"}), "event id contains NUL"),
    "type over 100": (dumps(failed_invoice() | {"type": "x" * 101}), "event type is longer"),
    "created in the year 10000": (dumps(failed_invoice() | {"created": 253402300800}), "2100"),
    "created 1e20": (dumps(failed_invoice() | {"created": 10**20}), "2100"),
    "NUL in the customer id": (
        dumps(with_object(failed_invoice(), customer="cus_\x00")),
        "customer id contains NUL",
    ),
    "customer id over 255": (
        dumps(with_object(failed_invoice(), customer="cus_" + "c" * 300)),
        "customer id is longer than 255",
    ),
    "charge id over 255": (
        dumps(with_object(failed_charge(), id="ch_" + "c" * 300)),
        "attempt key is longer than 255",
    ),
    "invoice timestamps far in the future": (
        dumps(with_object(failed_invoice(), next_payment_attempt=10**20)),
        "malformed invoice.payment_failed",
    ),
    "status transitions not an object": (
        dumps(with_object(failed_invoice(), status_transitions=[1])),
        "wrong type",
    ),
    "currency not a currency": (
        dumps(with_object(failed_invoice(), currency="us1")),
        "three-letter currency",
    ),
    "amount beyond bigint": (
        dumps(with_object(failed_invoice(), amount_due=2**63)),
        "amount due is out of range",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_BODIES)
def test_hostile_signed_body_gets_400_with_the_reason_and_nothing_stored(client, case):
    payload, reason = HOSTILE_BODIES[case]

    response = signed_post(client, payload)

    assert response.status_code == 400, response.content
    assert reason in response.json()["error"]
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    "content_type, reason",
    [
        ("text/plain", "content type must be application/json"),
        ("application/x-www-form-urlencoded", "content type must be application/json"),
        ("application/json; charset=utf-16", "content type charset must be utf-8"),
    ],
)
def test_a_body_that_is_not_json_by_its_content_type_gets_415(client, content_type, reason):
    response = signed_post(client, dumps(failed_invoice()), content_type=content_type)

    assert response.status_code == 415
    assert response.json()["error"] == reason
    assert WebhookEvent.objects.count() == 0


def test_stripe_s_own_content_type_with_charset_is_accepted(client):
    response = signed_post(client, dumps(failed_invoice()), "application/json; charset=utf-8")

    assert response.status_code == 200


def test_non_ascii_text_and_brackets_in_strings_are_fine(client):
    event = with_object(failed_invoice(), description="Zoë's [[[[ {{{{ plan ]]", currency="EUR")

    response = signed_post(client, json.dumps(event, ensure_ascii=False).encode())

    assert response.status_code == 200, response.content
    stored = WebhookEvent.objects.get()
    assert process_event(event_id=stored.pk) == "processed"


# --- generated: valid envelopes with hostile fields -------------------------------------
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**20, 253402300800, 1_764_000_000]),
    st.floats(),  # NaN and infinities become JSON's non-standard literals
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Lu", "Nd"]), max_size=8),
    st.sampled_from(
        ["", "\x00", "cus_\x00", "\ud800", "x" * 65, "x" * 256, "İİ", "usd", "open", "paid"]
    ),
)
hostile = st.recursive(
    leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)

# Fields each parser reads (and a few it does not), top level and nested.
FIELDS = {
    "invoice": [
        "id",
        "customer",
        "status",
        "currency",
        "amount_due",
        "amount_paid",
        "amount_remaining",
        "billing_reason",
        "attempt_count",
        "paid_out_of_band",
        "created",
        "next_payment_attempt",
        "charge",
        "payment_intent",
        "subscription",
        "parent",
        "status_transitions",
        "lines",
        ("status_transitions", "paid_at"),
        ("parent", "subscription_details"),
        ("parent", "subscription_details", "subscription"),
    ],
    "charge": [
        "id",
        "customer",
        "status",
        "amount",
        "currency",
        "invoice",
        "metadata",
        "payment_intent",
        "payment_method",
        "decline_code",
        "failure_code",
        "created",
        "outcome",
        ("outcome", "reason"),
        ("outcome", "advice_code"),
        ("outcome", "network_advice_code"),
        ("outcome", "network_decline_code"),
        ("metadata", "invoice"),
    ],
    "payment_intent": [
        "id",
        "customer",
        "amount",
        "currency",
        "latest_charge",
        "invoice",
        "metadata",
        "last_payment_error",
        "payment_method",
        ("last_payment_error", "charge"),
        ("last_payment_error", "payment_method"),
        ("last_payment_error", "decline_code"),
        ("last_payment_error", "code"),
        ("metadata", "invoice"),
    ],
    "subscription": [
        "id",
        "customer",
        "status",
        "canceled_at",
        "ended_at",
        "items",
        ("items", "data"),
    ],
    "customer": [
        "id",
        "email",
        "default_source",
        "invoice_settings",
        ("invoice_settings", "default_payment_method"),
    ],
    "payment_method": ["id", "customer", "card", "object", "exp_month", "exp_year"],
}
ENVELOPE_FIELDS = ["id", "type", "created", "livemode", "data", ("data", "previous_attributes")]


def base_event(kind: str, type: str) -> dict:
    cus = Customer(id="cus_gen", t=NOW)
    match kind:
        case "invoice":
            return cus.invoice_event(type, status="open", attempt_count=1)
        case "charge":
            return cus.charge_event(type, "ch_gen", decline_code="insufficient_funds")
        case "payment_intent":
            return cus.payment_intent_failed("pi_gen", "ch_gen")
        case "subscription":
            return cus.subscription_event(type)
        case "customer":
            return cus.customer_updated("pm_gen")
        case _:
            if type == "customer.source.expiring":
                return cus.source_expiring(exp_year=2030)
            return cus.payment_method_event(type, "pm_gen")


def kind_of(type: str) -> str:
    for prefix, kind in (
        ("invoice.", "invoice"),
        ("charge.", "charge"),
        ("payment_intent.", "payment_intent"),
        ("customer.subscription.", "subscription"),
        ("customer.updated", "customer"),
    ):
        if type.startswith(prefix):
            return kind
    return "payment_method"


def put(target: dict, path: str | tuple, value) -> None:
    *parents, last = (path,) if isinstance(path, str) else path
    for name in parents:
        if not isinstance(target.get(name), dict):
            target[name] = {}
        target = target[name]
    target[last] = value


@st.composite
def hostile_events(draw) -> tuple[dict, bool]:
    type = draw(st.sampled_from(sorted(HANDLED_EVENT_TYPES)))
    kind = kind_of(type)
    event = base_event(kind, type)
    event["id"] = samples.new_id("evt")
    for path in draw(st.lists(st.sampled_from(FIELDS[kind]), min_size=1, max_size=3)):
        put(event["data"]["object"], path, draw(hostile))
    if draw(st.integers(0, 4)) == 0:
        put(event, draw(st.sampled_from(ENVELOPE_FIELDS)), draw(hostile))
    return event, draw(st.booleans())


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(generated=hostile_events())
def test_generated_hostile_events_never_5xx_and_what_is_accepted_is_processed(client, generated):
    event, ascii_only = generated
    payload = json.dumps(event, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    with transaction.atomic():
        response = signed_post(client, payload)

        assert response.status_code < 500, response.content
        if response.status_code != 200:
            assert "error" in response.json()
            assert WebhookEvent.objects.count() == 0
            outcome(f"{response.status_code}")
        else:
            stored = WebhookEvent.objects.get()
            if stored.status == WebhookEvent.Status.RECEIVED:
                process_event(event_id=stored.pk)
                stored.refresh_from_db()
            assert stored.status in ("processed", "ignored"), stored.last_error
            outcome(f"200 {stored.status}")
        transaction.set_rollback(True)
