from django.urls import path

from dunning import api, policy_api

urlpatterns = [
    path("rollout/", api.RolloutView.as_view(), name="rollout"),
    path("rollout/shadow-decisions/", api.ShadowReportView.as_view(), name="rollout-shadow-report"),
    path("rollout/day-one/", api.DayOneView.as_view(), name="rollout-day-one"),
    path(
        "accounts/<int:account_id>/pay-bad-debt/",
        api.PayBadDebtView.as_view(),
        name="pay-bad-debt",
    ),
    path(
        "accounts/<int:account_id>/bad-debt-payments/",
        api.BadDebtPaymentsView.as_view(),
        name="bad-debt-payments",
    ),
    path(
        "accounts/<int:account_id>/bad-debt-payments/<int:payment_id>/release/",
        api.ReleaseBadDebtPaymentView.as_view(),
        name="bad-debt-payment-release",
    ),
    path("bad-debt/metrics/", api.BadDebtMetricsView.as_view(), name="bad-debt-metrics"),
    path("policies/", policy_api.PolicyListView.as_view(), name="policies"),
    path("policies/validate/", policy_api.PolicyValidateView.as_view(), name="policy-validate"),
    path("policies/diff/", policy_api.PolicyDiffView.as_view(), name="policy-diff"),
    path("policies/candidate/", policy_api.PolicyCandidateView.as_view(), name="policy-candidate"),
    path("policies/<int:number>/", policy_api.PolicyDetailView.as_view(), name="policy"),
    path(
        "policies/<int:number>/activate/",
        policy_api.PolicyActivateView.as_view(),
        name="policy-activate",
    ),
    path("test-clock/advance/", api.AdvanceTestClockView.as_view(), name="test-clock-advance"),
]
