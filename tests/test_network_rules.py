"""Card-network retry rules: each rule on plain values, then properties over generated
attempt lists checked against a brute-force count of every window."""

import json
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.network_rules import (
    DEFAULT_NETWORK_RULES,
    AttemptCap,
    CardAttempt,
    Network,
    NetworkRules,
    describe_rules,
    network_rules_from_json,
)
from dunning.network_verdict import earliest_retry

T = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
UNKNOWN_BRANDS = ["", "amex", "discover", "unknown"]


def declined(at: datetime = T, **codes: str) -> CardAttempt:
    return CardAttempt(at=at, declined=True, **codes)


def merchant_attempts(count: int, spacing: timedelta, last: datetime = T) -> list[CardAttempt]:
    """`count` merchant-initiated declines, the newest at `last`, `spacing` apart."""
    return [CardAttempt(at=last - i * spacing, declined=True) for i in range(count)]


def verdict(brand: str, attempts: list[CardAttempt], not_before: datetime = T, **kwargs):
    return earliest_retry(brand=brand, attempts=attempts, not_before=not_before, **kwargs)


# --- never-retry rules ------------------------------------------------------------------

VISA_CATEGORY_1 = ["04", "07", "12", "14", "15", "41", "43", "46", "R0", "R1", "R3"]


@pytest.mark.parametrize(
    ("brand", "codes", "rule"),
    [
        *[
            (brand, {"advice_code": "do_not_try_again"}, "stripe_do_not_try_again")
            for brand in ["visa", "mastercard", *UNKNOWN_BRANDS]
        ],
        *[
            (brand, {"network_decline_code": code}, "visa_category_1")
            for code in VISA_CATEGORY_1
            for brand in ["visa", "Visa", ""]
        ],
        ("amex", {"network_decline_code": "R0"}, "visa_category_1"),
        ("visa", {"network_decline_code": "r1"}, "visa_category_1"),  # case of the code
        ("visa", {"network_decline_code": " 04 "}, "visa_category_1"),
        *[
            (brand, {"network_advice_code": code}, "mastercard_mac_never")
            for code in ["03", "21"]
            for brand in ["mastercard", "MasterCard", *UNKNOWN_BRANDS]
        ],
    ],
)
def test_a_never_code_on_a_decline_stops_the_card(brand, codes, rule):
    result = verdict(brand, [declined(T - 40 * DAY, **codes)], not_before=T)

    assert (result.allowed, result.earliest, result.rule) == (False, None, rule)
    assert result.reason.startswith("Never retry this card")
    assert result.source
    json.dumps(result.facts)


@pytest.mark.parametrize(
    ("brand", "attempt"),
    [
        # Another network's code does not bind a known brand.
        ("mastercard", declined(network_decline_code="04")),
        ("mastercard", declined(network_decline_code="57")),
        ("visa", declined(network_advice_code="03")),
        ("visa", declined(network_advice_code="21")),
        # Category 2-4 codes and other advice are retried.
        ("visa", declined(network_decline_code="51")),
        ("visa", declined(network_decline_code="05")),
        ("mastercard", declined(network_advice_code="01")),
        ("mastercard", declined(network_advice_code="02")),
        ("", declined(advice_code="try_again_later")),
        # A code on an attempt that was not declined says nothing.
        ("visa", CardAttempt(at=T, declined=False, network_decline_code="04")),
        ("", CardAttempt(at=T, declined=False, advice_code="do_not_try_again")),
    ],
)
def test_codes_that_do_not_stop_the_card(brand, attempt):
    result = verdict(brand, [attempt], not_before=T + DAY)

    assert (result.allowed, result.earliest, result.rule) == (True, T + DAY, "")


def test_a_customer_initiated_decline_with_a_never_code_stops_the_card_too():
    attempt = CardAttempt(at=T, declined=True, customer_initiated=True, network_advice_code="03")

    assert not verdict("mastercard", [attempt]).allowed


def test_any_never_decline_stops_the_card_even_after_later_approvals():
    attempts = [declined(T - 20 * DAY, network_decline_code="46"), CardAttempt(T, False)]

    assert verdict("visa", attempts, T + DAY).rule == "visa_category_1"


CODE_57_FROM = datetime(2026, 10, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("declined_at", "never"),
    [
        (CODE_57_FROM - timedelta(days=30), False),
        (CODE_57_FROM - timedelta(seconds=1), False),
        (CODE_57_FROM, True),
        (CODE_57_FROM + timedelta(days=3), True),
        # 01:00 in UTC+2 is still the 24th in UTC.
        (datetime(2026, 10, 25, 1, 0, tzinfo=timezone(timedelta(hours=2))), False),
        (datetime(2026, 10, 24, 23, 0, tzinfo=timezone(timedelta(hours=-2))), True),
    ],
)
@pytest.mark.parametrize("brand", ["visa", ""])
def test_visa_57_is_category_1_for_declines_from_25_october_2026(brand, declined_at, never):
    result = verdict(brand, [declined(declined_at, network_decline_code="57")], not_before=T)

    assert result.allowed is not never
    if never:
        assert result.rule == "visa_category_1_code_57"
        assert result.facts["effective_from"] == "2026-10-25"


# --- Mastercard merchant advice waits ----------------------------------------------------

MAC_WAITS = {
    "24": HOUR,
    "25": 24 * HOUR,
    "26": 2 * DAY,
    "27": 4 * DAY,
    "28": 6 * DAY,
    "29": 8 * DAY,
    "30": 10 * DAY,
}


@pytest.mark.parametrize(("code", "wait"), MAC_WAITS.items())
@pytest.mark.parametrize("brand", ["mastercard", ""])
def test_mac_retry_after_waits_from_that_decline(brand, code, wait):
    decline_at = T - 30 * 60 * timedelta(seconds=1)  # half an hour before the asked time
    result = verdict(brand, [declined(decline_at, network_advice_code=code)], not_before=T)

    assert (result.allowed, result.earliest) == (True, decline_at + wait)
    assert result.rule == "mastercard_mac_retry_after"
    assert result.facts["network_advice_code"] == code


@pytest.mark.parametrize("code", MAC_WAITS)
def test_mac_waits_do_not_bind_a_visa_card(code):
    assert verdict("visa", [declined(T, network_advice_code=code)]).earliest == T


def test_an_expired_mac_wait_holds_nothing():
    result = verdict("mastercard", [declined(T - 2 * DAY, network_advice_code="26")])

    assert (result.earliest, result.rule) == (T, "")


@pytest.mark.parametrize(
    ("older", "newer", "earliest"),
    [
        # A later decline with a shorter wait, or none, does not cut the issuer's earlier wait.
        ("30", "24", T - 3 * DAY + 10 * DAY),
        ("30", "", T - 3 * DAY + 10 * DAY),
        # A later decline with a longer wait extends it.
        ("24", "28", T - DAY + 6 * DAY),
    ],
)
def test_every_decline_wait_still_applies(older, newer, earliest):
    attempts = [
        declined(T - 3 * DAY, network_advice_code=older),
        declined(T - DAY, network_advice_code=newer),
    ]

    assert verdict("mastercard", attempts).earliest == earliest


# --- attempt caps --------------------------------------------------------------------------

# (brand, cap, limit, spacing): the spacing keeps every other cap of the brand out of play.
CAPS = [
    ("visa", "visa_30d", 20, DAY),
    ("mastercard", "mastercard_24h", 10, HOUR),
    ("mastercard", "mastercard_30d", 35, 20 * HOUR),
]
WINDOWS = {"visa_30d": 30 * DAY, "mastercard_24h": 24 * HOUR, "mastercard_30d": 30 * DAY}


@pytest.mark.parametrize(("brand", "cap", "limit", "spacing"), CAPS)
def test_one_below_the_cap_retries_at_once(brand, cap, limit, spacing):
    result = verdict(brand, merchant_attempts(limit - 1, spacing))

    assert (result.allowed, result.earliest, result.rule) == (True, T, "")
    assert result.facts["counted_in_window"][cap] == limit - 1


@pytest.mark.parametrize(("brand", "cap", "limit", "spacing"), CAPS)
def test_at_the_cap_waits_until_the_oldest_leaves_the_window(brand, cap, limit, spacing):
    attempts = merchant_attempts(limit, spacing)
    oldest = T - (limit - 1) * spacing

    result = verdict(brand, attempts)

    assert (result.allowed, result.earliest, result.rule) == (True, oldest + WINDOWS[cap], cap)
    assert result.facts["limit"] == limit
    assert result.facts["counted_in_window"][cap] == limit - 1  # one left the window
    assert "limit" in result.reason


@pytest.mark.parametrize(
    ("oldest_age", "earliest"),
    [
        (30 * DAY, T),  # the window is (t - 30 days, t]: exactly 30 days old is out
        (30 * DAY - timedelta(seconds=1), T + timedelta(seconds=1)),
        (31 * DAY, T),
    ],
)
def test_the_window_slides(oldest_age, earliest):
    attempts = [*merchant_attempts(19, HOUR), CardAttempt(T - oldest_age, declined=True)]

    assert verdict("visa", attempts).earliest == earliest


def test_approved_merchant_attempts_count_too():
    attempts = [CardAttempt(T - i * HOUR, declined=i % 2 == 0) for i in range(10)]

    assert verdict("mastercard", attempts).rule == "mastercard_24h"


@pytest.mark.parametrize(
    ("customer_initiated", "earliest"),
    [
        (0, T - 19 * DAY + 30 * DAY),
        (1, T),  # 19 merchant-initiated attempts and one by the customer
        (20, T),
    ],
)
def test_customer_initiated_attempts_do_not_count_toward_the_visa_cap(customer_initiated, earliest):
    attempts = [
        CardAttempt(T - i * DAY, declined=True, customer_initiated=i < customer_initiated)
        for i in range(20)
    ]
    attempts += [
        CardAttempt(T - i * HOUR, declined=True, customer_initiated=True)
        for i in range(customer_initiated)
    ]

    assert verdict("visa", attempts).earliest == earliest


def test_a_known_later_attempt_counts_in_the_windows_around_it():
    """An attempt already planned after the asked time: a retry must keep every window that
    contains it within the cap, on both sides."""
    rules = DEFAULT_NETWORK_RULES.with_overrides({"mastercard_24h": 1})
    planned = CardAttempt(T + 10 * HOUR, declined=False)

    result = verdict("mastercard", [planned], rules=rules)

    assert result.earliest == T + 10 * HOUR + 24 * HOUR


def test_a_known_attempt_more_than_a_window_later_does_not_hold_back_now():
    rules = DEFAULT_NETWORK_RULES.with_overrides({"mastercard_24h": 1})
    planned = CardAttempt(T + 30 * HOUR, declined=False)

    assert verdict("mastercard", [planned], rules=rules).earliest == T


def test_attempts_exactly_a_window_apart_never_share_a_window():
    rules = DEFAULT_NETWORK_RULES.with_overrides({"mastercard_24h": 2})
    attempts = [CardAttempt(T - 12 * HOUR, True), CardAttempt(T + 12 * HOUR, False)]

    assert verdict("mastercard", attempts, rules=rules).earliest == T


def test_a_cap_with_an_effective_date_binds_retries_from_that_date():
    rules = NetworkRules(
        never=(),
        caps=(
            AttemptCap(
                "test_1d", Network.VISA, 1, 1, DAY, "test", effective_from=date(2026, 11, 3)
            ),
        ),
        waits=(),
    )
    attempts = [CardAttempt(T, declined=True)]  # 2026-11-02 09:00
    starts = datetime.combine(date(2026, 11, 3), time(0), tzinfo=UTC)

    assert verdict("visa", attempts, T + HOUR, rules=rules).earliest == T + HOUR
    assert verdict("visa", attempts, starts - HOUR, rules=rules).earliest == starts - HOUR
    assert verdict("visa", attempts, starts, rules=rules).earliest == T + DAY


# --- unknown brands get every rule ----------------------------------------------------------


@pytest.mark.parametrize("brand", UNKNOWN_BRANDS)
@pytest.mark.parametrize(
    ("attempts", "visa", "mastercard"),
    [
        (merchant_attempts(10, HOUR), T, T - 9 * HOUR + DAY),  # Mastercard's 24 hours
        (merchant_attempts(20, DAY), T - 19 * DAY + 30 * DAY, T),  # Visa's 30 days
        ([declined(T, network_advice_code="30")], T, T + 10 * DAY),
    ],
)
def test_an_unknown_brand_waits_as_long_as_the_strictest_network(brand, attempts, visa, mastercard):
    assert verdict("visa", attempts).earliest == visa
    assert verdict("mastercard", attempts).earliest == mastercard
    assert verdict(brand, attempts).earliest == max(visa, mastercard)


# --- deployer overrides ------------------------------------------------------------------


def test_stricter_caps_are_accepted_and_enforced():
    rules = DEFAULT_NETWORK_RULES.with_overrides({"visa_30d": 15, "mastercard_24h": 5})
    limits = {cap.name: cap.limit for cap in rules.caps}

    assert limits == {"visa_30d": 15, "mastercard_24h": 5, "mastercard_30d": 35}
    assert verdict("visa", merchant_attempts(15, DAY), rules=rules).rule == "visa_30d"
    assert verdict("visa", merchant_attempts(15, DAY)).earliest == T  # the default is untouched
    assert verdict("mastercard", merchant_attempts(5, HOUR), rules=rules).rule == "mastercard_24h"


@pytest.mark.parametrize(
    "overrides",
    [
        {"visa_30d": 21},
        {"mastercard_24h": 11},
        {"mastercard_30d": 36},
        {"visa_30d": 15, "mastercard_24h": 12},
        {"amex_30d": 5},
        {"visa_30d": 0},
        {"visa_30d": True},
        {"visa_30d": "15"},
        {"visa_30d": 15.0},
    ],
)
def test_looser_unknown_or_malformed_overrides_are_refused(overrides):
    with pytest.raises(ValueError):
        DEFAULT_NETWORK_RULES.with_overrides(overrides)


def test_an_override_cannot_loosen_an_already_stricter_rule_set_past_the_network():
    stricter = DEFAULT_NETWORK_RULES.with_overrides({"visa_30d": 10})

    assert {c.name: c.limit for c in stricter.with_overrides({"visa_30d": 20}).caps}[
        "visa_30d"
    ] == 20
    with pytest.raises(ValueError):
        stricter.with_overrides({"visa_30d": 21})


@pytest.mark.parametrize(
    ("text", "visa_30d"),
    [("", 20), ("  ", 20), ("{}", 20), ('{"visa_30d": 12}', 12)],
)
def test_overrides_from_json(text, visa_30d):
    rules = network_rules_from_json(text)

    assert {cap.name: cap.limit for cap in rules.caps}["visa_30d"] == visa_30d


@pytest.mark.parametrize(
    "text", ['{"visa_30d": 25}', '{"nope": 1}', "[15]", "15", "not json", '{"visa_30d": null}']
)
def test_bad_json_overrides_are_refused(text):
    with pytest.raises(ValueError):
        network_rules_from_json(text)


# --- the table and the inputs ---------------------------------------------------------------


def test_describe_rules_lists_every_rule_with_its_source_and_date():
    rows = describe_rules(DEFAULT_NETWORK_RULES.with_overrides({"mastercard_24h": 6}))
    by_rule = {row["rule"]: row for row in rows}

    json.dumps(rows)
    assert set(by_rule) == {
        "stripe_do_not_try_again",
        "visa_category_1",
        "visa_category_1_code_57",
        "mastercard_mac_never",
        "visa_30d",
        "mastercard_24h",
        "mastercard_30d",
        "mastercard_mac_retry_after",
    }
    assert all(row["source"] and row["network"] and row["params"] for row in rows)
    assert by_rule["visa_category_1_code_57"]["effective_from"] == "2026-10-25"
    assert by_rule["mastercard_24h"]["params"]["limit"] == 6
    assert by_rule["mastercard_24h"]["params"]["published_limit"] == 10
    assert by_rule["mastercard_24h"]["params"]["window"] == "24 hours"
    assert by_rule["mastercard_mac_retry_after"]["params"]["waits"]["27"] == "4 days"


@pytest.mark.parametrize(
    ("attempts", "not_before"),
    [
        ([], datetime(2026, 11, 2, 9, 0)),
        ([CardAttempt(datetime(2026, 11, 2, 9, 0), True)], T),
    ],
)
def test_naive_times_are_refused(attempts, not_before):
    with pytest.raises(ValueError):
        verdict("visa", attempts, not_before)


def test_nothing_to_hold_back():
    result = verdict("visa", [])

    assert (result.allowed, result.earliest, result.rule, result.source) == (True, T, "", "")
    assert result.reason


# --- properties over generated attempt lists --------------------------------------------------

SECONDS = st.one_of(
    st.integers(-35 * 86400, 3 * 86400),  # spread over the 30-day windows
    st.integers(-2 * 86400, 86400),  # bunched, to reach the 24-hour cap
    st.integers(86400, 3 * 86400),  # known attempts after the asked time
)
# Never-codes are rare, or almost every list would stop the card and prove nothing.
BLANKS = [""] * 60
ADVICE = st.sampled_from([*BLANKS, "try_again_later", "do_not_try_again"])
MAC = st.sampled_from([*BLANKS, *[""] * 60, "01", "02", "03", "21", *MAC_WAITS])
NETWORK_DECLINE = st.sampled_from([*BLANKS, "05", "51", "57", "04", "R0"])
ATTEMPT = st.builds(
    CardAttempt,
    at=SECONDS.map(lambda s: T + timedelta(seconds=s)),
    declined=st.booleans(),
    customer_initiated=st.booleans(),
    advice_code=ADVICE,
    network_advice_code=MAC,
    network_decline_code=NETWORK_DECLINE,
)
ATTEMPTS = st.lists(ATTEMPT, max_size=40)
BRAND = st.sampled_from(["visa", "mastercard", "Visa", "MasterCard", "", "amex"])
NOT_BEFORE = st.integers(-86400, 86400).map(lambda s: T + timedelta(seconds=s))
RULES = st.one_of(
    st.just(DEFAULT_NETWORK_RULES),
    st.fixed_dictionaries(
        {
            "visa_30d": st.integers(1, 20),
            "mastercard_24h": st.integers(1, 10),
            "mastercard_30d": st.integers(1, 35),
        }
    ).map(DEFAULT_NETWORK_RULES.with_overrides),
)


def bound_networks(brand: str) -> set[Network]:
    name = brand.lower()
    known = {Network.VISA, Network.MASTERCARD}
    return {Network.ANY, Network(name)} if name in known else {Network.ANY, *known}


def midnight(day: date | None) -> datetime | None:
    return datetime.combine(day, time(0), tzinfo=UTC) if day else None


def never_fires(brand: str, attempts, rules: NetworkRules) -> bool:
    networks = bound_networks(brand)
    return any(
        a.declined
        and getattr(a, rule.field).strip().upper() in {c.upper() for c in rule.codes}
        and (rule.effective_from is None or a.at >= midnight(rule.effective_from))
        for rule in rules.never
        if rule.network in networks
        for a in attempts
    )


def caps_allow(t: datetime, brand: str, attempts, rules: NetworkRules) -> bool:
    """Brute force: with a merchant attempt added at t, count every window that contains t."""
    networks = bound_networks(brand)
    for cap in rules.caps:
        if cap.network not in networks:
            continue
        if cap.effective_from and t < midnight(cap.effective_from):
            continue
        counted = [a.at for a in attempts if not a.customer_initiated] + [t]
        ends = [t] + [x for x in counted if t <= x < t + cap.window]
        for end in ends:
            if sum(1 for x in counted if end - cap.window < x <= end) > cap.limit:
                return False
    return True


def waits_allow(t: datetime, brand: str, attempts, rules: NetworkRules) -> bool:
    networks = bound_networks(brand)
    for rule in rules.waits:
        if rule.network not in networks:
            continue
        spans = dict(rule.waits)
        for a in attempts:
            code = getattr(a, rule.field)
            if a.declined and code in spans and t < a.at + spans[code]:
                return False
    return True


def allowed_at(t: datetime, brand: str, attempts, rules: NetworkRules) -> bool:
    return caps_allow(t, brand, attempts, rules) and waits_allow(t, brand, attempts, rules)


@settings(max_examples=500, deadline=None)
@given(brand=BRAND, attempts=ATTEMPTS, not_before=NOT_BEFORE, rules=RULES)
def test_property_a_retry_at_the_earliest_keeps_every_window_within_its_cap(
    brand, attempts, not_before, rules
):
    result = earliest_retry(brand=brand, attempts=attempts, not_before=not_before, rules=rules)

    assert result.allowed is not never_fires(brand, attempts, rules)
    if result.allowed:
        assert caps_allow(result.earliest, brand, attempts, rules)
        assert waits_allow(result.earliest, brand, attempts, rules)
    json.dumps(result.facts)


@settings(max_examples=500, deadline=None)
@given(brand=BRAND, attempts=ATTEMPTS, not_before=NOT_BEFORE, rules=RULES)
def test_property_b_the_earliest_is_minimal(brand, attempts, not_before, rules):
    result = earliest_retry(brand=brand, attempts=attempts, not_before=not_before, rules=rules)
    reordered = earliest_retry(
        brand=brand, attempts=attempts[::-1], not_before=not_before, rules=rules
    )

    assert reordered.earliest == result.earliest
    if result.allowed:
        assert result.earliest >= not_before
        if result.earliest == not_before:
            assert result.rule == ""
        else:
            second_before = result.earliest - timedelta(seconds=1)
            assert not allowed_at(second_before, brand, attempts, rules)
            assert not allowed_at(not_before, brand, attempts, rules)
            assert result.rule


@settings(max_examples=500, deadline=None)
@given(brand=BRAND, attempts=ATTEMPTS, extra=ATTEMPT, not_before=NOT_BEFORE, rules=RULES)
def test_property_c_adding_an_attempt_never_brings_the_earliest_forward(
    brand, attempts, extra, not_before, rules
):
    before = earliest_retry(brand=brand, attempts=attempts, not_before=not_before, rules=rules)
    after = earliest_retry(
        brand=brand, attempts=[*attempts, extra], not_before=not_before, rules=rules
    )

    if not before.allowed:
        assert not after.allowed
    if after.allowed:
        assert before.allowed
        assert after.earliest >= before.earliest


@settings(max_examples=500, deadline=None)
@given(brand=st.sampled_from(UNKNOWN_BRANDS), attempts=ATTEMPTS, not_before=NOT_BEFORE)
def test_property_an_unknown_brand_never_retries_sooner_than_a_known_one(
    brand, attempts, not_before
):
    unknown = earliest_retry(brand=brand, attempts=attempts, not_before=not_before)
    for known_brand in ["visa", "mastercard"]:
        known = earliest_retry(brand=known_brand, attempts=attempts, not_before=not_before)
        if not known.allowed:
            assert not unknown.allowed
        if unknown.allowed:
            assert unknown.earliest >= known.earliest
