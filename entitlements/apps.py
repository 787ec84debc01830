from django.apps import AppConfig


class EntitlementsConfig(AppConfig):
    name = "entitlements"
