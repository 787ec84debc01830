"""Sentry: Django and Celery errors reach a (capturing) transport with no card data or
secrets in them, but still with what is needed to debug (exception type, safe fields)."""

import io
import json
import logging
import os
import subprocess
import sys
from wsgiref.util import setup_testing_defaults

import pytest
import sentry_sdk
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from sentry_sdk.transport import Transport

from config.celery import app as celery_app
from config.logging import KV_FORMAT, JsonFormatter, RedactingFilter, celery_after_setup_logger
from config.sentry import before_breadcrumb, init_sentry, scrub, scrub_text

# The secrets, kept away from the code that raises (source context is sent with frames).
PAN = "4242424242424242"
PAN_SPACED = "4000 0566 5566 5556"
PAN_DASHED = "5555-5555-5555-4444"
AMEX = "378282246310005"
CVC = "8317"
FINGERPRINT = "Xq9fZpFingerprintValue"
SECRET_KEY = "sk_live_51HsecretKEYvalue0000"
TEST_KEY = "sk_test_51HtestKEYvalue1111"
RESTRICTED_KEY = "rk_live_restrictedKEY2222"
WEBHOOK_SECRET = "whsec_signingSECRET3333"
SIGNATURE = "t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
BEARER = "opaqueBearerTokenValue4444"
COOKIE = "cookieSessionValue5555"

SECRETS = [
    PAN,
    PAN_SPACED,
    PAN_DASHED,
    AMEX,
    f"cvc {CVC}",
    f'"{CVC}"',
    f"'{CVC}'",
    FINGERPRINT,
    SECRET_KEY,
    TEST_KEY,
    RESTRICTED_KEY,
    WEBHOOK_SECRET,
    "5257a869e7ecebeda32a",
    BEARER,
    COOKIE,
    # Fragments, in case a secret was cut rather than masked.
    "424242424242",
    "KEYvalue",
    "signingSECRET",
]

CARD_BODY = {
    "amount": 4900,
    "description": "safe-description-marker",
    "card": {"number": PAN, "cvc": CVC, "exp_month": 11, "exp_year": 2031},
    "payment_method_details": {"type": "card", "fingerprint": FINGERPRINT},
    "note": f"customer typed {PAN_SPACED} and {PAN_DASHED} in the memo",
}


class CardChargeBoom(Exception):
    pass


class CapturingTransport(Transport):
    """Keeps every envelope in memory instead of sending it."""

    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    def items(self, item_type: str) -> list[dict]:
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == item_type and item.payload.json is not None
        ]

    def text(self) -> str:
        return "".join(
            envelope.serialize().decode("utf-8", "replace") for envelope in self.envelopes
        )


@pytest.fixture
def captured():
    """Sentry on, with a capturing transport; off again afterwards."""
    init_sentry(
        dsn="https://public@sentry.example/1",
        transport=CapturingTransport,
        traces_sample_rate=1.0,
        enable_logs=True,
        max_request_body_size="always",
    )
    client = sentry_sdk.get_client()
    transport = client.transport
    assert isinstance(transport, CapturingTransport)
    try:
        yield transport
    finally:
        client.close()
        sentry_sdk.get_global_scope().set_client(None)
        sentry_sdk.get_isolation_scope().clear()
        sentry_sdk.get_current_scope().clear()
    assert not sentry_sdk.get_client().is_active()


def assert_clean(transport: CapturingTransport) -> str:
    sentry_sdk.flush()
    text = transport.text()
    assert text
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} reached Sentry"
    # The same with JSON escaping undone (a secret inside an embedded JSON string).
    unescaped = text.replace('\\"', '"').replace("\\\\", "\\")
    for secret in SECRETS:
        assert secret not in unescaped, f"{secret!r} reached Sentry"
    return text


# --- a Django view that fails with card data everywhere -------------------------------------


@csrf_exempt  # like the webhook endpoint
def charge_view(request: HttpRequest) -> HttpResponse:
    payload = json.loads(request.body)
    card_number = payload["card"]["number"]  # a local variable holding a PAN
    stripe_key = settings_like_secret()
    sentry_sdk.set_extra("payment", {"card": payload["card"], "amount": payload["amount"]})
    sentry_sdk.set_context("charge", {"api_key": stripe_key, "memo": payload["note"]})
    sentry_sdk.add_breadcrumb(
        category="stripe", message=f"calling Stripe with {card_number}", data=payload["card"]
    )
    logging.getLogger("tests.sentry").error("charging card %s with key %s", card_number, stripe_key)
    raise CardChargeBoom(f"charge of card {card_number} failed with key {stripe_key}")


def settings_like_secret() -> str:
    return SECRET_KEY


urlpatterns = [path("charge/", charge_view)]


CHARGE_QUERY = f"card_number={AMEX}&key={TEST_KEY}&safe=query-marker"
CHARGE_HEADERS = {
    "HTTP_AUTHORIZATION": f"Bearer {BEARER}",
    "HTTP_STRIPE_SIGNATURE": SIGNATURE,
    "HTTP_COOKIE": f"sessionid={COOKIE}; theme=dark",
    "HTTP_X_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "HTTP_X_NOTE": f"restricted key {RESTRICTED_KEY} in a header",
}


def post_with_test_client() -> int:
    client = Client(raise_request_exception=False)
    body = json.dumps(CARD_BODY)
    response = client.post(
        f"/charge/?{CHARGE_QUERY}", data=body, content_type="application/json", **CHARGE_HEADERS
    )
    return response.status_code


def post_through_wsgi() -> int:
    """The production path (gunicorn calls Django's WSGIHandler, which Sentry wraps to
    record the URL, query string and headers; the test client skips that layer)."""
    body = json.dumps(CARD_BODY).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/charge/",
        "QUERY_STRING": CHARGE_QUERY,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **CHARGE_HEADERS,
    }
    setup_testing_defaults(environ)
    environ["SERVER_NAME"] = environ["HTTP_HOST"] = "testserver"
    statuses = []
    # As Django's test client does: no database connection handling around the request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        response = WSGIHandler()(
            environ, lambda status, headers, exc_info=None: statuses.append(status)
        )
        response.close()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return int(statuses[0].split()[0])


@pytest.mark.urls("tests.test_sentry")
@pytest.mark.parametrize("post", [post_with_test_client, post_through_wsgi])
def test_a_django_error_reaches_sentry_without_card_data_or_secrets(captured, post):
    assert post() == 500

    text = assert_clean(captured)
    errors = [event for event in captured.items("event") if "exception" in event]
    (event,) = errors
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "CardChargeBoom"
    assert "[Filtered]" in exception["value"]
    # What is safe to keep is kept: the body's other fields, the query's other parameters.
    request = event["request"]
    assert request["data"]["description"] == "safe-description-marker"
    assert request["data"]["card"] == "[Filtered]"
    assert request["data"]["payment_method_details"]["fingerprint"] == "[Filtered]"
    frame_vars = [frame.get("vars", {}) for frame in exception["stacktrace"]["frames"]]
    assert any(variables.get("card_number") == "[Filtered]" for variables in frame_vars)
    assert event["extra"]["payment"]["amount"] == 4900
    assert event["extra"]["payment"]["card"] == "[Filtered]"
    assert "[Filtered]" in event["contexts"]["charge"]["memo"]
    assert any(
        "calling Stripe" in crumb.get("message", "") for crumb in event["breadcrumbs"]["values"]
    )
    # The logged error and the log record were scrubbed too.
    logged = [event["logentry"] for event in captured.items("event") if "logentry" in event]
    assert any("charging card" in json.dumps(entry) for entry in logged)
    assert "charging card [Filtered]" in text
    if post is post_through_wsgi:
        (transaction,) = captured.items("transaction")
        assert "card_number=[Filtered]" in transaction["request"]["query_string"]
        assert "safe=query-marker" in request["query_string"]
        assert "card_number=[Filtered]" in request["query_string"]
        headers = request["headers"]
        assert headers["Stripe-Signature"] == "[Filtered]"
        assert headers["X-Webhook-Secret"] == "[Filtered]"
        assert "Cookie" not in headers or headers["Cookie"] == "[Filtered]"


# --- a Celery task that fails with a card number in its arguments ----------------------------


@celery_app.task(name="tests.test_sentry.charge_card")
def charge_card(card_number: str, cvc: str, api_key: str) -> None:
    fingerprint = FINGERPRINT  # noqa: F841 - a local holding a fingerprint
    pan_as_a_number = int(card_number)  # noqa: F841 - and one holding a PAN as a number
    raise CardChargeBoom(f"card {card_number} (cvc {cvc}) declined with {api_key}")


def test_a_celery_task_error_reaches_sentry_without_card_data_or_secrets(captured):
    # A bare CVC among positional arguments is indistinguishable from any number; by name
    # (kwargs, locals, JSON, key=value) it is masked.
    result = charge_card.apply(args=(PAN,), kwargs={"cvc": CVC, "api_key": SECRET_KEY})
    assert result.failed()

    assert_clean(captured)
    events = captured.items("event")
    assert [event["exception"]["values"][-1]["type"] for event in events] == ["CardChargeBoom"]
    (event,) = events
    assert event["extra"]["celery-job"]["task_name"] == "tests.test_sentry.charge_card"
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    task_vars = next(frame["vars"] for frame in frames if frame["function"] == "charge_card")
    assert task_vars["card_number"] == "[Filtered]"
    assert task_vars["fingerprint"] == "[Filtered]"
    assert task_vars["pan_as_a_number"] == "[Filtered]"


def test_sentry_is_off_after_the_capturing_tests():
    assert not sentry_sdk.get_client().is_active()


# --- the scrubber itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"card {PAN} declined", "declined"),
        (f"memo {PAN_SPACED} / {PAN_DASHED}", "memo"),
        (f"amex {AMEX}!", "amex"),
        (f"key={SECRET_KEY}&x=1", "x=1"),
        (f"Authorization: Bearer {BEARER}", "Authorization"),
        (f"restricted {RESTRICTED_KEY}, test {TEST_KEY}", "restricted"),
        (f"secret {WEBHOOK_SECRET}", "secret"),
        (f'{{"cvc": "{CVC}", "fingerprint": "{FINGERPRINT}", "ok": 1}}', '"ok": 1'),
        (f"card[number]={PAN}&card[cvc]=123&amount=4900", "amount=4900"),
        ("cvc 123 exp 12/31 fine", "fine"),
    ],
)
def test_scrub_text_masks_card_data_and_keys(text, kept):
    scrubbed = scrub_text(text)
    for secret in [*SECRETS, "123", "12/31"]:
        assert secret not in scrubbed
    assert kept in scrubbed


def test_scrub_keeps_what_is_not_sensitive():
    assert scrub_text("attempt_number=3 decline_code=card_declined amount=4900") == (
        "attempt_number=3 decline_code=card_declined amount=4900"
    )
    assert scrub(
        {
            "trace_id": "771a43a4192642f0b136d5159a501700",
            "customer": "cus_123",
            "exp_month": 11,
            "nested": [{"last4": "4242", "brand": "visa"}],
        }
    ) == {
        "trace_id": "771a43a4192642f0b136d5159a501700",
        "customer": "cus_123",
        "exp_month": "[Filtered]",
        "nested": [{"last4": "[Filtered]", "brand": "visa"}],
    }


def test_before_breadcrumb_scrubs_message_and_data():
    crumb = before_breadcrumb(
        {"message": f"POST with {PAN}", "data": {"card_number": PAN, "url": f"/x?key={TEST_KEY}"}},
        {},
    )
    assert PAN not in json.dumps(crumb)
    assert TEST_KEY not in json.dumps(crumb)
    assert crumb["data"]["card_number"] == "[Filtered]"


# --- logs: the same scrubber on the console handler, key=value or JSON lines -----------------


def log_record(message, *args, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.getLogger("dunning.test").makeRecord(
        "dunning.test", logging.WARNING, __file__, 1, message, args, exc_info, extra=extra
    )
    return record


def test_the_redacting_filter_masks_message_arguments_extra_and_traceback():
    try:
        raise CardChargeBoom(f"declined {PAN}")
    except CardChargeBoom:
        exc_info = sys.exc_info()
    record = log_record(
        "event=charge card=%s key=%s amount=%s",
        PAN_SPACED,
        SECRET_KEY,
        4900,
        exc_info=exc_info,
        stripe_event="evt_123",
        card_fingerprint=FINGERPRINT,
        memo=f"typed {AMEX}",
    )

    assert RedactingFilter().filter(record) is True
    line = logging.Formatter(KV_FORMAT).format(record)

    for secret in SECRETS:
        assert secret not in line
    assert "event=charge card=[Filtered] key=[Filtered] amount=4900" in line
    assert "CardChargeBoom: declined [Filtered]" in line
    assert record.stripe_event == "evt_123"
    assert record.card_fingerprint == "[Filtered]"
    assert record.memo == "typed [Filtered]"


def test_json_lines_carry_time_level_logger_message_and_extra():
    try:
        raise CardChargeBoom("boom")
    except CardChargeBoom:
        exc_info = sys.exc_info()
    record = log_record(
        "event=%s attempts=%d", "webhook_processed", 2, exc_info=exc_info, stripe_event="evt_9"
    )
    record.not_json = object()

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "dunning.test"
    assert entry["message"] == "event=webhook_processed attempts=2"
    assert entry["stripe_event"] == "evt_9"
    assert entry["time"].endswith("+00:00")
    assert "CardChargeBoom: boom" in entry["exc_info"]
    assert entry["not_json"].startswith("<object object")


@pytest.mark.parametrize("log_format", ["kv", "json"])
def test_the_configured_console_handler_masks_card_data(log_format):
    """The settings' LOGGING, applied by django.setup() in a fresh process."""
    code = (
        "import logging, django; django.setup(); "
        "logging.getLogger('dunning.charge').warning("
        f"'charging %s with %s', {PAN!r}, {SECRET_KEY!r}, extra={{'invoice': 'in_1'}})"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_FORMAT": log_format,
        "SENTRY_DSN": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert PAN not in line
    assert SECRET_KEY not in line
    if log_format == "json":
        entry = json.loads(line)
        assert entry["message"] == "charging [Filtered] with [Filtered]"
        assert entry["invoice"] == "in_1"
        assert entry["logger"] == "dunning.charge"
    else:
        assert line.startswith("ts=")
        assert "level=WARNING logger=dunning.charge charging [Filtered] with [Filtered]" in line


def test_celery_worker_handlers_get_the_filter_and_format(settings):
    settings.LOG_FORMAT = "json"
    root = logging.Logger("celery-root-stand-in")
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)

    celery_after_setup_logger(logger=root)
    celery_after_setup_logger(logger=root)  # idempotent
    root.warning("card %s", PAN)

    assert [type(f) for f in handler.filters] == [RedactingFilter]
    assert json.loads(handler.stream.getvalue())["message"] == "card [Filtered]"
