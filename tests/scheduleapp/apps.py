from django.apps import AppConfig


class ScheduleAppConfig(AppConfig):
    name = "tests.scheduleapp"
    label = "scheduleapp"
