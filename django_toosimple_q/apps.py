from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ToosimpleqConfig(AppConfig):
    name = "django_toosimple_q"
    label = "toosimpleq"
    verbose_name = "Too simple queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registering happens when the tasks.py modules are imported: import
        # them all, as the admin does with admin.py.
        autodiscover_modules("tasks")
