"""The baseline the ingest path is measured against: read the body, one INSERT, 200."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


@csrf_exempt
@require_POST
def baseline_insert(request: HttpRequest) -> JsonResponse:
    body = request.body  # read the whole body, as the webhook view does
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_baseline (body_bytes) VALUES (%s)", [len(body)])
    return JsonResponse({"received": True})


@require_GET
def ping(request: HttpRequest) -> HttpResponse:
    """Readiness probe for the benchmark script; touches nothing."""
    return HttpResponse(b"ok", content_type="text/plain")
