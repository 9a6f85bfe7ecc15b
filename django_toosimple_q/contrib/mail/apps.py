from django.apps import AppConfig


class ToosimpleqMailConfig(AppConfig):
    name = "django_toosimple_q.contrib.mail"
    # Not "mail", the default: too likely to be a project's own app label.
    label = "toosimpleq_mail"
    verbose_name = "Too simple queue: queued email"
