"""Mounted under /api/v1/ by config.urls."""

from django.urls import path

from dunning.support_api import views

urlpatterns = [
    path("accounts/", views.AccountListView.as_view(), name="support-accounts"),
    path(
        "accounts/<int:account_id>/dunning/",
        views.AccountDunningView.as_view(),
        name="support-account-dunning",
    ),
    path(
        "accounts/<int:account_id>/timeline/",
        views.TimelineView.as_view(),
        name="support-account-timeline",
    ),
    path(
        "accounts/<int:account_id>/notifications/",
        views.NotificationListView.as_view(),
        name="support-account-notifications",
    ),
    path(
        "accounts/<int:account_id>/recompute/",
        views.RecomputeView.as_view(),
        name="support-account-recompute",
    ),
    path("accounts/<int:account_id>/pause/", views.PauseView.as_view(), name="support-pause"),
    path(
        "accounts/<int:account_id>/extend-grace/",
        views.ExtendGraceView.as_view(),
        name="support-extend-grace",
    ),
]
