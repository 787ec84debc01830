"""Dunning's HTTP API. Views parse input and call one service function."""

from datetime import timedelta

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_events.models import Account
from core import clock
from core.permissions import SupportRole
from dunning import bad_debt_payment, payment_sweeper, rollout, test_clock
from dunning.bad_debt import bad_debt_metrics
from dunning.bad_debt_payment import pay_bad_debt
from dunning.models import BadDebtPayment, RolloutStage


class AdvanceClockSerializer(serializers.Serializer):
    to = serializers.DateTimeField(required=False)
    seconds = serializers.IntegerField(required=False, min_value=1, max_value=10 * 366 * 86400)

    def validate(self, attrs: dict) -> dict:
        if ("to" in attrs) == ("seconds" in attrs):
            raise serializers.ValidationError("give exactly one of 'to' or 'seconds'")
        return attrs


class AdvanceTestClockView(APIView):
    """Advance the test clock and run what became due (only with DUNNING_TEST_CLOCK=1)."""

    def initial(self, request: Request, *args, **kwargs) -> None:
        if not settings.DUNNING_TEST_CLOCK:
            raise Http404  # with the flag off the endpoint does not exist, even to auth
        super().initial(request, *args, **kwargs)

    @extend_schema(request=AdvanceClockSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        body = AdvanceClockSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            report = test_clock.advance(**body.validated_data)
        except test_clock.TestClockError as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {"previous": report.previous, "now": report.now, "ran": report.ran},
            status=status.HTTP_200_OK,
        )


class BadDebtMetricsQuery(serializers.Serializer):
    days = serializers.IntegerField(required=False, default=30, min_value=1, max_value=366)


class BadDebtMetricsView(APIView):
    """Entries and exits per day by reason, currently in bad debt, median time in bad debt."""

    permission_classes = [SupportRole]

    @extend_schema(parameters=[BadDebtMetricsQuery], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = BadDebtMetricsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(bad_debt_metrics(now=clock.now(), days=query.validated_data["days"]))


PAYMENTS_APP = "payments_app"


class PaymentsApp(BasePermission):
    """The customer-facing app's service account (group `payments_app`) or a superuser."""

    message = f"This needs the '{PAYMENTS_APP}' role."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not user.is_authenticated:
            return False
        return user.is_superuser or user.groups.filter(name=PAYMENTS_APP).exists()


class PayBadDebtSerializer(serializers.Serializer):
    invoices = serializers.ListField(
        child=serializers.CharField(max_length=255), min_length=1, max_length=50
    )
    amount = serializers.IntegerField(min_value=1, help_text="minor units")
    currency = serializers.RegexField(r"^[A-Za-z]{3}$")


class PayBadDebtView(APIView):
    """Pay an account's bad debt. Requires an `Idempotency-Key` header: a replay returns
    the first answer and charges once."""

    permission_classes = [PaymentsApp]

    @extend_schema(
        request=PayBadDebtSerializer,
        parameters=[
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)
        ],
        responses={
            200: OpenApiTypes.OBJECT,
            402: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
            422: OpenApiTypes.OBJECT,
        },
    )
    def post(self, request: Request, account_id: int) -> Response:
        get_object_or_404(Account, pk=account_id)
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key or len(key) > 255:
            return Response(
                {"Idempotency-Key": ["this header is required (at most 255 characters)"]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        body = PayBadDebtSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        answer = pay_bad_debt(
            account_id=account_id,
            key=key,
            actor=request.user.get_username(),
            **body.validated_data,
        )
        return Response(answer.body, status=answer.http_status)


def payment_request_view(payment: BadDebtPayment, now) -> dict:
    """One pay-bad-debt request as support sees it: a `stale` one crashed mid-way and waits
    for the sweeper (or for support to release it)."""
    return {
        "id": payment.pk,
        "idempotency_key": payment.idempotency_key,
        "status": payment.status,
        "http_status": payment.http_status,
        "created_at": payment.created_at,
        "processing_seconds": bad_debt_payment.stuck_since(payment, now),
        "stale": payment_sweeper.is_stale(payment, now),
        "request": payment.response.get("request"),
        "response": payment.response,
    }


class BadDebtPaymentsView(APIView):
    """The account's pay-bad-debt requests, newest first (support)."""

    permission_classes = [SupportRole]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, account_id: int) -> Response:
        get_object_or_404(Account, pk=account_id)
        now = clock.now()
        payments = BadDebtPayment.objects.filter(account_id=account_id).order_by(
            "-created_at", "-pk"
        )[:100]
        return Response({"requests": [payment_request_view(p, now) for p in payments]})


class ReleaseSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class ReleaseBadDebtPaymentView(APIView):
    """Release a pay-bad-debt request stuck in processing (support_actions; audited)."""

    permission_classes = [SupportRole]

    @extend_schema(request=ReleaseSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, account_id: int, payment_id: int) -> Response:
        payment = get_object_or_404(BadDebtPayment, pk=payment_id, account_id=account_id)
        body = ReleaseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            payment = bad_debt_payment.release(
                payment_id=payment.pk,
                actor=request.user.get_username(),
                reason=body.validated_data["reason"],
            )
        except bad_debt_payment.NotProcessing as error:
            return Response(
                {"error": "not_processing", "detail": str(error)}, status=status.HTTP_409_CONFLICT
            )
        return Response(payment_request_view(payment, clock.now()))


class RolloutSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=RolloutStage.choices)
    kill_switch = serializers.BooleanField(default=False)
    allowlist = serializers.ListField(
        child=serializers.RegexField(r"^cus_[A-Za-z0-9]+$"), default=list, max_length=10_000
    )
    reason = serializers.CharField(max_length=500, write_only=True)


class RolloutView(APIView):
    """The rollout gate of enforcement: GET it; PUT a new stage, kill switch or allowlist
    (audited, with a reason). Accounts outside the gate run in shadow mode."""

    permission_classes = [SupportRole]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        gate = rollout.current_gate()
        return Response(
            {
                "stage": gate.stage,
                "kill_switch": gate.kill_switch,
                "allowlist": gate.allowlist,
                "updated_at": gate.updated_at,
                "updated_by": gate.updated_by,
            }
        )

    @extend_schema(request=RolloutSerializer, responses=OpenApiTypes.OBJECT)
    def put(self, request: Request) -> Response:
        body = RolloutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rollout.set_gate(actor=request.user.get_username(), **body.validated_data)
        return self.get(request)


class ShadowReportQuery(serializers.Serializer):
    days = serializers.IntegerField(required=False, default=7, min_value=1, max_value=90)


class ShadowReportView(APIView):
    """Shadow decisions (what would have been applied outside the gate), newest first,
    and the customer notices that would have been sent (`would_send`), to review false
    positives before a stage goes up."""

    permission_classes = [SupportRole]

    @extend_schema(parameters=[ShadowReportQuery], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = ShadowReportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        since = clock.now() - timedelta(days=query.validated_data["days"])
        return Response(
            {
                "since": since,
                "decisions": rollout.shadow_report(since=since),
                "would_send": rollout.would_send(since=since),
            }
        )


class DayOneView(APIView):
    """The day-one comparison: accounts the legacy flags as bad debt that the engine would
    not put in bad debt (`legacy_only`) and the reverse (`engine_only`), each with the
    engine's explanation. Legacy flags come from `manage.py import_legacy_flags`."""

    permission_classes = [SupportRole]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        from dunning.legacy import day_one

        return Response(day_one())
