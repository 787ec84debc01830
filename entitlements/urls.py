from django.urls import path

from entitlements import api

urlpatterns = [
    path(
        "accounts/<int:account_id>/entitlements/",
        api.AccountEntitlementsView.as_view(),
        name="account-entitlements",
    ),
]
