"""The benchmark of django-toosimple-q: ``python -m bench --help``.

It is also the Django app of the benchmark's own settings (bench/settings.py),
so that autodiscovery registers the tasks of bench/tasks.py.
"""
