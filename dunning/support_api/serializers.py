"""Shapes of the support API: request bodies in, read models and action results out.

The output serializers render what `selectors` and `dunning.support` return, and they are
what the OpenAPI schema at /api/schema/ documents.
"""

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core import clock
from dunning.diff import Outcome
from dunning.models import CustomerNotice
from dunning.support_api.timeline import KIND_ORDER


# --- query parameters ---------------------------------------------------------------------
# DRF's CharField already refuses NUL and lone surrogates; the lengths are the columns'.
class AccountQuerySerializer(serializers.Serializer):
    stripe_customer = serializers.CharField(
        required=False, max_length=255, help_text="a Stripe customer id (cus_...), exact"
    )
    email = serializers.CharField(
        required=False, max_length=255, help_text="an email address, exact but case-insensitive"
    )
    page = serializers.IntegerField(required=False, min_value=1, help_text="1 unless given")


# --- accounts -----------------------------------------------------------------------------
class OpenCaseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    level = serializers.CharField()
    decline_class = serializers.CharField()
    opened_at = serializers.DateTimeField()
    next_retry_at = serializers.DateTimeField(allow_null=True)


class AccountSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    stripe_customer_id = serializers.CharField()
    email = serializers.CharField()
    open_case = serializers.SerializerMethodField(help_text="the open dunning case, if any")

    @extend_schema_field(OpenCaseSerializer(allow_null=True))
    def get_open_case(self, account) -> dict | None:
        cases = account.open_cases  # prefetched by selectors.accounts
        return OpenCaseSerializer(cases[0]).data if cases else None


# --- an account's dunning -----------------------------------------------------------------
class InvoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    stripe_invoice_id = serializers.CharField()
    status = serializers.CharField()
    amount_due = serializers.IntegerField(help_text="minor units")
    amount_remaining = serializers.IntegerField(help_text="minor units")
    currency = serializers.CharField()
    billing_reason = serializers.CharField()
    attempt_count = serializers.IntegerField()
    stripe_created = serializers.DateTimeField()


class NextRetrySerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    decline_class = serializers.CharField(help_text="soft, hard, fraud or auth_required")


class RestrictionInForceSerializer(serializers.Serializer):
    code = serializers.CharField()
    level = serializers.CharField(help_text="the ladder level that imposed it")
    reason = serializers.CharField()
    since = serializers.DateTimeField()


class DecisionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    trigger = serializers.CharField()
    actor = serializers.CharField()
    decided_at = serializers.DateTimeField()
    policy_version = serializers.CharField()
    summary = serializers.CharField()
    explanation = serializers.JSONField(help_text="the rules that fired and the facts they read")


class BadDebtEpisodeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    case_id = serializers.IntegerField()
    reason = serializers.CharField()
    products = serializers.JSONField(help_text="subscription ids in bad debt")
    amount = serializers.JSONField(help_text="minor units per currency at entry")
    entered_at = serializers.DateTimeField()


class AccountDunningSerializer(serializers.Serializer):
    account_id = serializers.IntegerField(source="account.pk")
    stripe_customer_id = serializers.CharField(source="account.stripe_customer_id")
    case_id = serializers.IntegerField(
        allow_null=True, help_text="the open case, else the latest one; null without any case"
    )
    state = serializers.CharField(allow_null=True)
    level = serializers.CharField(allow_null=True)
    resolution = serializers.CharField(
        allow_null=True,
        help_text="what happened: paid, paid_out_of_band, voided, written_off, cancelled",
    )
    decline_class = serializers.CharField(allow_null=True)
    amount_overdue = serializers.JSONField(
        allow_null=True, help_text="minor units per currency, e.g. {'usd': 4900}"
    )
    opened_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)
    next_review_at = serializers.DateTimeField(
        allow_null=True, help_text="when the ladder would next move on its own"
    )
    next_retry = NextRetrySerializer(allow_null=True)
    open_invoices = InvoiceSerializer(many=True, help_text="the account's unpaid invoices")
    restrictions = RestrictionInForceSerializer(many=True, help_text="restrictions in force")
    last_decision = DecisionSerializer(
        allow_null=True, help_text="the account's newest decision, with its explanation"
    )
    last_recompute_at = serializers.DateTimeField(
        allow_null=True,
        help_text="when the last recompute that changed something ran; a recompute with an "
        "empty diff writes nothing, so it does not move this time",
    )
    policy_version = serializers.CharField(allow_null=True)
    paused_until = serializers.DateTimeField(allow_null=True)
    pause_reason = serializers.CharField(allow_null=True)
    grace_until = serializers.DateTimeField(allow_null=True)
    grace_reason = serializers.CharField(allow_null=True)
    bad_debt_episode = BadDebtEpisodeSerializer(
        allow_null=True, help_text="the open bad-debt episode, if any"
    )


# --- timeline -----------------------------------------------------------------------------
class TimelineQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=2000, default=500)


class TimelineEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=list(KIND_ORDER))
    summary = serializers.CharField()
    detail = serializers.DictField()


class TimelineSerializer(serializers.Serializer):
    account_id = serializers.IntegerField()
    truncated = serializers.BooleanField(help_text="older entries exist; raise ?limit= to see them")
    entries = TimelineEntrySerializer(many=True, help_text="oldest first")


# --- customer notices ---------------------------------------------------------------------
class NoticeQuerySerializer(serializers.Serializer):
    page = serializers.IntegerField(required=False, min_value=1, help_text="1 unless given")


class NoticeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=CustomerNotice.Kind.choices)
    key = serializers.CharField(help_text="the message's identity: planned again, never sent twice")
    status = serializers.ChoiceField(
        choices=CustomerNotice.Status.choices,
        help_text="its delivery state: scheduled, sending, sent, withdrawn, skipped, failed, "
        "or shadow (outside the rollout gate: would have been sent)",
    )
    channel = serializers.CharField(help_text="email or outcome_event (the company's own sender)")
    due_at = serializers.DateTimeField()
    claimed_at = serializers.DateTimeField(
        allow_null=True, help_text="when the day's one message slot was taken for it"
    )
    sent_at = serializers.DateTimeField(allow_null=True)
    recipient = serializers.CharField(help_text="the address it went to; empty until claimed")
    language = serializers.CharField()
    subject = serializers.CharField()
    reason = serializers.CharField(help_text="why it was withdrawn, skipped or failed")
    case_id = serializers.IntegerField(allow_null=True)


# --- actions ------------------------------------------------------------------------------
class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time that must carry its timezone (Z or an offset)."""

    default_error_messages = {
        "naive": "Give a timezone, e.g. 2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00."
    }

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:  # well-formed but impossible, e.g. minute 99: DRF says so
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        return super().to_internal_value(value)


class HoldSerializer(serializers.Serializer):
    """Body of pause and extend-grace."""

    until = AwareDateTimeField(help_text="ISO 8601 with a timezone; must be in the future")
    reason = serializers.CharField(max_length=255, help_text="why; kept on the case and audited")

    def validate_until(self, value):
        if value <= clock.now():
            raise serializers.ValidationError("must be in the future")
        return value


# `from` is a Python keyword, so this serializer is built with type(); the keys are the
# ones the engine writes on Decision.changes.
ChangeSerializer = type(
    "ChangeSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "One applied change: which store, which field, from what, to what.",
        "store": serializers.CharField(
            help_text="case, case_invoices, retry, restrictions or standing"
        ),
        "field": serializers.CharField(),
        "from": serializers.JSONField(allow_null=True),
        "to": serializers.JSONField(allow_null=True),
    },
)


class ActionResultSerializer(serializers.Serializer):
    account_id = serializers.IntegerField()
    action = serializers.CharField()
    actor = serializers.CharField(help_text="the support user, as audited")
    decision_id = serializers.IntegerField(
        allow_null=True, help_text="null when the recompute changed nothing"
    )
    summary = serializers.CharField(help_text="the decision's summary; empty when nothing changed")
    changes = ChangeSerializer(many=True, help_text="the diff applied; empty when nothing changed")


class HoldResultSerializer(ActionResultSerializer):
    until = serializers.DateTimeField()
    reason = serializers.CharField()


def action_result(*, action: str, actor: str, outcome: Outcome, **extra) -> dict:
    """What a support action answers: the audited actor and the diff the engine applied."""
    return {
        "account_id": outcome.account_id,
        "action": action,
        "actor": actor,
        "decision_id": outcome.decision_id,
        "summary": outcome.summary,
        "changes": [change.as_dict() for change in outcome.changes],
        **extra,
    }


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
