from django.urls import path

from dunning import api

urlpatterns = [
    path("bad-debt/metrics/", api.BadDebtMetricsView.as_view(), name="bad-debt-metrics"),
    path("test-clock/advance/", api.AdvanceTestClockView.as_view(), name="test-clock-advance"),
]
