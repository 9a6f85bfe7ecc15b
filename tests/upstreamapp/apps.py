from django.apps import AppConfig


class UpstreamAppConfig(AppConfig):
    name = "tests.upstreamapp"
    label = "upstreamapp"
