"""Customer notices read right: every kind in both languages, safe HTML, plain words."""

import gettext
import re
from pathlib import Path

import pytest
from django.utils import translation

from billing_events import samples
from dunning.notifications.money import format_amount
from dunning.notifications.render import choose_language, render_notice

CUSTOMER = samples.sample("customer")
INVOICE = samples.sample("invoice")
HOSTED_INVOICE_URL = "https://invoice.stripe.com/i/acct_1Nv0FGQ9RKHgCVdK/test_YWNjdF8xTnYw"
COMMON = {
    "email": "jenny.rosen@example.com",
    "stripe_customer_id": CUSTOMER["id"],
    "action_url": HOSTED_INVOICE_URL,
    "action": "pay_invoice",
    "upgrade": False,
}
OWED = {"amount": INVOICE["amount_due"], "currency": INVOICE["currency"]}
DAY = "2026-12-12T09:00:00+00:00"


def example(name: str, kind: str, french: str, **extra):
    """A notice to render: its kind, its context beyond COMMON, a phrase only French has."""
    return pytest.param(kind, extra, french, id=name)


# fmt: off
EXAMPLES = [
    example("soft", "payment_failed", "Nous réessaierons le 12 décembre",
            decline_class="soft", next_retry_at=DAY, **OWED),
    example("soft_no_retry", "payment_failed", "pour que le paiement puisse",
            decline_class="soft", next_retry_at=None, **OWED),
    example("hard", "payment_failed", "ne réessaierons pas la même carte",
            decline_class="hard", next_retry_at=None, **OWED),
    example("fraud", "payment_failed", "Votre banque a refusé",
            decline_class="fraud", next_retry_at=None, **OWED),
    example("auth", "payment_failed", "Votre banque vous demande de confirmer",
            decline_class="auth_required", next_retry_at=None, **OWED, action="authenticate"),
    example("expiring", "card_expiring", "expire fin novembre 2026, dans 14 jours",
            expires_at="2026-12-01T00:00:00+00:00", days_left=14, action="update_payment_method"),
    example("premium", "step_ahead", "mises en pause le 12 décembre",
            level="premium_restricted", takes_effect_at=DAY, **OWED),
    example("read_only", "step_ahead", "lecture seule",
            level="read_only", takes_effect_at=DAY, **OWED),
    example("suspended", "step_ahead", "Votre accès sera suspendu",
            level="suspended", takes_effect_at=DAY, **OWED),
    example("upgrade_restricted", "step_ahead", "Les fonctionnalités de votre mise à niveau",
            level="upgrade_restricted", takes_effect_at=DAY, **OWED, upgrade=True),
    example("upgrade_reverted", "step_ahead", "votre formule reviendra",
            level="upgrade_reverted", takes_effect_at=DAY, **OWED, upgrade=True),
    example("upgrade_failed", "payment_failed", "pour votre mise à niveau",
            decline_class="soft", next_retry_at=DAY, **OWED, upgrade=True),
    example("final", "final_notice", "sera résilié le 12 décembre 2026", cancels_at=DAY, **OWED),
    example("recovered", "recovered", "nous avons bien reçu votre paiement", **OWED),
    example("upgrade_recovered", "recovered", "mise à niveau est active", **OWED, upgrade=True),
    example("bad_debt_paid", "bad_debt_paid", "solde impayé est réglé", **OWED),
]
# fmt: on
CONTEXT = {param.id: param.values[1] for param in EXAMPLES}
SETTLED = {"recovered", "bad_debt_paid"}
LANGUAGES = {"en": ["en-US"], "fr": ["fr-FR", "en"]}


def render(kind, extra, language="en", **overrides):
    return render_notice(kind, {**COMMON, **extra, **overrides},
                         preferred_locales=LANGUAGES[language])  # fmt: skip


def words(notice) -> str:
    return f"{notice.subject}\n{notice.text}\n{notice.html}".lower()


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize(("kind", "extra", "french"), EXAMPLES)
def test_every_notice_renders_in_both_languages(kind, extra, french, language):
    notice = render(kind, extra, language)

    assert notice.language == language
    assert notice.subject and "\n" not in notice.subject and "\r" not in notice.subject
    assert notice.text.strip() and "{%" not in notice.text and "{{" not in notice.text
    assert notice.html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{language}">' in notice.html
    assert "<style" not in notice.html and "<link" not in notice.html  # inline styles only
    assert COMMON["stripe_customer_id"] in notice.text


@pytest.mark.parametrize(("kind", "extra", "french"), EXAMPLES)
def test_french_notices_are_written_in_french(kind, extra, french):
    notice = render(kind, extra, "fr")

    assert french in notice.text and french in notice.html
    assert notice.text.startswith("Bonjour,")
    assert "Hello" not in notice.text and " the " not in words(notice)


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize(("kind", "extra", "french"), EXAMPLES)
def test_the_action_link_ends_the_message(kind, extra, french, language):
    notice = render(kind, extra, language)

    last_paragraph = notice.text.rstrip().split("\n\n")[-2]  # the footer comes after it
    assert last_paragraph.endswith(HOSTED_INVOICE_URL)
    assert f'href="{HOSTED_INVOICE_URL}"' in notice.html


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize(("kind", "extra", "french"), EXAMPLES)
def test_without_a_link_the_customer_is_told_to_log_in(kind, extra, french, language):
    notice = render(kind, extra, language, action_url="")

    assert "href" not in notice.html
    assert "http" not in notice.text
    log_in = {"en": "Log in to your account", "fr": "Connectez-vous à votre compte"}[language]
    # A settled account has nothing left to do.
    assert (log_in in notice.text) is (kind not in SETTLED)


@pytest.mark.parametrize("language", ["en", "fr"])
def test_a_fraud_decline_never_says_fraud(language):
    for action_url in (HOSTED_INVOICE_URL, ""):
        text = words(render("payment_failed", CONTEXT["fraud"], language, action_url=action_url))

        assert not re.search(r"fraud|stolen|vol[ée]e|lost|perdue", text)
        assert "another card" in text or "une autre carte" in text


@pytest.mark.parametrize("language", ["en", "fr"])
def test_a_failed_upgrade_speaks_of_the_upgrade_only(language):
    notices = [render(kind, extra, language) for kind, extra, _ in (p.values for p in EXAMPLES)
               if extra.get("upgrade")]  # fmt: skip
    for decline_class in ("hard", "fraud", "auth_required"):
        notices.append(render("payment_failed", CONTEXT["upgrade_failed"], language,
                              decline_class=decline_class))  # fmt: skip

    for notice in notices:
        text = words(notice)
        assert not re.search(r"cancel|suspen|terminat|résili|annul|read-only|lecture seule", text)
        assert "upgrade" in text or "mise à niveau" in text


def test_what_each_decline_class_asks_of_the_customer():
    soft = render("payment_failed", CONTEXT["soft"]).text
    soft_no_retry = render("payment_failed", CONTEXT["soft_no_retry"]).text
    hard = render("payment_failed", CONTEXT["hard"]).text
    auth = render("payment_failed", CONTEXT["auth"])

    assert "We will try again on 12 December 2026" in soft and "sooner" in soft
    assert "try again on" not in soft_no_retry
    assert "new card" in hard and "We will not try the same card again" in hard
    assert auth.subject == "Please confirm your payment of USD 10.00"
    assert "Nothing is wrong with your card" in auth.text
    assert auth.text.rstrip().split("\n\n")[-2].startswith("Confirm the payment\n")


@pytest.mark.parametrize(
    ("amount", "currency", "english", "french"),
    [
        (1234, "eur", "EUR 12.34", "12,34\xa0EUR"),
        (123456789, "usd", "USD 1,234,567.89", "1\xa0234\xa0567,89\xa0USD"),
        (5, "usd", "USD 0.05", "0,05\xa0USD"),
        (1200, "jpy", "JPY 1,200", "1\xa0200\xa0JPY"),
        (5120, "kwd", "KWD 5.120", "5,120\xa0KWD"),  # Stripe counts KWD in thousandths
    ],
)
def test_amounts_in_the_currency_exponent_and_the_language_conventions(
    amount, currency, english, french
):
    with translation.override("en"):
        assert format_amount(amount, currency) == english
    with translation.override("fr"):
        assert format_amount(amount, currency) == french
    assert english in render("recovered", {"amount": amount, "currency": currency}).subject


def test_days_are_the_utc_day_in_the_customer_language():
    late_in_new_york = "2026-12-12T21:30:00-05:00"  # already 13 December in UTC
    extra = {**CONTEXT["premium"], "takes_effect_at": late_in_new_york}

    assert render("step_ahead", extra).subject == "Premium features pause on 13 December 2026"
    assert "13 décembre 2026" in render("step_ahead", extra, "fr").subject
    expiring = render("card_expiring", {**CONTEXT["expiring"], "days_left": 1})
    assert expiring.subject == "Your card expires at the end of November 2026"
    assert "in 1 day." in expiring.text


def test_values_are_escaped_in_html_and_left_alone_in_text():
    url = "https://billing.example.com/pay?next=\"/'a'\"&x=<b>"
    notice = render("payment_failed", CONTEXT["hard"], email="<script>@x.com", action_url=url)

    assert "<script>" not in notice.html and "&lt;script&gt;@x.com" in notice.html
    assert url not in notice.html
    escaped = "https://billing.example.com/pay?next=&quot;/&#x27;a&#x27;&quot;&amp;x=&lt;b&gt;"
    assert f'href="{escaped}"' in notice.html
    assert "<script>@x.com" in notice.text and url in notice.text


@pytest.mark.parametrize(
    ("preferred_locales", "language"),
    [
        (["fr-FR", "en"], "fr"),
        (["de-DE"], "en"),
        ([], "en"),
        (["FR"], "fr"),
        (["pt-BR", "fr"], "fr"),
        (["fr_CA"], "fr"),
        (["en-GB", "fr"], "en"),
    ],
)
def test_choose_language(preferred_locales, language):
    assert choose_language(preferred_locales) == language


def test_rendering_leaves_the_active_language_alone():
    before = translation.get_language()
    render("recovered", OWED, "fr")
    assert translation.get_language() == before
    with translation.override("fr"):
        render("recovered", OWED, "en")
        assert translation.get_language() == "fr"


@pytest.mark.parametrize(
    ("kind", "extra", "problem"),
    [
        ("payment_succeeded", OWED, "unknown notice kind"),
        ("final_notice", {"cancels_at": DAY, **OWED, "upgrade": True}, "never leads to cancel"),
        ("step_ahead", {**CONTEXT["suspended"], "upgrade": True}, "upgrade notice cannot"),
        ("recovered", {**OWED, "action_url": "javascript:alert(1)"}, "http"),
        ("recovered", {"amount": 1000}, "lacks"),
        ("final_notice", {"cancels_at": "2026-12-12T09:00:00", **OWED}, "no UTC offset"),
        ("recovered", {"amount": 10.5, "currency": "usd"}, "integer of minor units"),
    ],
)
def test_a_notice_that_would_say_the_wrong_thing_is_refused(kind, extra, problem):
    with pytest.raises(ValueError, match=problem):
        render(kind, extra)


def test_a_deployer_template_replaces_the_shipped_one(settings, tmp_path):
    (tmp_path / "notices").mkdir()
    (tmp_path / "notices" / "recovered.subject.txt").write_text(
        "{% load i18n %}ACME: {% translate 'Payment received' %} ({{ amount }})\n"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]

    notice = render("recovered", OWED)

    assert notice.subject == "ACME: Payment received (USD 10.00)"
    assert "Thank you: we received your payment" in notice.text  # the rest is still ours


LOCALE = Path(__file__).resolve().parent.parent / "dunning" / "locale" / "fr" / "LC_MESSAGES"


def read_po(path: Path) -> list[dict[str, str]]:
    """Entries of a .po file: msgctxt, msgid, msgid_plural, msgstr / msgstr[n] as text."""
    entries, entry, field = [], {}, None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if match := re.match(r'^(msgctxt|msgid|msgid_plural|msgstr(?:\[\d+\])?) "(.*)"$', line):
            if match[1] in ("msgctxt", "msgid") and "msgid" in entry and field.startswith("msgstr"):
                entries.append(entry)
                entry = {}
            field = match[1]
            entry[field] = match[2]
        elif line.startswith('"'):
            entry[field] += line[1:-1]
    entries.append(entry)
    return [e for e in entries if e.get("msgid")]  # the header has an empty msgid


def unescape(po_string: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), po_string)


def test_every_french_message_is_translated_and_compiled():
    entries = read_po(LOCALE / "django.po")
    with (LOCALE / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)

    assert len(entries) > 40
    for entry in entries:
        msgid = unescape(entry["msgid"])
        translations = [unescape(v) for k, v in entry.items() if k.startswith("msgstr")]
        assert translations and all(translations), f"no French for {msgid!r}"
        # The .mo must be compiled from this .po, or Django serves stale words.
        if "msgid_plural" in entry:
            plural = unescape(entry["msgid_plural"])
            served = [compiled.ngettext(msgid, plural, n) for n in (1, 2)]
        else:
            key = f"{entry['msgctxt']}\x04{msgid}" if "msgctxt" in entry else msgid
            served = [compiled.gettext(key)]
        assert served == translations, f"django.mo is stale for {msgid!r}: run msgfmt"
