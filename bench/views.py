"""The baseline the ingest path is measured against (issue #16): the same server, the
same middleware, one jsonb INSERT of the request's body, 200. bench/ingest.py creates
the table (BASELINE_TABLE_SQL) in the bench's own database."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


@csrf_exempt
@require_POST
def baseline_insert(request: HttpRequest) -> JsonResponse:
    # PostgreSQL parses the body into jsonb: the floor for "store what was posted".
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_baseline (body) VALUES (%s::jsonb)", [request.body.decode()]
        )
    return JsonResponse({"received": True})


@require_GET
def ping(request: HttpRequest) -> HttpResponse:
    """Readiness probe for the benchmark script; touches nothing."""
    return HttpResponse(b"ok", content_type="text/plain")
