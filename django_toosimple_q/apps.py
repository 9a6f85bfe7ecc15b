from django.apps import AppConfig
from django.core import checks
from django.utils.module_loading import autodiscover_modules

from .checks import (
    check_catch_up_limit,
    check_embedded_debug,
    check_embedded_queues,
    check_embedded_sqlite,
    check_finish_batch,
    check_heartbeat_and_timeout,
    check_mail_app,
    check_poison_limits,
    check_prepared_statements,
    check_upstream_history,
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
        from . import retention

        retention.register_if_configured()
        # After autodiscovery: the embedded worker serves the tasks registered.
        from . import embedded

        embedded.start_if_serving()
        checks.register(check_catch_up_limit, "toosimpleq")
        checks.register(check_finish_batch, "toosimpleq")
        checks.register(check_prepared_statements, "toosimpleq")
        checks.register(check_heartbeat_and_timeout, "toosimpleq")
        checks.register(check_poison_limits, "toosimpleq")
        checks.register(check_embedded_queues, "toosimpleq")
        checks.register(check_embedded_sqlite, "toosimpleq")
        checks.register(check_embedded_debug, "toosimpleq")
        checks.register(check_mail_app, "toosimpleq")
        checks.register(check_upstream_history, checks.Tags.database)


class DjangoToosimpleQConfig(ToosimpleqConfig):
    """The same app, under the dotted path upstream 1.x's INSTALLED_APPS may name."""

    # Not picked when INSTALLED_APPS names the package.
    default = False
