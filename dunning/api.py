"""Dunning's HTTP API. Views parse input and call one service function."""

from django.conf import settings
from django.http import Http404
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dunning import clock, test_clock
from dunning.bad_debt import bad_debt_metrics
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
