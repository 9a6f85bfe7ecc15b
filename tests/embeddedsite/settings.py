"""A small site with TOOSIMPLEQ_EMBEDDED = True, for tests/test_embedded.py.

Its servers (runserver, gunicorn) run as subprocesses on the test database:
tests.settings reads it from TOOSIMPLEQ_TEST_DB_NAME (tests.helpers.worker_env).
Its app holds a schedule that fires every second: it is installed only here,
so that it fires in no other test's workers.
"""

import os

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.embeddedsite"]  # noqa: F405

TOOSIMPLEQ_EMBEDDED = True
TOOSIMPLEQ_GRACE = float(os.environ.get("EMBEDDEDSITE_GRACE", "30"))

# Each server process runs its own embedded worker, which is fine here: the
# warning that says so in production would only clutter the servers' output.
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.embeddedsite.urls"
WSGI_APPLICATION = "tests.embeddedsite.wsgi.application"
