"""Each task's stdout and stderr go to its own TaskExec, however many run at once."""

import re
import sys
import threading
import uuid

from django.test import SimpleTestCase, TransactionTestCase, override_settings

from django_toosimple_q.models import TaskExec
from django_toosimple_q.worker import Worker
from django_toosimple_q.worker.capture import captured_output

from .testapp import tasks

THREADS = 8
LINES = 200


class OutputIsolationTests(TransactionTestCase):
    def test_threads_printing_at_once_keep_their_own_output(self):
        barrier_name = f"chatter-{uuid.uuid4()}"
        markers = [f"marker{i}" for i in range(THREADS)]
        executions = {marker: tasks.chatter.queue(marker, LINES, barrier_name, THREADS) for marker in markers}
        Worker(threads=THREADS, until_done=True, schedules=False).run()
        for marker, execution in executions.items():
            row = TaskExec.objects.get(pk=execution.pk)
            self.assertEqual(row.state, TaskExec.States.SUCCEEDED, row.error)
            expected_stdout = "".join(f"{marker} print {i}\n{marker} write {i}\n" for i in range(LINES))
            expected_stderr = "".join(f"{marker} stderr {i}\n{marker} log {i}\n" for i in range(LINES))
            # Equality shows both: nothing of another task, nothing of its own lost.
            if row.stdout != expected_stdout or row.stderr != expected_stderr:
                strangers = set(re.findall(r"marker\d+", row.stdout + row.stderr)) - {marker}
                self.fail(f"{marker}: output of {sorted(strangers) or 'no other task'} mixed in, or lines lost")


class CapturedOutputTests(SimpleTestCase):
    def test_outside_a_capture_output_goes_to_the_real_stream(self):
        with captured_output():  # installs the routed streams
            pass
        written = []

        class Recorder:
            def write(self, text):
                written.append(text)

        original = sys.stdout.original
        sys.stdout.original = Recorder()
        try:
            print("not captured")
        finally:
            sys.stdout.original = original
        self.assertEqual(written, ["not captured", "\n"])

    def test_a_capture_ignores_other_threads(self):
        other_thread_done = threading.Event()

        def write_elsewhere():
            with captured_output() as elsewhere:
                print("elsewhere")
            self.assertEqual(elsewhere.stdout, "elsewhere\n")
            other_thread_done.set()

        with captured_output() as here:
            print("here")
            thread = threading.Thread(target=write_elsewhere)
            thread.start()
            thread.join()
            print("here again", file=sys.stderr)
        self.assertTrue(other_thread_done.is_set())
        self.assertEqual((here.stdout, here.stderr), ("here\n", "here again\n"))


class OutputLimitTests(SimpleTestCase):
    @override_settings(TOOSIMPLEQ_MAX_OUTPUT=20)
    def test_long_output_keeps_its_head_and_tail_and_says_how_much_was_cut(self):
        with captured_output() as output:
            for i in range(1000):
                print(f"line {i:03}")
            sys.stderr.write("short")
        self.assertEqual(output.stdout, "line 000\nl\n[... 8980 characters cut ...]\n\nline 999\n")
        self.assertEqual(output.stderr, "short")

    @override_settings(TOOSIMPLEQ_MAX_OUTPUT=20)
    def test_output_up_to_the_limit_is_kept_whole(self):
        with captured_output() as output:
            sys.stdout.write("0123456789")
            sys.stdout.write("abcdefghij")
        self.assertEqual(output.stdout, "0123456789abcdefghij")


class OutputLimitWorkerTests(TransactionTestCase):
    def test_a_task_printing_megabytes_stores_about_the_limit(self):
        execution = tasks.print_lots.queue(10 * 1024 * 1024)
        Worker(until_done=True, schedules=False).run()
        row = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(row.state, TaskExec.States.SUCCEEDED, row.error)
        self.assertLess(len(row.stdout), 1_000_100)
        self.assertIn(f"[... {10 * 1024 * 1024 - 1_000_000} characters cut ...]", row.stdout)
        self.assertTrue(row.stdout.startswith("x" * 1000) and row.stdout.endswith("x" * 1000))
