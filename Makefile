# Developer and CI entry points. Each virtual environment is (re)built only
# when it is missing or the packaging files changed (the .installed stamp).

# Interpreters, overridable: make test PYTHON=python3.13
# The main environment takes the newest Python (>= 3.12 gets Django 6; on an
# older one pip falls back to Django 5.2 by itself); the Django 5.2 one takes
# the system's python3 (3.10 or 3.11 on current Debian and Ubuntu), and the
# django-tasks backport of Django's task framework.
PYTHON ?= $$(tools/find-python --any)
PYTHON_DJANGO52 ?= python3

# Extra arguments for tests/run.py: make test RUN_ARGS="--db sqlite tests.test_x"
RUN_ARGS ?=

PACKAGING := setup.cfg pyproject.toml

.PHONY: test test-django52 test-django60 upstream-suite chaos demo clean

test: .venv/.installed
	.venv/bin/python tests/run.py $(RUN_ARGS)

test-django52: .venv-django52/.installed
	.venv-django52/bin/python tests/run.py $(RUN_ARGS)

# Django 6.0, whose @task passes none of our options to the backend: make test-django60 RUN_ARGS="tests.test_backend"
test-django60: .venv-django60/.installed
	.venv-django60/bin/python tests/run.py $(RUN_ARGS)

# Upstream 1.2.1's own tests against this package: make upstream-suite RUN_ARGS="--db sqlite"
upstream-suite: .venv/.installed
	.venv/bin/python tests/upstream_suite.py $(RUN_ARGS)

# The long chaos scenarios, and their table: make chaos RUN_ARGS="--db postgres -k kill"
chaos: .venv/.installed
	.venv/bin/python -m chaos $(RUN_ARGS)

# runserver alone: the demo runs its tasks in embedded mode.
demo: .venv/.installed
	.venv/bin/python manage.py migrate
	.venv/bin/python manage.py create_demo_admin
	.venv/bin/python manage.py queue_demo_tasks
	.venv/bin/python manage.py runserver

.venv/.installed: $(PACKAGING)
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/python -m pip install --quiet -e '.[test]'
	touch $@

.venv-django52/.installed: $(PACKAGING)
	test -x .venv-django52/bin/python || $(PYTHON_DJANGO52) -m venv .venv-django52
	.venv-django52/bin/python -m pip install --quiet -e '.[test,tasks]' 'Django>=5.2,<6'
	touch $@

.venv-django60/.installed: $(PACKAGING)
	test -x .venv-django60/bin/python || $(PYTHON) -m venv .venv-django60
	.venv-django60/bin/python -m pip install --quiet -e '.[test]' 'Django>=6.0,<6.1'
	touch $@

clean:
	rm -rf .venv .venv-django52 .tmp build dist *.egg-info
	find . -path './.venv*' -prune -o -name __pycache__ -prune -exec rm -rf {} +
