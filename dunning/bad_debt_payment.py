"""Paying off bad debt: its own guarded path, separate from the regular collection loop.

    pay_bad_debt(account, key, invoices, amount, currency)
      1. under the account lock: replay a known Idempotency-Key; check the account is in
         bad debt, the invoices are its unpaid bad-debt invoices, the amount matches, and no
         other payment is in flight; record the request as `processing`; commit
      2. no lock held: pay each invoice through the gateway (one idempotency key each)
      3. record the outcome in the mirror and on the request, then hand the account to the
         engine as BAD_DEBT_PAID: it lifts the consequences and closes the episode as paid

It never touches the retry schedule: the engine re-plans from the stores.
"""

import hashlib
import json
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from billing_events import services as billing
from billing_events.models import Account, Invoice
from dunning import clock
from dunning.engine import handle
from dunning.models import BadDebtEpisode, BadDebtPayment, CaseInvoice, SupportAction
from dunning.triggers import Trigger, TriggerKind


@dataclass(frozen=True)
class PaymentAnswer:
    http_status: int
    body: dict


def _fingerprint(invoices: list[str], amount: int, currency: str) -> str:
    raw = json.dumps([sorted(invoices), amount, currency.lower()])
    return hashlib.sha256(raw.encode()).hexdigest()


def _refuse(status: int, code: str, message: str) -> PaymentAnswer:
    return PaymentAnswer(status, {"error": code, "detail": message})


def _claim(
    *, account_id: int, key: str, invoices: list[str], amount: int, currency: str
) -> BadDebtPayment | PaymentAnswer:
    fingerprint = _fingerprint(invoices, amount, currency)
    with transaction.atomic():
        Account.objects.select_for_update().get(pk=account_id)
        earlier = BadDebtPayment.objects.filter(account_id=account_id, idempotency_key=key).first()
        if earlier is not None:
            if earlier.request_fingerprint != fingerprint:
                return _refuse(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for another request",
                )
            if earlier.status == "processing":
                return _refuse(409, "in_progress", "this request is still being processed")
            return PaymentAnswer(earlier.http_status, earlier.response)
        episode = BadDebtEpisode.objects.filter(
            account_id=account_id, exited_at__isnull=True
        ).first()
        if episode is None:
            return _refuse(409, "not_in_bad_debt", "the account is not in bad debt")
        if BadDebtPayment.objects.filter(account_id=account_id, status="processing").exists():
            return _refuse(409, "payment_in_progress", "another bad-debt payment is in flight")
        owed = {
            row["stripe_invoice_id"]: row
            for row in Invoice.objects.filter(
                account_id=account_id,
                status__in=[Invoice.Status.OPEN, Invoice.Status.UNCOLLECTIBLE],
                pk__in=CaseInvoice.objects.filter(case_id=episode.case_id).values("invoice_id"),
            ).values("stripe_invoice_id", "amount_remaining", "currency")
        }
        unknown = sorted(set(invoices) - set(owed))
        if unknown:
            return _refuse(
                422,
                "invoices_not_in_bad_debt",
                f"not unpaid bad-debt invoices of this account: {', '.join(unknown)}",
            )
        currencies = {owed[i]["currency"] for i in invoices}
        total = sum(owed[i]["amount_remaining"] for i in invoices)
        if currencies != {currency.lower()} or total != amount:
            return _refuse(
                422,
                "amount_mismatch",
                f"the named invoices owe {total} {'/'.join(sorted(currencies))}, "
                f"not {amount} {currency.lower()}",
            )
        try:
            with transaction.atomic():
                return BadDebtPayment.objects.create(
                    account_id=account_id,
                    idempotency_key=key,
                    request_fingerprint=fingerprint,
                    created_at=clock.now(),
                )
        except IntegrityError:
            return _refuse(409, "in_progress", "this request is still being processed")


def pay_bad_debt(
    *, account_id: int, key: str, invoices: list[str], amount: int, currency: str, actor: str
) -> PaymentAnswer:
    claimed = _claim(
        account_id=account_id, key=key, invoices=invoices, amount=amount, currency=currency
    )
    if isinstance(claimed, PaymentAnswer):
        return claimed
    gateway = billing.gateway()
    results = {
        invoice_id: gateway.pay_invoice(
            invoice_id=invoice_id, idempotency_key=f"bad-debt:{account_id}:{key}:{invoice_id}"
        )
        for invoice_id in sorted(invoices)
    }
    now = clock.now()
    with transaction.atomic():
        for invoice_id, result in results.items():
            billing.record_retry_result(
                account_id=account_id,
                stripe_invoice_id=invoice_id,
                attempt_key=f"bad-debt:{claimed.pk}:{invoice_id}",
                result=billing.result_as_dict(result),
                at=now,
            )
        paid = [i for i, r in results.items() if r.outcome == "succeeded"]
        declined = {i: r.decline_code for i, r in results.items() if r.outcome == "declined"}
        errors = {i: r.message for i, r in results.items() if r.outcome == "error"}
        if len(paid) == len(results):
            answer = PaymentAnswer(
                200,
                {
                    "status": "paid",
                    "invoices": paid,
                    "amount": amount,
                    "currency": currency.lower(),
                },
            )
        elif declined:
            answer = PaymentAnswer(402, {"status": "declined", "paid": paid, "declined": declined})
        else:
            answer = PaymentAnswer(502, {"status": "error", "paid": paid, "errors": errors})
        claimed.status = answer.body["status"]
        claimed.http_status = answer.http_status
        claimed.response = answer.body
        claimed.save(update_fields=["status", "http_status", "response"])
        SupportAction.objects.create(
            account_id=account_id,
            actor=actor,
            action="pay_bad_debt",
            payload={"invoices": sorted(invoices), "amount": amount, "currency": currency.lower()},
            result=answer.body,
            at=now,
        )
    if paid:
        handle(Trigger(TriggerKind.BAD_DEBT_PAID, account_id, source=f"pay-bad-debt:{actor}"))
    return answer
