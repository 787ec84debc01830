"""The policy as one JSON document: the code default round-trips exactly, decides exactly
the same, and a bad document is refused with the path of every problem."""

import copy
import json

import pytest
from hypothesis import given, settings

from dunning.compute import compute
from dunning.policy import current_policy
from dunning.policy_document import (
    InvalidPolicy,
    diff_documents,
    diff_lines,
    policy_from_document,
    policy_to_document,
    validate_document,
)
from tests.core_values import POLICY
from tests.test_decision_properties import moment, snapshots


def default_document() -> dict:
    return policy_to_document(current_policy())


def test_the_code_default_parses_back_to_an_identical_policy():
    policy = current_policy()
    document = default_document()

    assert validate_document(document) == []
    assert policy_from_document(document, version=policy.version) == policy
    # Plain JSON: it survives a trip through text unchanged.
    assert json.loads(json.dumps(document)) == document


PARSED = policy_from_document(policy_to_document(POLICY), version=POLICY.version)


@settings(max_examples=300, deadline=None)
@given(snap=snapshots(), now=moment(0))
def test_the_parsed_default_decides_exactly_as_the_code_default(snap, now):
    assert compute(snap, now, PARSED) == compute(snap, now, POLICY)


def _set(document: dict, path: tuple, value: object) -> dict:
    changed = copy.deepcopy(document)
    *parents, last = path
    target = changed
    for part in parents:
        target = target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return changed


DELETE = object()

# (what is changed, the new value, the path reported, words in the message)
INVALID = [
    (("format",), 2, "format", "1 was expected"),
    (("severity",), DELETE, "(document)", "'severity' is a required property"),
    (("severity", "good_payer_factor"), 0, "severity.good_payer_factor", "less than or equal"),
    (("severity", "good_payer_min_paid"), "6", "severity.good_payer_min_paid", "not of type"),
    (("decline_classes", "do_not_honor"), "maybe", "decline_classes.do_not_honor", "is not one of"),
    (("unknown_decline_class",), "later", "unknown_decline_class", "is not one of"),
    (("retries", "schedules_days", "hard"), [1, 2], "retries.schedules_days", "hard"),
    (("retries", "schedules_days", "soft"), [1, 5, 3], "retries.schedules_days.soft", "increase"),
    (("retries", "schedules_days", "soft", 0), -1, "retries.schedules_days.soft[0]", "minimum"),
    (("retries", "card_attempt_window_days"), 7, "retries.card_attempt_window_days", "minimum"),
    (("network_caps", "visa_30d"), 25, "network_caps.visa_30d", "between 1 and 20"),
    (("network_caps", "amex_1d"), 3, "network_caps", "amex_1d"),
    (("ladders", "base", 1, "level"), "none", "ladders.base[1].level", "is not one of"),
    (("ladders", "base", 1, "restricts"), ["teleport"], "ladders.base[1].restricts[0]", "one of"),
    (("ladders", "base", 2, "starts_after_days"), 5, "ladders.base[2].starts_after_days", "below"),
    (("ladders", "base", 0, "starts_after_days"), 1, "ladders.base[0]", "notice at 0 days"),
    (("ladders", "base", 4, "cancels"), False, "ladders.base[4].cancels", "must end"),
    (("ladders", "base", 3, "cancels"), True, "ladders.base[3].cancels", "must not end"),
    (("ladders", "upgrade", 1, "bad_debt"), True, "ladders.upgrade[1]", "never opens bad debt"),
    (
        ("ladders", "upgrade", 1, "restricts"),
        ["core_access"],
        "ladders.upgrade[1]",
        "only restricts upgraded_features",
    ),
    (
        ("ladders", "small_amount", 1, "min_dwell_days"),
        5,
        "ladders.small_amount[1]",
        "a level means the same on every track",
    ),
    (("ladders", "upgrade"), DELETE, "ladders", "'upgrade' is a required property"),
    (("notices", "step_lead_days"), "3", "notices.step_lead_days", "not of type"),
]


@pytest.mark.parametrize(("path", "value", "where", "words"), INVALID)
def test_an_invalid_document_is_refused_with_the_path_of_the_problem(path, value, where, words):
    document = _set(default_document(), path, value)

    errors = validate_document(document)

    assert errors, "accepted"
    assert any(e.path == where and words in e.message for e in errors), errors
    with pytest.raises(InvalidPolicy):
        policy_from_document(document, version="x")


@pytest.mark.parametrize("document", [None, [], "policy", 3])
def test_a_document_that_is_not_an_object_is_refused(document):
    assert [e.path for e in validate_document(document)] == ["(document)"]


def test_a_diff_lists_each_changed_path_old_to_new():
    old = default_document()
    new = _set(old, ("severity", "good_payer_min_paid"), 12)
    new = _set(new, ("retries", "schedules_days", "soft"), [2, 4])
    new = _set(new, ("ladders", "base", 1, "starts_after_days"), 10)

    changes = diff_documents(old, new)

    assert diff_lines(changes) == [
        "ladders.base[1].starts_after_days: 7 → 10",
        "retries.schedules_days.soft: [1, 3, 5, 8, 12, 17, 23] → [2, 4]",
        "severity.good_payer_min_paid: 6 → 12",
    ]
    assert diff_documents(old, copy.deepcopy(old)) == []


def test_a_diff_shows_added_and_removed_rungs_and_keys():
    old = default_document()
    new = copy.deepcopy(old)
    new["ladders"]["small_amount"].pop(1)
    del new["decline_classes"]["do_not_honor"]

    lines = diff_lines(diff_documents(old, new))

    assert "decline_classes.do_not_honor: soft → (absent)" in lines
    assert any(line.startswith("ladders.small_amount[2]: {") for line in lines)
    assert "ladders.small_amount[1].level: premium_restricted → cancelled" in lines


def test_the_readme_example_gives_accounts_with_12_paid_invoices_three_times_the_time():
    from dunning.ladder import PaymentHistory, severity_factor
    from dunning.policy import DeclineClass

    document = default_document()
    document["severity"].update(good_payer_min_paid=12, good_payer_factor=3.0)
    v2 = policy_from_document(document, version="v2")

    def factor(paid: int, policy) -> float:
        return severity_factor(DeclineClass.SOFT, PaymentHistory(paid, 0), policy)[0]

    assert [factor(paid, POLICY) for paid in (5, 6, 11, 12)] == [1.0, 2.0, 2.0, 2.0]
    assert [factor(paid, v2) for paid in (5, 6, 11, 12)] == [1.0, 1.0, 1.0, 3.0]
