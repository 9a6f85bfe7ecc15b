from django.apps import AppConfig
from django.core import checks
from django.utils.module_loading import autodiscover_modules

from .checks import (
    check_catch_up_limit,
    check_embedded_debug,
    check_embedded_queues,
    check_embedded_sqlite,
    check_prepared_statements,
)


class ToosimpleqConfig(AppConfig):
    name = "django_toosimple_q"
    label = "toosimpleq"
    verbose_name = "Too simple queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registering happens when the tasks.py modules are imported: import
        # them all, as the admin does with admin.py.
        autodiscover_modules("tasks")
        # After autodiscovery: the embedded worker serves the tasks registered.
        from . import embedded

        embedded.start_if_serving()
        checks.register(check_catch_up_limit, "toosimpleq")
        checks.register(check_prepared_statements, "toosimpleq")
        checks.register(check_embedded_queues, "toosimpleq")
        checks.register(check_embedded_sqlite, "toosimpleq")
        checks.register(check_embedded_debug, "toosimpleq")
