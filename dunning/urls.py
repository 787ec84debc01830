from django.urls import path

from dunning import api

urlpatterns = [
    path("test-clock/advance/", api.AdvanceTestClockView.as_view(), name="test-clock-advance"),
]
