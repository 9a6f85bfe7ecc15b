#!/usr/bin/env python
"""Django's command-line utility for the demo project (testproject).

The test suite uses it too, with `--settings tests.settings`: see tests/run.py.
"""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
