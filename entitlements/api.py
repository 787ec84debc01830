from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_events.models import Account
from core.permissions import SupportRole
from entitlements.services import effective_entitlements

RESTRICTION_FIELDS = {
    "code": serializers.CharField(),
    "level": serializers.CharField(),
    "reason": serializers.CharField(),
    "since": serializers.DateTimeField(),
}


class AccountEntitlementsView(APIView):
    """Effective features of an account and the restrictions in force, with reasons."""

    permission_classes = [SupportRole]

    @extend_schema(
        responses=inline_serializer(
            "Entitlements",
            {
                "account_id": serializers.IntegerField(),
                "features": serializers.ListField(child=serializers.CharField()),
                "restrictions": inline_serializer("Restriction", RESTRICTION_FIELDS, many=True),
            },
        )
    )
    def get(self, request: Request, account_id: int) -> Response:
        get_object_or_404(Account, pk=account_id)
        return Response({"account_id": account_id, **effective_entitlements(account_id=account_id)})
