"""Amounts for people to read: Stripe's minor units shown in the customer's language."""

from decimal import Decimal

from django.utils import numberformat
from django.utils.formats import get_format
from django.utils.translation import pgettext

# Stripe's zero-decimal currencies: the amount is already in whole units (500 JPY is 500).
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# Stripe counts these in thousandths (5.120 KWD is 5120), not hundredths.
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def exponent(currency: str) -> int:
    """How many digits of the minor-unit amount are decimals in `currency`."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def format_amount(amount: int, currency: str) -> str:
    """`amount` minor units of `currency` as the active language writes money.

    The currency is always its ISO code, never a symbol: "$" alone would not tell a
    customer US dollars from Canadian ones. Where the code goes is a translation
    ("EUR 12.34" in English, "12,34 EUR" in French), so a new language brings its own order;
    the separators are Django's for that language.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"amount must be an integer of minor units, not {amount!r}")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise ValueError(f"currency must be a three-letter ISO code, not {currency!r}")
    places = exponent(currency)
    number = numberformat.format(
        Decimal(amount).scaleb(-places),
        get_format("DECIMAL_SEPARATOR"),
        decimal_pos=places,
        grouping=3,
        thousand_sep=get_format("THOUSAND_SEPARATOR"),
        force_grouping=True,
    )
    return pgettext("money: %(currency)s is an ISO code like EUR", "%(currency)s %(amount)s") % {
        "currency": currency.upper(),
        "amount": number,
    }
