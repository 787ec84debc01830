"""Dunning's HTTP API. Views parse input and call one service function."""

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_events.models import Account
from dunning import clock, test_clock
from dunning.bad_debt import bad_debt_metrics
from dunning.bad_debt_payment import pay_bad_debt
from dunning.support_api.permissions import SupportRole


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
