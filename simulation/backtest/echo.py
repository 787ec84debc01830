"""Stripe's events about what a replay did: the charge and the invoice after each retry the
replay's gateway answered, the subscription deleted after each cancellation, the invoice
voided after each revert. Built from the stored invoice objects, so the replay's events
carry the same lines, amounts and subscription as Stripe's did."""

import copy
import itertools
import json
from datetime import datetime

from billing_events import samples
from billing_events.models import Invoice
from dunning.models import OutboxItem
from simulation.backtest.gateway import Answer
from simulation.backtest.history import StoredEvent


class Echoes:
    def __init__(self) -> None:
        # The latest object Stripe sent for each invoice and subscription, as of the
        # replay's clock: `seen` is told of every stored event as it is posted.
        self.invoices: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.first_attempts: dict[str, int] = {}
        self.ids = itertools.count(1)
        self.last_cancel_pk = 0
        self.last_revert_pk = 0

    def seen(self, event: StoredEvent) -> None:
        if event.type.startswith(("invoice.", "customer.subscription.")):
            obj = json.loads(event.body)["data"]["object"]
            kept = self.invoices if event.type.startswith("invoice.") else self.subscriptions
            kept[obj["id"]] = obj
            if event.type.startswith("invoice."):
                self.first_attempts.setdefault(obj["id"], obj.get("attempt_count") or 1)

    def event(self, type: str, obj: dict, at: datetime) -> dict:
        return samples.event(
            type, obj, created=int(at.timestamp()), id=f"evt_backtest{next(self.ids):010d}"
        )

    def after_retry(self, at: datetime, invoice_id: str, attempt: int, answer: Answer) -> list:
        invoice = copy.deepcopy(self._invoice(invoice_id))
        ts = int(at.timestamp())
        status = "succeeded" if answer.succeeded else "failed"
        charge = samples.charge(
            # The simulated gateway's own charge id: the service recorded the retry's
            # result under it, and a second id would count as a second attempt.
            id=f"ch_sim_{invoice_id}_{attempt}",
            customer=invoice["customer"],
            created=ts,
            invoice=invoice_id,
            status=status,
            amount=invoice["amount_due"],
            currency=invoice["currency"],
            decline_code=answer.decline_code or None,
        )
        # Stripe's count for the replay: the attempts first seen, and the replay's retries
        # (a later stored object carries the original run's retries instead).
        invoice["attempt_count"] = self.first_attempts.get(invoice_id, 1) + attempt
        invoice["attempted"] = True
        # The stored object may be a later state (paid by the customer after this retry):
        # the echo says what this retry left, open or paid by it.
        transitions = invoice.setdefault("status_transitions", {})
        if answer.succeeded:
            invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
            transitions["paid_at"] = ts
        else:
            invoice.update(status="open", amount_paid=0, amount_remaining=invoice["amount_due"])
            transitions["paid_at"] = None
        invoice.update(paid_out_of_band=False)
        self.invoices[invoice_id] = invoice
        kind = "invoice.paid" if answer.succeeded else "invoice.payment_failed"
        return [
            self.event(f"charge.{status}", charge, at),
            self.event(kind, invoice, at),
        ]

    def _invoice(self, invoice_id: str) -> dict:
        if invoice_id not in self.invoices:  # known to the mirror only: rebuilt from it
            row = Invoice.objects.select_related("account").get(stripe_invoice_id=invoice_id)
            self.invoices[invoice_id] = samples.invoice(
                id=invoice_id,
                customer=row.account.stripe_customer_id,
                created=int(row.stripe_created.timestamp()),
                amount_due=row.amount_due,
                currency=row.currency,
                billing_reason=row.billing_reason,
                attempt_count=row.attempt_count,
                subscription=row.stripe_subscription_id or None,
            )
        return self.invoices[invoice_id]

    def after_actions(self) -> list[tuple[datetime, dict]]:
        """Events for the cancellations and reverts the replay's outbox completed since the
        last call."""
        out = []
        # Both kinds in one read (each walk step asks): cancellations first, then reverts.
        done = list(
            OutboxItem.objects.filter(
                status=OutboxItem.Status.DONE,
                kind__in=[OutboxItem.Kind.CANCEL_SUBSCRIPTION, OutboxItem.Kind.REVERT_UPGRADE],
                pk__gt=min(self.last_cancel_pk, self.last_revert_pk),
            )
            .order_by("pk")
            .values_list("pk", "kind", "payload", "result", "completed_at")
        )
        for pk, payload, completed_at in (
            (pk, payload, completed_at)
            for pk, kind, payload, _, completed_at in done
            if kind == OutboxItem.Kind.CANCEL_SUBSCRIPTION and pk > self.last_cancel_pk
        ):
            self.last_cancel_pk = pk
            sub_id = payload["subscription_id"]
            obj = copy.deepcopy(self.subscriptions.get(sub_id)) or samples.subscription(
                id=sub_id, customer="", created=int(completed_at.timestamp())
            )
            ts = int(completed_at.timestamp())
            obj.update(status="canceled", canceled_at=ts, ended_at=ts)
            out.append(
                (completed_at, self.event("customer.subscription.deleted", obj, completed_at))
            )
        for pk, result, completed_at in (
            (pk, result, completed_at)
            for pk, kind, _, result, completed_at in done
            if kind == OutboxItem.Kind.REVERT_UPGRADE and pk > self.last_revert_pk
        ):
            self.last_revert_pk = pk
            for invoice_id in result.get("voided", []):
                invoice = self._invoice(invoice_id)
                invoice.update(status="void", amount_remaining=0)
                invoice.setdefault("status_transitions", {})["voided_at"] = int(
                    completed_at.timestamp()
                )
                event = self.event("invoice.voided", copy.deepcopy(invoice), completed_at)
                out.append((completed_at, event))
        return out
