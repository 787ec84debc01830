"""NinjaPanel's support API. Each view parses its input, calls one selector or one
`dunning.support` service with ids and the acting user's name, and renders the result."""

from collections.abc import Callable

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_events.models import Account
from core.permissions import SupportRole
from dunning import support
from dunning.diff import Outcome
from dunning.support_api import selectors
from dunning.support_api.parsers import StrictJSONParser
from dunning.support_api.serializers import (
    AccountDunningSerializer,
    AccountQuerySerializer,
    AccountSerializer,
    ActionResultSerializer,
    ErrorSerializer,
    HoldResultSerializer,
    HoldSerializer,
    NoticeQuerySerializer,
    NoticeSerializer,
    TimelineQuerySerializer,
    TimelineSerializer,
    action_result,
)

TAG = "support"
ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="no or invalid token"),
    403: OpenApiResponse(ErrorSerializer, description="the user lacks the support role"),
}
NOT_FOUND = {404: OpenApiResponse(ErrorSerializer, description="unknown account")}


class NoOpenCaseConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The account has no open dunning case."
    default_code = "no_open_case"


def validated_query(request: Request, serializer_class: type | None) -> dict:
    """The query parameters a GET declares, validated. An unknown or repeated parameter is a
    400 naming it: silently ignoring one (a misspelt filter) lists every account, and support
    would act on the wrong one."""
    allowed = set(serializer_class().fields) if serializer_class else set()
    errors = {}
    for name, values in request.query_params.lists():
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) or "no query parameters"
            errors[name] = [f"Unknown query parameter; this endpoint takes: {takes}."]
        elif len(values) > 1:
            errors[name] = ["Give this query parameter once."]
    if errors:
        raise ValidationError(errors)
    if serializer_class is None:
        return {}
    # A plain dict: from a QueryDict DRF reads `?email=` as "not given", and the filter
    # would silently drop out.
    query = serializer_class(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    return query.validated_data


class SupportView(APIView):
    """Support roles on every endpoint; domain errors become 404 and 409; a GET's query
    parameters are validated (`query_serializer_class`) once the caller is authorized."""

    permission_classes = [IsAuthenticated, SupportRole]
    parser_classes = [StrictJSONParser, FormParser, MultiPartParser]
    query_serializer_class: type[serializers.Serializer] | None = None
    query: dict

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self.query = {}
        if request.method == "GET":
            self.query = validated_query(request, self.query_serializer_class)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, Account.DoesNotExist):
            exc = NotFound("No account with this id.")
        elif isinstance(exc, support.NoOpenCase):
            exc = NoOpenCaseConflict(
                "The account has no open dunning case: there is nothing to pause or hold."
            )
        return super().handle_exception(exc)


class AccountPagination(PageNumberPagination):
    page_size = 50


BAD_QUERY = {
    400: OpenApiResponse(
        description="an unknown, repeated or malformed query parameter, keyed by its name: "
        '`{"emial": ["Unknown query parameter; this endpoint takes: email, page, '
        'stripe_customer."]}`'
    )
}


@extend_schema(
    tags=[TAG],
    summary="Find accounts",
    description="Accounts with their open case, if any. `?stripe_customer=cus_...` and "
    "`?email=` (exact, case-insensitive) find one; both together must both match. An "
    "unknown parameter is a 400, never ignored.",
    parameters=[AccountQuerySerializer],
    responses={200: AccountSerializer(many=True), **BAD_QUERY, **ERRORS},
)
class AccountListView(SupportView, ListAPIView):
    serializer_class = AccountSerializer
    pagination_class = AccountPagination
    query_serializer_class = AccountQuerySerializer

    def get_queryset(self):
        return selectors.accounts(
            stripe_customer=self.query.get("stripe_customer"), email=self.query.get("email")
        )


class AccountDunningView(SupportView):
    @extend_schema(
        tags=[TAG],
        summary="An account's dunning",
        description="The open case (else the latest one; state null when the account never "
        "had one), its unpaid invoices, the next retry, the restrictions in force, the "
        "explanation of the newest decision and the open bad-debt episode.",
        responses={200: AccountDunningSerializer, **BAD_QUERY, **ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, account_id: int) -> Response:
        dunning = selectors.account_dunning(account_id=account_id)
        return Response(AccountDunningSerializer(dunning).data)


class TimelineView(SupportView):
    query_serializer_class = TimelineQuerySerializer

    @extend_schema(
        tags=[TAG],
        summary="An account's timeline",
        description="Webhook events, payment attempts, support actions, decisions, case "
        "transitions, outcome events, side effects and customer notices (`notice`: placed "
        "when sent, else taken for sending, else due), oldest first: the newest `limit` "
        "entries (500 unless given).",
        parameters=[TimelineQuerySerializer],
        responses={200: TimelineSerializer, **BAD_QUERY, **ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, account_id: int) -> Response:
        timeline = selectors.account_timeline(account_id=account_id, **self.query)
        return Response(TimelineSerializer(timeline).data)


@extend_schema(
    tags=[TAG],
    summary="An account's customer notices",
    description="Every message the engine decided the customer should get and what became "
    "of it (scheduled, sent, withdrawn, skipped, failed, shadow), newest first: by when it "
    "was sent, else taken for sending, else due (a scheduled one can lie in the future). "
    "Pages of 50 (`?page=`).",
    parameters=[NoticeQuerySerializer],
    responses={200: NoticeSerializer(many=True), **BAD_QUERY, **ERRORS, **NOT_FOUND},
)
class NotificationListView(SupportView, ListAPIView):
    serializer_class = NoticeSerializer
    pagination_class = AccountPagination
    query_serializer_class = NoticeQuerySerializer

    def get_queryset(self):
        return selectors.account_notices(account_id=self.kwargs["account_id"])


class RecomputeView(SupportView):
    @extend_schema(
        tags=[TAG],
        summary="Recompute now (NINJAPANEL_BUTTON)",
        description="A full recompute of the account. Answers the diff it applied: empty "
        "`changes` (and no decision) when the account was already up to date. Audited.",
        request=None,
        responses={200: ActionResultSerializer, **ERRORS, **NOT_FOUND},
    )
    def post(self, request: Request, account_id: int) -> Response:
        actor = request.user.get_username()
        outcome = support.recompute(account_id=account_id, actor=actor)
        result = action_result(action="recompute", actor=actor, outcome=outcome)
        return Response(ActionResultSerializer(result).data)


class HoldView(SupportView):
    """Pause and extend-grace: the same body, a different service."""

    action: str
    service: Callable[..., Outcome]

    def post(self, request: Request, account_id: int) -> Response:
        body = HoldSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        actor = request.user.get_username()
        outcome = self.service(account_id=account_id, actor=actor, **body.validated_data)
        result = action_result(
            action=self.action, actor=actor, outcome=outcome, **body.validated_data
        )
        return Response(HoldResultSerializer(result).data)


HOLD_RESPONSES = {
    200: HoldResultSerializer,
    400: OpenApiResponse(description="field errors, e.g. `until` in the past or no reason"),
    **ERRORS,
    **NOT_FOUND,
    409: OpenApiResponse(ErrorSerializer, description="the account has no open dunning case"),
}


@extend_schema_view(
    post=extend_schema(
        tags=[TAG],
        summary="Pause dunning",
        description="No retries and no escalation until `until`. Audited with the actor.",
        request=HoldSerializer,
        responses=HOLD_RESPONSES,
    )
)
class PauseView(HoldView):
    action = "pause_dunning"
    service = staticmethod(support.pause_dunning)


@extend_schema_view(
    post=extend_schema(
        tags=[TAG],
        summary="Extend grace",
        description="No escalation until `until`; retries go on. Audited with the actor.",
        request=HoldSerializer,
        responses=HOLD_RESPONSES,
    )
)
class ExtendGraceView(HoldView):
    action = "extend_grace"
    service = staticmethod(support.extend_grace)
