from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing_events.ingest import ingest_stripe_webhook


def content_type_problem(request: HttpRequest) -> str | None:
    """Stripe sends `application/json; charset=utf-8`; anything else is not a Stripe event."""
    if request.content_type.lower() != "application/json":
        return "content type must be application/json"
    charset = request.content_params.get("charset")
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        return "content type charset must be utf-8"
    return None


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    # Refuse an oversized body before reading it into memory.
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > settings.WEBHOOK_MAX_BODY_BYTES:
        return JsonResponse({"error": "payload too large"}, status=413)
    if problem := content_type_problem(request):
        return JsonResponse({"error": problem}, status=415)
    outcome = ingest_stripe_webhook(
        payload=request.body, signature_header=request.headers.get("Stripe-Signature")
    )
    return JsonResponse(outcome.body, status=outcome.http_status)
