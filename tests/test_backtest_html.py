"""The backtest's HTML page, rendered from a hand-made report dict (no database)."""

import re

import pytest

from simulation.backtest.html import render, write_html

HOSTILE = "<script>alert('x')</script>"


def _decision(summary: str, conclusion: str) -> dict:
    return {
        "decided_at": "2027-01-20T12:00:00+00:00",
        "policy_version": 1,
        "summary": summary,
        "explanation": [{"rule": "ladder", "conclusion": conclusion, "facts": {"days": 9}}],
    }


def _report() -> dict:
    return {
        "window": {"since": "2027-01-01T00:00:00+00:00", "until": "2027-03-01T00:00:00+00:00"},
        "policies": {"active": "version 1 (active)", "candidate": "file grace.json"},
        "events": {"stored": 1200, "replayed": 1000, "left_out_caused_by_the_service": 200},
        "retry_answers": {
            "active": {"history": 31},
            "candidate": {"history": 20, "class_rate": 7},
        },
        "class_rates": {"soft": 0.4125},
        "totals": {
            "active": {"accounts": 40, "recovered": {"usd": 125000}, "days_restricted": 90},
            "candidate": {"accounts": 40, "recovered": {"usd": 99000}, "days_restricted": 60},
        },
        "per_rung": {
            "active": {"notice": 12, "premium_restricted": 5},
            "candidate": {"notice": 12},
        },
        "changed": {"accounts": 2, "how": {"days_restricted: fewer": 2, "recovered: less": 1}},
        "accounts": [
            {
                "customer": "cus_A",
                "changes": {"days_restricted": [9, 2], "recovered": [{"usd": 5000}, {}]},
                "active": _decision("premium restricted", "level premium_restricted"),
                "candidate": _decision(HOSTILE, f"level notice {HOSTILE}"),
            },
            {
                "customer": "cus_<b>B</b>",
                "changes": {
                    "highest_rung": ["premium_restricted", "notice"],
                    "open_level": ["", "notice"],
                },
                "active": _decision("premium restricted", "level premium_restricted"),
                "candidate": {},
            },
        ],
        "replays": {},
    }


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_an_explanation_from_stored_data_is_escaped():
    page = render(_report())
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>B</b>" not in page and "cus_&lt;b&gt;B&lt;/b&gt;" in page


def test_the_page_is_self_contained():
    page = render(_report())
    assert page.startswith("<!doctype html>") and "<style>" in page
    for external in ("<link", "src=", "http://", "https://", "@import"):
        assert external not in page


@pytest.mark.parametrize(
    ("expected",),
    [
        ("recovered (minor units) usd 125,000 99,000 -26,000",),
        ("days restricted 90 60 -30",),
        ("notice 12 12 0",),
        ("premium restricted 5 0 -5",),
        ("active : from history: 31, from the class's observed rate: 0",),
        ("candidate : from history: 20, from the class's observed rate: 7",),
        ("soft 41%",),
        ("Accounts whose outcome changes: 2",),
        ("days_restricted: fewer 2",),
        ("recovered: less 1",),
        ("days restricted 9 2",),
        ('recovered {"usd": 5000} {}',),
        ("highest rung premium_restricted notice",),
        ("open level (none) notice",),
        ("candidate (no decision)",),
        ("active premium restricted policy version 1, decided 2027-01-20T12:00:00+00:00",),
        ("ladder : level premium_restricted",),
    ],
)
def test_the_page_shows_each_part_of_the_report(expected):
    text = _text(render(_report())).replace("&quot;", '"')
    assert expected in text


def test_both_explanations_of_a_changed_account_sit_side_by_side():
    page = render(_report())
    first = page[page.index("cus_A") : page.index("cus_&lt;b&gt;")]
    sides = first[first.index('class="sides"') :]
    assert sides.index("<h4>active</h4>") < sides.index("<h4>candidate</h4>")
    assert "premium restricted" in sides and "level notice" in sides


def test_no_rung_and_no_change_render_plainly(tmp_path):
    report = _report()
    report["per_rung"] = {"active": {}, "candidate": {}}
    report["changed"], report["accounts"] = {"accounts": 0, "how": {}}, []
    path = tmp_path / "report.html"
    write_html(report, path)
    text = _text(path.read_text())
    assert "No account reached a rung on either side." in text
    assert "Accounts whose outcome changes: 0" in text
