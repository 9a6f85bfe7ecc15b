from django.apps import AppConfig


class BadCronAppConfig(AppConfig):
    name = "tests.badcronapp"
    label = "badcronapp"
