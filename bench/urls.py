from django.urls import include, path

from bench import views

urlpatterns = [
    path("bench/insert/", views.baseline_insert, name="bench-insert"),
    path("bench/ping/", views.ping, name="bench-ping"),
    path("", include("config.urls")),
]
