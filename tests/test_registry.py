"""@register_task: names, options, bad registrations, autodiscovery."""

import functools
import subprocess
import sys

from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

from django_toosimple_q.decorators import register_task
from django_toosimple_q.registry import Task, tasks_registry

from .helpers import REPO_DIR, worker_env


class RegistryTestCase(SimpleTestCase):
    def register(self, *args, **kwargs):
        """register_task(*args, **kwargs), unregistered again after the test."""
        decorator = register_task(*args, **kwargs)

        def register_and_clean_up(func):
            """The Task registered; ``register_task`` returns the function, carrying it."""
            task = decorator(func)._task
            self.addCleanup(tasks_registry.pop, task.name, None)
            return task

        return register_and_clean_up


def module_level():
    return "module level"


def other_module_level():
    return "other"


class RegisterTaskTests(RegistryTestCase):
    def test_default_name_is_module_and_qualname(self):
        task = self.register()(module_level)
        self.assertIsInstance(task, Task)
        self.assertEqual(task.name, "tests.test_registry.module_level")
        self.assertIs(tasks_registry["tests.test_registry.module_level"], task)

    def test_name_given_positionally(self):
        task = self.register("tests.registry.positional")(module_level)
        self.assertEqual(task.name, "tests.registry.positional")
        self.assertIs(tasks_registry["tests.registry.positional"], task)
        self.assertNotIn("tests.test_registry.module_level", tasks_registry)

    def test_every_option_by_keyword(self):
        task = self.register(
            name="tests.registry.options", queue="long", priority=-3, unique=True, retries=-1, retry_delay=2.5
        )(module_level)
        self.assertEqual(
            (task.name, task.queue_name, task.priority, task.unique, task.retries, task.retry_delay),
            ("tests.registry.options", "long", -3, True, -1, 2.5),
        )

    def test_defaults(self):
        task = self.register("tests.registry.defaults")(module_level)
        self.assertEqual(
            (task.queue_name, task.priority, task.unique, task.retries, task.retry_delay),
            ("default", 0, False, 0, 0),
        )

    def test_decorated_function_stays_callable_inline(self):
        def greet(name, punctuation="!"):
            """Say hello."""
            return f"Hello {name} {punctuation}"

        task = self.register("tests.registry.greet")(greet)
        self.assertIs(task.func, greet)
        self.assertEqual(greet("John"), "Hello John !")
        self.assertEqual(greet("John", punctuation="?"), "Hello John ?")
        self.assertEqual(greet.__doc__, "Say hello.")
        self.assertEqual(greet.__name__, "greet")

    def test_the_function_comes_back_carrying_its_task(self):
        def greet(name):
            return f"Hello {name}"

        decorated = register_task("tests.registry.carried")(greet)
        self.addCleanup(tasks_registry.pop, "tests.registry.carried", None)
        self.assertIs(decorated, greet)
        task = tasks_registry["tests.registry.carried"]
        self.assertIs(greet._task, task)
        self.assertEqual((greet.queue, greet.queue_many, greet.using), (task.queue, task.queue_many, task.using))

    def test_a_functools_wraps_decorator_above_keeps_the_task(self):
        def logged(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return func(*args, **kwargs)

            return wrapper

        @logged
        @register_task("tests.registry.wrapped")
        def wrapped():
            return "wrapped"

        self.addCleanup(tasks_registry.pop, "tests.registry.wrapped", None)
        self.assertEqual(wrapped(), "wrapped")
        self.assertIs(wrapped._task, tasks_registry["tests.registry.wrapped"])
        self.assertEqual(wrapped.queue, wrapped._task.queue)

    def test_local_function_without_name_is_named_by_its_qualified_name(self):
        # As upstream 1.x: tests register tasks in their methods and run the worker in-process.
        def local():
            return 42

        name = f"{__name__}.{local.__qualname__}"
        self.addCleanup(tasks_registry.pop, name, None)
        register_task()(local)
        self.assertIs(tasks_registry[name].func, local)

    def test_local_function_with_name_is_fine(self):
        def local():
            return 42

        task = self.register("tests.registry.local")(local)
        self.assertEqual(task.func(), 42)

    def test_two_functions_under_one_name_is_an_error(self):
        first = self.register("tests.registry.clash")(module_level)
        with self.assertRaisesMessage(ImproperlyConfigured, "'tests.registry.clash' is already registered"):
            register_task("tests.registry.clash")(other_module_level)
        # Not silently overwritten.
        self.assertIs(tasks_registry["tests.registry.clash"], first)
        self.assertEqual(tasks_registry["tests.registry.clash"].func(), "module level")

    def test_same_function_registered_again_replaces_itself(self):
        # What happens when a module is imported again (a reload).
        self.register("tests.registry.reloaded")(module_level)
        again = self.register("tests.registry.reloaded")(module_level)
        self.assertIs(tasks_registry["tests.registry.reloaded"], again)

    def test_bare_decorator_is_a_clear_error(self):
        with self.assertRaisesMessage(TypeError, "write @register_task(), not @register_task"):
            register_task(module_level)

    def test_bad_options_are_refused(self):
        bad_options = [
            {"name": ""},
            {"name": 3},
            {"queue": ""},
            {"queue": None},
            {"priority": "high"},
            {"priority": 1.5},
            {"priority": True},
            {"retries": -2},
            {"retries": 1.0},
            {"retry_delay": -1},
            {"retry_delay": "10"},
        ]
        for options in bad_options:
            with self.subTest(options=options):
                options.setdefault("name", "tests.registry.bad")
                with self.assertRaises(ImproperlyConfigured):
                    register_task(**options)(module_level)
                self.assertNotIn("tests.registry.bad", tasks_registry)

    def test_options_out_of_what_every_database_stores_are_refused_with_their_range(self):
        # PostgreSQL refused these at each queue(), SQLite took them.
        bad_options = [
            ({"priority": 10**12}, "priority must be an integer from -2147483648 to 2147483647, not 1000000000000"),
            ({"priority": 2**31}, "priority must be an integer from -2147483648 to 2147483647"),
            ({"priority": -(2**31) - 1}, "priority must be an integer from -2147483648 to 2147483647"),
            ({"name": "x" * 1025}, "Task name must be a string of 1 to 1024 characters, not 1025 characters"),
            ({"queue": "q" * 256}, "queue must be a string of 1 to 255 characters, not 256 characters"),
            ({"retry_delay": 10**12}, "retry_delay must be a number of seconds from 0 to 31536000 (a year)"),
            ({"retry_delay": float("inf")}, "retry_delay must be a number of seconds from 0 to 31536000 (a year)"),
            ({"retry_delay": float("nan")}, "retry_delay must be a number of seconds from 0 to 31536000 (a year)"),
        ]
        for options, message in bad_options:
            with self.subTest(options=options):
                options.setdefault("name", "tests.registry.bad")
                with self.assertRaisesMessage(ImproperlyConfigured, message):
                    register_task(**options)(module_level)
                self.assertNotIn("tests.registry.bad", tasks_registry)
        # The bounds themselves are fine.
        bounds = {"priority": 2**31 - 1, "queue": "q" * 255, "retry_delay": 31536000}
        task = self.register("tests.registry.bounds", **bounds)(module_level)
        self.assertEqual(task.priority, 2**31 - 1)

    def test_using_refuses_what_register_task_refuses(self):
        task = self.register("tests.registry.using")(module_level)
        for options, message in (
            ({"priority": 2**31}, "priority must be an integer from -2147483648 to 2147483647"),
            ({"priority": "9"}, "priority must be an integer"),
            ({"queue": "q" * 256}, "queue must be a string of 1 to 255 characters"),
            ({"queue": ""}, "queue must be a string of 1 to 255 characters"),
        ):
            with self.subTest(options=options):
                with self.assertRaisesMessage(ValueError, f"Task tests.registry.using: {message}"):
                    task.using(**options)


class AutodiscoveryTests(SimpleTestCase):
    def test_tasks_modules_of_installed_apps_are_imported_at_setup(self):
        # A fresh process: in this one, the test modules import the tasks too.
        code = (
            "import sys, django; django.setup(); "
            "from django_toosimple_q.registry import tasks_registry; "
            "print('tests.testapp.tasks' in sys.modules, 'tests.record' in tasks_registry)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_DIR,
            env=worker_env(DJANGO_SETTINGS_MODULE="tests.settings"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split(), ["True", "True"])
