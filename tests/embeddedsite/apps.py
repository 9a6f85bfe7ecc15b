import os

from django.apps import AppConfig
from django.utils.autoreload import autoreload_started


def watch_test_directory(sender, **kwargs):
    sender.watch_dir(os.environ["EMBEDDEDSITE_WATCHED_DIR"], "*")


class EmbeddedSiteConfig(AppConfig):
    name = "tests.embeddedsite"

    def ready(self):
        # The reload test changes a file of its own to reload runserver: one
        # of the repository's would reload the servers of other test runs.
        if "EMBEDDEDSITE_WATCHED_DIR" in os.environ:
            autoreload_started.connect(watch_test_directory)
