"""The policy versions API under /api/v1/policies/: list, read, validate, create, diff,
activate, and the candidate run in shadow. Reads need a support role or `policy_admin`;
every change needs `policy_admin` (`support_actions` cannot change policy). Views parse
input and call dunning.policy_versions.
"""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import clock
from core.permissions import can_read
from dunning import policy_shadow, policy_versions
from dunning.models import PolicyVersion
from dunning.policy_document import InvalidPolicy, diff_documents, diff_lines, validate_document

POLICY_ADMIN = "policy_admin"


def can_change_policy(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or user.groups.filter(name=POLICY_ADMIN).exists()


class PolicyRole(BasePermission):
    """Reads: a support role or `policy_admin`; anything else: `policy_admin`."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        self.message = f"This needs the '{POLICY_ADMIN}' role."
        if request.method in SAFE_METHODS:
            return can_read(request.user) or can_change_policy(request.user)
        return can_change_policy(request.user)


def version_view(version: PolicyVersion, *, document: bool = False) -> dict:
    body = {
        "number": version.number,
        "label": version.label,
        "author": version.author,
        "reason": version.reason,
        "created_at": version.created_at,
        "active": version.active,
        "activated_at": version.activated_at,
        "activated_by": version.activated_by,
    }
    if document:
        body["document"] = version.document
    return body


def invalid(errors: list) -> Response:
    return Response(
        {"error": "invalid_policy", "errors": [e.as_dict() for e in errors]},
        status=status.HTTP_400_BAD_REQUEST,
    )


def _changes(old: PolicyVersion, new_document: dict) -> dict:
    changes = diff_documents(old.document, new_document)
    return {"from": old.number, "changes": changes, "text": diff_lines(changes)}


class CreatePolicySerializer(serializers.Serializer):
    document = serializers.JSONField()
    reason = serializers.CharField(max_length=2000)


class PolicyListView(APIView):
    """GET: every version, newest first (version 1, the code default, is stored on first
    use). POST: a new inactive version from a document, validated (400 names each path)."""

    permission_classes = [PolicyRole]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        policy_versions.ensure_initial_version()
        return Response({"results": [version_view(v) for v in PolicyVersion.objects.all()]})

    @extend_schema(request=CreatePolicySerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        body = CreatePolicySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            version = policy_versions.create_version(
                author=request.user.get_username(), **body.validated_data
            )
        except InvalidPolicy as error:
            return invalid(error.errors)
        active = PolicyVersion.objects.get(active=True)
        return Response(
            {**version_view(version), "diff_from_active": _changes(active, version.document)},
            status=status.HTTP_201_CREATED,
        )


class ValidatePolicySerializer(serializers.Serializer):
    document = serializers.JSONField()


class PolicyValidateView(APIView):
    """Validate a document without storing it; answers its diff from the active version."""

    permission_classes = [PolicyRole]

    @extend_schema(request=ValidatePolicySerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        body = ValidatePolicySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        document = body.validated_data["document"]
        errors = validate_document(document)
        if errors:
            return invalid(errors)
        policy_versions.ensure_initial_version()
        active = PolicyVersion.objects.get(active=True)
        return Response({"valid": True, "diff_from_active": _changes(active, document)})


class PolicyDetailView(APIView):
    permission_classes = [PolicyRole]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, number: int) -> Response:
        policy_versions.ensure_initial_version()
        version = get_object_or_404(PolicyVersion, number=number)
        return Response(version_view(version, document=True))


class DiffQuery(serializers.Serializer):
    old = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    new = serializers.IntegerField(min_value=1, max_value=2**31 - 1)


class PolicyDiffView(APIView):
    """GET ?old=1&new=2: every changed path of the document, old value → new."""

    permission_classes = [PolicyRole]

    @extend_schema(
        parameters=[
            OpenApiParameter("old", int, required=True),
            OpenApiParameter("new", int, required=True),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        query = DiffQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        policy_versions.ensure_initial_version()
        old = get_object_or_404(PolicyVersion, number=query.validated_data["old"])
        new = get_object_or_404(PolicyVersion, number=query.validated_data["new"])
        changes = policy_versions.diff_versions(old, new)
        return Response(
            {"old": old.number, "new": new.number, "changes": changes, "text": diff_lines(changes)}
        )


class ActivateSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)
    migrate_open_cases = serializers.BooleanField(default=False)


class PolicyActivateView(APIView):
    """Make a version the active one (audited). Cases already in dunning finish on their
    own version unless `migrate_open_cases` is true."""

    permission_classes = [PolicyRole]

    @extend_schema(request=ActivateSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, number: int) -> Response:
        body = ActivateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        policy_versions.ensure_initial_version()
        get_object_or_404(PolicyVersion, number=number)
        done = policy_versions.activate(
            number=number, actor=request.user.get_username(), **body.validated_data
        )
        return Response(
            {
                **version_view(done.version),
                "previous": done.previous,
                "migrated_cases": done.migrated_cases,
            }
        )


class CandidateSerializer(serializers.Serializer):
    number = serializers.IntegerField(min_value=1, max_value=2**31 - 1, allow_null=True)
    reason = serializers.CharField(max_length=2000)


class CandidateQuery(serializers.Serializer):
    days = serializers.IntegerField(required=False, default=7, min_value=1, max_value=90)


class PolicyCandidateView(APIView):
    """GET: the candidate version run in shadow and, per account, the latest place where it
    would decide differently (`?days=7`). PUT `{"number": n | null, "reason": …}`: choose or
    stop the candidate (audited)."""

    permission_classes = [PolicyRole]

    @extend_schema(parameters=[CandidateQuery], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = CandidateQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        since = clock.now() - timedelta(days=query.validated_data["days"])
        candidate = PolicyVersion.objects.filter(candidate=True).first()
        if candidate is None:
            return Response({"candidate": None, "since": since, "differences": []})
        differences = policy_shadow.report(candidate=candidate.number, since=since)
        return Response({"candidate": candidate.number, "since": since, "differences": differences})

    @extend_schema(request=CandidateSerializer, responses=OpenApiTypes.OBJECT)
    def put(self, request: Request) -> Response:
        body = CandidateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        number = body.validated_data["number"]
        if number is not None:
            get_object_or_404(PolicyVersion, number=number)
        try:
            policy_versions.set_candidate(
                number=number,
                actor=request.user.get_username(),
                reason=body.validated_data["reason"],
            )
        except ValueError as error:
            return Response({"error": "active_version", "detail": str(error)}, status=400)
        return Response({"candidate": number})
