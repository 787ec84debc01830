"""Dunning state: cases (a django-fsm state machine), their invoices, every transition,
every decision with its explanation, the outbox of side effects, and the account
standing as requested from and acknowledged by Account Management.

Transition methods only decide and record; `dunning.apply` is the one door that
changes these rows, and side effects leave through the outbox.
"""

from django.db import models
from django_fsm import FSMField, FSMModelMixin, transition


class CaseState(models.TextChoices):
    RETRYING = "retrying"
    AWAITING_CUSTOMER = "awaiting_customer_action"
    ESCALATED = "escalated"  # bad debt
    LIFTING = "lifting"  # money in, consequences being lifted, side effects in flight
    RESOLVED = "resolved"


class Resolution(models.TextChoices):
    NONE = ""
    PAID = "paid"
    PAID_OUT_OF_BAND = "paid_out_of_band"
    VOIDED = "voided"
    WRITTEN_OFF = "written_off"
    CANCELLED = "cancelled"
    UPGRADE_REVERTED = "upgrade_reverted"  # an unpaid upgrade undone, its invoice voided


OPEN_STATES = [
    CaseState.RETRYING,
    CaseState.AWAITING_CUSTOMER,
    CaseState.ESCALATED,
    CaseState.LIFTING,
]
IN_DUNNING = [CaseState.RETRYING, CaseState.AWAITING_CUSTOMER, CaseState.ESCALATED]


class DunningCase(FSMModelMixin, models.Model):
    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="dunning_cases"
    )
    state = FSMField(choices=CaseState.choices, protected=True)
    resolution = models.CharField(max_length=20, choices=Resolution.choices, blank=True, default="")
    level = models.CharField(max_length=32, default="none")
    # When the current level took effect: the next rung waits out this one's minimum dwell.
    level_since = models.DateTimeField(null=True, blank=True)
    decline_class = models.CharField(max_length=20, blank=True, default="")
    earliest_unpaid_at = models.DateTimeField(null=True, blank=True)
    # {"usd": 4900}: minor units per currency, never mixed.
    amount_overdue = models.JSONField(default=dict, blank=True)
    # When the ladder would next move on its own; beat recomputes the case then.
    next_review_at = models.DateTimeField(null=True, blank=True)
    # The next payment retry (its outbox row does the work; this is for people).
    next_retry_at = models.DateTimeField(null=True, blank=True)
    # Support's levers (inputs to the engine, set only through dunning.support):
    # a pause stops retries and escalation; a grace period stops escalation only.
    paused_until = models.DateTimeField(null=True, blank=True)
    pause_reason = models.CharField(max_length=255, blank=True, default="")
    grace_until = models.DateTimeField(null=True, blank=True)
    grace_reason = models.CharField(max_length=255, blank=True, default="")
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    policy_version = models.CharField(max_length=32)
    # Outside the rollout gate the decision is kept here and not applied (shadow mode):
    # {"restrictions": [...], "standing": ..., "cancel": [...]}; empty when enforced.
    shadow = models.JSONField(default=dict, blank=True)
    last_decision = models.ForeignKey(
        "dunning.Decision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(state__in=OPEN_STATES),
                name="one_open_case_per_account",
            )
        ]
        indexes = [
            models.Index(
                fields=["next_review_at"],
                name="case_review_due_idx",
                condition=models.Q(state__in=OPEN_STATES),
            ),
        ]

    def __str__(self) -> str:
        return f"case {self.pk} {self.state} {self.resolution}".strip()

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    # Protected transitions: the only way `state` changes.
    @transition(field=state, source=[*IN_DUNNING, CaseState.LIFTING], target=CaseState.RETRYING)
    def retry(self) -> None:
        pass

    @transition(
        field=state, source=[*IN_DUNNING, CaseState.LIFTING], target=CaseState.AWAITING_CUSTOMER
    )
    def await_customer(self) -> None:
        pass

    @transition(field=state, source=[*IN_DUNNING, CaseState.LIFTING], target=CaseState.ESCALATED)
    def escalate(self) -> None:
        pass

    @transition(field=state, source=IN_DUNNING, target=CaseState.LIFTING)
    def lift(self) -> None:
        pass

    @transition(field=state, source=OPEN_STATES, target=CaseState.RESOLVED)
    def resolve(self) -> None:
        pass


class CaseInvoice(models.Model):
    """An invoice belongs to at most one case: the one open when it entered dunning."""

    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="invoices")
    invoice = models.OneToOneField(
        "billing_events.Invoice", on_delete=models.CASCADE, related_name="dunning_case_link"
    )

    def __str__(self) -> str:
        return f"{self.case_id}:{self.invoice_id}"


class Decision(models.Model):
    """One applied, non-empty diff: what triggered it, what changed, and why."""

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="dunning_decisions"
    )
    case = models.ForeignKey(
        DunningCase, null=True, blank=True, on_delete=models.SET_NULL, related_name="decisions"
    )
    trigger = models.CharField(max_length=40)
    actor = models.CharField(max_length=255, help_text="Stripe event, support user or beat task")
    decided_at = models.DateTimeField()
    policy_version = models.CharField(max_length=32)
    changes = models.JSONField(help_text="the applied diff: store, field, from, to")
    explanation = models.JSONField(help_text="rules that fired and the facts they read")
    summary = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["account", "decided_at"])]

    def __str__(self) -> str:
        return f"{self.trigger} {self.decided_at:%Y-%m-%d %H:%M}: {self.summary[:60]}"


class CaseTransition(models.Model):
    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="transitions")
    decision = models.ForeignKey(Decision, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=32, blank=True)
    to_state = models.CharField(max_length=32)
    trigger = models.CharField(max_length=40)
    actor = models.CharField(max_length=255)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.from_state or '∅'} → {self.to_state}"


class AccountStanding(models.Model):
    """Store 5: what Account Management was asked to hold, and what it acknowledged."""

    account = models.OneToOneField(
        "billing_events.Account", on_delete=models.CASCADE, related_name="standing"
    )
    requested = models.CharField(max_length=32)
    requested_at = models.DateTimeField()
    acknowledged = models.CharField(max_length=32, blank=True, default="")
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The drift detector's "standing not settled": a small part of a large table.
            models.Index(
                fields=["account"],
                name="standing_unsettled_idx",
                condition=~models.Q(requested="good")
                | ~models.Q(acknowledged=models.F("requested")),
            )
        ]

    def __str__(self) -> str:
        return f"{self.requested} (acknowledged: {self.acknowledged or '-'})"


class OutboxItem(models.Model):
    """A side effect decided in a recompute, run by a worker after the commit."""

    class Kind(models.TextChoices):
        ACCOUNT_STANDING = "account_standing"
        PAYMENT_RETRY = "payment_retry"
        CANCEL_SUBSCRIPTION = "cancel_subscription"
        REVERT_UPGRADE = "revert_upgrade"
        OUTCOME_EVENT = "outcome_event"
        FAILURE_LOOKUP = "failure_lookup"  # ask Stripe for a decline code not yet delivered
        CUSTOMER_NOTICE = "customer_notice"  # a message to the customer (email or event)

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        SUPERSEDED = "superseded"  # a newer decision made it moot before it ran
        DEAD = "dead"

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="outbox_items"
    )
    decision = models.ForeignKey(
        Decision, null=True, blank=True, on_delete=models.SET_NULL, related_name="outbox_items"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # Also the idempotency key sent to the other side.
    key = models.CharField(max_length=255, unique=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # A worker's lease: nobody else runs the item before this passes.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="outbox_due_idx",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["account", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.status})"


class CustomerNotice(models.Model):
    """One message the engine decided the customer should get, and what became of it.

    The key is the message's identity for good: a recompute that plans the same message
    again finds its row and sends nothing twice."""

    class Kind(models.TextChoices):
        # Most important first: on a day with two due, the first one goes.
        FINAL_NOTICE = "final_notice"  # before the subscription is cancelled
        STEP_AHEAD = "step_ahead"  # a ladder step, days before it takes effect
        PAYMENT_FAILED = "payment_failed"
        RECOVERED = "recovered"
        BAD_DEBT_PAID = "bad_debt_paid"
        CARD_EXPIRING = "card_expiring"

    class Status(models.TextChoices):
        SCHEDULED = "scheduled"  # waits for its day in the outbox
        SENDING = "sending"  # the day's slot is taken; delivery under way or retrying
        SENT = "sent"
        WITHDRAWN = "withdrawn"  # no longer true before it was sent (paid, step passed)
        SKIPPED = "skipped"  # not sent: no address, shadow mode since, ...
        FAILED = "failed"  # the mail server refused it for good (a bad address)
        SHADOW = "shadow"  # shadow mode: would have been sent, never is

    class Channel(models.TextChoices):
        EMAIL = "email"
        OUTCOME_EVENT = "outcome_event"  # the company's own messaging service sends it

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="notices"
    )
    case = models.ForeignKey(
        DunningCase, null=True, blank=True, on_delete=models.SET_NULL, related_name="notices"
    )
    decision = models.ForeignKey(
        Decision, null=True, blank=True, on_delete=models.SET_NULL, related_name="notices"
    )
    key = models.CharField(max_length=255)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True, default="")
    due_at = models.DateTimeField()
    # What the plan knew (level, dates, amount, decline class), then at sending the whole
    # render context: the admin previews and support reads exactly what went out.
    facts = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    recipient = models.CharField(max_length=255, blank=True, default="")
    language = models.CharField(max_length=8, blank=True, default="")
    subject = models.CharField(max_length=255, blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")  # why withdrawn/skipped
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "key"], name="one_notice_per_key")
        ]
        indexes = [models.Index(fields=["kind", "status"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.status})"


class BadDebtEpisode(models.Model):
    """One stay in bad debt: who entered, why, with what, when, and how they left."""

    class Reason(models.TextChoices):
        MARKED_UNCOLLECTIBLE = "marked_uncollectible"
        LADDER_SUSPENDED = "ladder_suspended"

    class Exit(models.TextChoices):
        PAID = "paid"
        PAID_OUT_OF_BAND = "paid_out_of_band"
        VOIDED = "voided"
        WRITTEN_OFF = "written_off"
        CANCELLED = "cancelled"
        RECOVERED = "recovered"  # left bad debt without the case closing (e.g. grace)

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="bad_debt_episodes"
    )
    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="episodes")
    reason = models.CharField(max_length=32, choices=Reason.choices)
    products = models.JSONField(default=list, help_text="subscription ids in bad debt")
    amount = models.JSONField(default=dict, help_text="minor units per currency at entry")
    entered_at = models.DateTimeField()
    exited_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=32, choices=Exit.choices, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(exited_at__isnull=True),
                name="one_open_bad_debt_episode_per_account",
            )
        ]
        indexes = [models.Index(fields=["entered_at"]), models.Index(fields=["exited_at"])]

    def __str__(self) -> str:
        return f"bad debt {self.reason} since {self.entered_at:%Y-%m-%d}"


class OutcomeEvent(models.Model):
    """A payment outcome event, in order per account, for the rest of the business."""

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="outcome_events"
    )
    sequence = models.PositiveIntegerField(help_text="1, 2, 3 ... per account")
    type = models.CharField(max_length=64)
    payload = models.JSONField()
    decision = models.ForeignKey(
        Decision, null=True, blank=True, on_delete=models.SET_NULL, related_name="outcome_events"
    )
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "sequence"], name="outcome_event_order")
        ]
        ordering = ["account", "sequence"]

    def __str__(self) -> str:
        return f"{self.type} #{self.sequence}"


class SupportAction(models.Model):
    """An audited action by support (or an operator) and what it did."""

    account = models.ForeignKey(
        "billing_events.Account",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="support_actions",
    )
    actor = models.CharField(max_length=255)
    action = models.CharField(max_length=40)
    payload = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "at"])]

    def __str__(self) -> str:
        return f"{self.actor}: {self.action}"


class BadDebtPayment(models.Model):
    """One pay-bad-debt request by Idempotency-Key: a replay returns the first answer."""

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="bad_debt_payments"
    )
    idempotency_key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=16, default="processing")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "idempotency_key"], name="one_payment_per_idempotency_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key} ({self.status})"


class RolloutStage(models.TextChoices):
    OFF = "off", "shadow for everyone"
    ACCOUNTS = "accounts", "chosen accounts only"
    P5 = "5", "5 percent"
    P10 = "10", "10 percent"
    P25 = "25", "25 percent"
    P50 = "50", "50 percent"
    P100 = "100", "everyone"


class RolloutGate(models.Model):
    """Who dunning's consequences are applied to. Changed only through dunning.rollout,
    which audits every change."""

    SINGLETON = 1

    stage = models.CharField(max_length=8, choices=RolloutStage.choices)
    kill_switch = models.BooleanField(default=False, help_text="on: enforce nothing at all")
    # Stripe customer ids enforced at every stage (the "chosen accounts").
    allowlist = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField()
    updated_by = models.CharField(max_length=255)

    def __str__(self) -> str:
        return f"stage {self.stage}{' (KILL SWITCH)' if self.kill_switch else ''}"


class ShadowDecision(models.Model):
    """What dunning would have applied to an account outside the rollout gate."""

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="shadow_decisions"
    )
    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="+")
    decision = models.ForeignKey(Decision, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    stage = models.CharField(max_length=8)
    level = models.CharField(max_length=32)
    would_apply = models.JSONField()
    summary = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["at"])]

    def __str__(self) -> str:
        return f"shadow {self.level} for {self.account_id} at {self.at:%Y-%m-%d %H:%M}"


class DriftScan(models.Model):
    """One run of the drift detector (its start is the next run's watermark)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    candidates = models.PositiveIntegerField(default=0)
    drifted = models.PositiveIntegerField(default=0)
    remediated = models.PositiveIntegerField(default=0)
    deferred = models.PositiveIntegerField(default=0, help_text="left alone by the time guard")

    class Meta:
        indexes = [models.Index(fields=["-started_at"], name="drift_scan_started_idx")]

    def __str__(self) -> str:
        return f"drift scan {self.started_at:%Y-%m-%d %H:%M}: {self.drifted} drifted"


class TestClock(models.Model):
    """The one shared test clock (only read when DUNNING_TEST_CLOCK=1)."""

    SINGLETON = 1

    now = models.DateTimeField()

    def __str__(self) -> str:
        return self.now.isoformat()


class LegacyVerdict(models.Model):
    """What the legacy setup said about an account on go-live day (its binary flags), kept
    to compare with the engine's verdict in the shadow report's "day one" view."""

    stripe_customer_id = models.CharField(max_length=255, unique=True)
    bad_debt = models.BooleanField()
    banned = models.BooleanField()
    since = models.DateTimeField(null=True, blank=True, help_text="flagged since (legacy)")
    source = models.CharField(max_length=255, help_text="the file it was imported from")
    imported_at = models.DateTimeField()

    def __str__(self) -> str:
        flags = [name for name in ("bad_debt", "banned") if getattr(self, name)] or ["clean"]
        return f"legacy {self.stripe_customer_id}: {', '.join(flags)}"


class StripeImportCursor(models.Model):
    """Where an interrupted `import_stripe` continues: one row per import scope (the
    options it ran with), removed when the import finishes."""

    scope = models.CharField(max_length=64, primary_key=True)
    state = models.JSONField(default=dict)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"import cursor {self.scope}: {self.state}"


class PolicyVersion(models.Model):
    """One immutable version of the dunning policy (`dunning.policy_document`). Editing
    makes a new version; only the activation bookkeeping of a row ever changes, through
    `dunning.policy_versions.activate`. Exactly one version is active."""

    number = models.PositiveIntegerField(unique=True)
    # Stored on every decision and case (`policy_version`): version 1 keeps the code
    # default's own label, so decisions made before the store existed point at it.
    label = models.CharField(max_length=32, unique=True)
    document = models.JSONField()
    author = models.CharField(max_length=255)
    reason = models.TextField()
    created_at = models.DateTimeField()
    active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.CharField(max_length=255, blank=True, default="")
    # Computed in shadow next to the version in force (`dunning.policy_shadow`); at most one.
    candidate = models.BooleanField(default=False)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=models.Q(active=True), name="one_active_policy"
            ),
            models.UniqueConstraint(
                fields=["candidate"],
                condition=models.Q(candidate=True),
                name="one_candidate_policy",
            ),
        ]

    def __str__(self) -> str:
        return f"policy v{self.number} ({self.label}){' active' if self.active else ''}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValueError("a policy version is immutable: create a new version instead")
        super().save(*args, **kwargs)


class PolicyShadowDecision(models.Model):
    """Where the candidate policy version, computed in shadow next to the version in force,
    would decide differently for an account. Written by the recompute only when they differ,
    once per distinct difference."""

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="+"
    )
    candidate = models.PositiveIntegerField()  # the candidate version's number
    policy_version = models.CharField(max_length=32)  # the version that decided for real
    at = models.DateTimeField()
    differences = models.JSONField(help_text="[{field, decided, candidate}]")
    decided = models.TextField()  # the real decision's explanation
    candidate_decision = models.TextField()  # the candidate's
    fingerprint = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "candidate", "fingerprint"], name="one_shadow_per_difference"
            )
        ]
        indexes = [models.Index(fields=["candidate", "at"])]

    def __str__(self) -> str:
        return f"v{self.candidate} differs for {self.account_id} at {self.at:%Y-%m-%d %H:%M}"
