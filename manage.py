#!/usr/bin/env python
"""Django's command-line utility for the demo project (testproject).

`python manage.py test` runs the test suite (tests.settings: SQLite);
`make test` runs it on SQLite and PostgreSQL, see tests/run.py.
"""

import os
import sys


def main():
    settings = "tests.settings" if sys.argv[1:2] == ["test"] else "testproject.settings"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
