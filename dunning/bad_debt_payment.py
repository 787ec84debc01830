"""Paying off bad debt: its own guarded path, separate from the regular collection loop.

    pay_bad_debt(account, key, invoices, amount, currency)
      1. under the account lock: replay a known Idempotency-Key; check the account is in
         bad debt, the invoices are its unpaid bad-debt invoices, the amount matches, and no
         other payment is in flight; record the request as `processing`; commit
      2. no lock held: pay each invoice through the gateway (one idempotency key each)
      3. record the outcome in the mirror and on the request, then hand the account to the
         engine as BAD_DEBT_PAID: it lifts the consequences and closes the episode as paid

It never touches the retry schedule: the engine re-plans from the stores.

If step 2 or 3 crashes (an unexpected gateway exception, a database fault, a killed
process) the outcome at Stripe is unknown and the request stays `processing`, holding the
account's other requests off. The sweeper (`dunning.payment_sweeper`) looks such a request
up at Stripe once it is stale and finishes it as paid or releases it; support sees it in the
admin and the API and can release it by hand (`release`, audited).
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction

from billing_events import services as billing
from billing_events.models import Invoice
from core import clock
from core.locks import lock_account
from dunning.engine import recompute_within
from dunning.models import BadDebtEpisode, BadDebtPayment, CaseInvoice, SupportAction
from dunning.triggers import Trigger, TriggerKind

logger = logging.getLogger(__name__)

PROCESSING = "processing"
RELEASED = "released"


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
        lock_account(account_id)
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
                    # Kept while processing: what the sweeper needs to look it up.
                    response={
                        "status": PROCESSING,
                        "request": {
                            "invoices": sorted(invoices),
                            "amount": amount,
                            "currency": currency.lower(),
                        },
                    },
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
    try:
        gateway = billing.gateway()
        results = {
            invoice_id: gateway.pay_invoice(
                invoice_id=invoice_id, idempotency_key=f"bad-debt:{account_id}:{key}:{invoice_id}"
            )
            for invoice_id in sorted(invoices)
        }
        return settle(claimed.pk, results, actor=actor)
    except Exception:  # whatever broke, Stripe may have charged: never a 500
        logger.exception("event=bad_debt_payment_crashed payment=%s", claimed.pk)
        return PaymentAnswer(
            502,
            {
                "status": PROCESSING,
                "error": "payment_outcome_unknown",
                "detail": "the outcome is being checked with Stripe; repeat this request "
                "with the same Idempotency-Key to read it",
            },
        )


def _answer_for(results: dict, amount: int, currency: str) -> PaymentAnswer:
    paid = [i for i, r in results.items() if r.outcome == "succeeded"]
    declined = {i: r.decline_code for i, r in results.items() if r.outcome == "declined"}
    errors = {i: r.message for i, r in results.items() if r.outcome == "error"}
    if len(paid) == len(results):
        return PaymentAnswer(
            200, {"status": "paid", "invoices": paid, "amount": amount, "currency": currency}
        )
    if declined:
        return PaymentAnswer(402, {"status": "declined", "paid": paid, "declined": declined})
    return PaymentAnswer(502, {"status": "error", "paid": paid, "errors": errors})


def settle(payment_id: int, results: dict, *, actor: str) -> PaymentAnswer:
    """Record what the gateway said for each invoice of a processing request, answer it for
    good, and hand a paid account to the engine, all in one transaction. A request settled
    meanwhile (the sweeper or support got there first) keeps its answer."""
    now = clock.now()
    with transaction.atomic():
        payment = BadDebtPayment.objects.select_for_update().get(pk=payment_id)
        if payment.status != PROCESSING:
            return PaymentAnswer(payment.http_status or 409, payment.response)
        request = payment.response["request"]
        for invoice_id, result in results.items():
            billing.record_retry_result(
                account_id=payment.account_id,
                stripe_invoice_id=invoice_id,
                attempt_key=f"bad-debt:{payment.pk}:{invoice_id}",
                result=billing.result_as_dict(result),
                at=now,
            )
        answer = _answer_for(results, request["amount"], request["currency"])
        payment.status = answer.body["status"]
        payment.http_status = answer.http_status
        payment.response = answer.body
        payment.save(update_fields=["status", "http_status", "response"])
        SupportAction.objects.create(
            account_id=payment.account_id,
            actor=actor,
            action="pay_bad_debt",
            payload=request,
            result=answer.body,
            at=now,
        )
        if any(r.outcome == "succeeded" for r in results.values()):
            # In the same transaction as the payment recorded: no moment where the invoice
            # is paid and the bad-debt episode still open (a concurrent request would then
            # be told its invoice is not in bad debt, 422, instead of "not in bad debt").
            recompute_within(
                Trigger(
                    TriggerKind.BAD_DEBT_PAID, payment.account_id, source=f"pay-bad-debt:{actor}"
                )
            )
    return answer


class NotProcessing(ValueError):
    """Only a request still processing can be released."""


def release(*, payment_id: int, actor: str, reason: str) -> BadDebtPayment:
    """Support's way out for a request stuck in processing: answer it as released (a replay
    of its key says so), free the account for a new request, and audit who did it and why.
    Nothing is charged or refunded; a payment Stripe did take still arrives as a webhook."""
    now = clock.now()
    with transaction.atomic():
        payment = BadDebtPayment.objects.select_for_update().get(pk=payment_id)
        if payment.status != PROCESSING:
            raise NotProcessing(f"request {payment.pk} is {payment.status}, not processing")
        request = payment.response.get("request", {})
        body = {
            "status": RELEASED,
            "error": "payment_released",
            "detail": "support released this request; use a new Idempotency-Key to pay",
        }
        payment.status = RELEASED
        payment.http_status = 409
        payment.response = body
        payment.save(update_fields=["status", "http_status", "response"])
        SupportAction.objects.create(
            account_id=payment.account_id,
            actor=actor,
            action="release_bad_debt_payment",
            payload={"payment": payment.pk, "reason": reason, "request": request},
            result=body,
            at=now,
        )
    return payment


def stuck_since(payment: BadDebtPayment, now: datetime) -> float:
    """Seconds a processing request has been waiting (0 for a settled one)."""
    if payment.status != PROCESSING:
        return 0.0
    return max((now - payment.created_at).total_seconds(), 0.0)
