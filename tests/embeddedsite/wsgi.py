"""The WSGI application of the embedded test site, for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.embeddedsite.settings")

application = get_wsgi_application()
