"""A customer's Stripe event history, built on a controllable Stripe clock.

Used by the demo, the tests and the benchmarks to write scenarios in Stripe's own event
shapes (see `samples`).
"""

from dataclasses import dataclass, field

from billing_events import samples


@dataclass
class StripeCustomer:
    id: str = "cus_QXg1o8vcGmoR32"
    subscription: str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
    t: int = 1_764_000_000  # Stripe's clock for this scenario (unix seconds)
    events: list[dict] = field(default_factory=list)
    invoice_created: dict[str, int] = field(default_factory=dict)

    def tick(self, seconds: int = 60) -> int:
        self.t += seconds
        return self.t

    def _event(self, type: str, obj: dict, **kwargs) -> dict:
        event = samples.event(type, obj, created=self.t, **kwargs)
        self.events.append(event)
        return event

    @property
    def invoice_id(self) -> str:
        """The renewal invoice every story is about."""
        return f"in_{self.id.removeprefix('cus_')}"

    def invoice_event(self, type: str, invoice_id: str | None = None, **fields) -> dict:
        fields.setdefault("subscription", self.subscription)
        invoice_id = invoice_id or self.invoice_id
        # An invoice keeps the creation time of its first event; status times move on.
        created = self.invoice_created.setdefault(invoice_id, self.t)
        fields.setdefault("status_at", self.t)
        obj = samples.invoice(id=invoice_id, customer=self.id, created=created, **fields)
        return self._event(type, obj)

    def charge_event(
        self, type: str, charge_id: str, invoice_id: str | None = None, **fields
    ) -> dict:
        obj = samples.charge(
            id=charge_id,
            customer=self.id,
            created=self.t,
            invoice=invoice_id or self.invoice_id,
            **fields,
        )
        return self._event(type, obj)

    def payment_intent_failed(
        self, pi_id: str, charge_id: str, invoice_id: str | None = None, **fields
    ) -> dict:
        obj = samples.payment_intent_failed(
            id=pi_id,
            customer=self.id,
            created=self.t,
            charge=charge_id,
            invoice=invoice_id or self.invoice_id,
            **fields,
        )
        return self._event("payment_intent.payment_failed", obj)

    def subscription_event(self, type: str, status: str = "active") -> dict:
        obj = samples.subscription(
            id=self.subscription, customer=self.id, created=self.t, status=status
        )
        return self._event(type, obj)

    def customer_created(
        self, *, email: str | None = None, preferred_locales: list[str] | None = None
    ) -> dict:
        obj = samples.customer(
            id=self.id, created=self.t, email=email, preferred_locales=preferred_locales
        )
        return self._event("customer.created", obj)

    def customer_updated(self, default_payment_method: str) -> dict:
        obj = samples.customer(
            id=self.id, created=self.t, default_payment_method=default_payment_method
        )
        return self._event(
            "customer.updated",
            obj,
            previous_attributes={"invoice_settings": {"default_payment_method": None}},
        )

    def payment_method_event(self, type: str, pm_id: str, previous: dict | None = None) -> dict:
        obj = samples.payment_method(id=pm_id, customer=self.id, created=self.t)
        if previous is None:
            return self._event(type, obj)
        return self._event(type, obj, previous_attributes=previous)

    def source_expiring(self, card_id: str = "card_1", exp_month: int = 12, exp_year: int = 2026):
        card = samples.sample("payment_method")["card"]
        card.update(
            id=card_id, object="card", customer=self.id, exp_month=exp_month, exp_year=exp_year
        )
        return self._event("customer.source.expiring", card)
