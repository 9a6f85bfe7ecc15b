"""The django-toosimple-q test suite: run it with `python tests/run.py`."""
