"""Group commit: the outcomes of tasks that end close together, written in one transaction."""

import threading
import uuid
from unittest import mock

from django.core import checks
from django.test import SimpleTestCase, TransactionTestCase, override_settings
from django.utils import timezone

from django_toosimple_q import signals, store
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.group_commit import GroupCommit

from .helpers import wait_for
from .testapp import tasks

States = TaskExec.States


class Writes:
    """A ``write`` for GroupCommit that records its batches; the first one waits until ``release()``."""

    def __init__(self):
        self.batches = []
        self.writing = threading.Event()
        self._released = threading.Event()

    def __call__(self, items):
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.writing.set()
            self._released.wait(timeout=10)
        return [f"stored {item}" for item in items]

    def release(self):
        self._released.set()


class GroupCommitTests(SimpleTestCase):
    def write_in_threads(self, group, items):
        """Start ``group.write(item)`` for each of ``items`` in a thread; returns the threads, and their results to come."""
        results = {}

        def write(item):
            results[item] = group.write(item)

        threads = [threading.Thread(target=write, args=(item,)) for item in items]
        for thread in threads:
            thread.start()
        return threads, results

    def test_a_lone_item_is_written_at_once(self):
        writes = Writes()
        writes.release()
        self.assertEqual(GroupCommit(writes, 10).write("a"), "stored a")
        self.assertEqual(writes.batches, [["a"]])

    def test_the_items_that_come_while_a_batch_is_written_make_the_next_batch(self):
        writes = Writes()
        group = GroupCommit(writes, most=2)
        first, results = self.write_in_threads(group, ["a"])
        writes.writing.wait(timeout=10)
        others, more_results = self.write_in_threads(group, ["b", "c", "d"])
        wait_for(lambda: len(group._waiting) == 3, message="the others to wait")
        writes.release()
        for thread in first + others:
            thread.join(timeout=10)
        # The first waits for nobody; the others go two at a time (most=2), in the order they came.
        self.assertEqual(writes.batches[0], ["a"])
        self.assertEqual([len(batch) for batch in writes.batches], [1, 2, 1])
        self.assertEqual(sorted(item for batch in writes.batches for item in batch), ["a", "b", "c", "d"])
        self.assertEqual({**results, **more_results}, {item: f"stored {item}" for item in "abcd"})

    def test_a_refused_batch_leaves_each_item_to_its_caller(self):
        def refuse(items):
            raise ValueError("refused")

        group = GroupCommit(refuse, 10)
        self.assertIsNone(group.write("a"))
        threads, results = self.write_in_threads(group, ["b", "c"])
        for thread in threads:
            thread.join(timeout=10)
        self.assertEqual(results, {"b": None, "c": None})
        self.assertEqual((group._writing, group._waiting), (False, []))


class FinishBatchSettingTests(SimpleTestCase):
    def test_a_positive_integer(self):
        for most in (0, -1, 2.5, "50", None, True):
            with self.subTest(most=most), override_settings(TOOSIMPLEQ_FINISH_BATCH=most):
                errors = checks.run_checks(tags=["toosimpleq"])
                self.assertEqual([error.id for error in errors], ["toosimpleq.E008"])
                self.assertIn(f"TOOSIMPLEQ_FINISH_BATCH must be a positive integer, not {most!r}", errors[0].msg)
        for most in (1, 50):
            with self.subTest(most=most), override_settings(TOOSIMPLEQ_FINISH_BATCH=most):
                self.assertEqual(checks.run_checks(tags=["toosimpleq"]), [])


class FinishManyTests(TransactionTestCase):
    def test_each_row_is_fenced_on_its_worker(self):
        worker = WorkerStatus.objects.create(label="w", hostname="h", pid=1)
        for number in range(3):
            tasks.add.queue(number)
        first, taken, third = store.claim(worker.pk, 3, QueueFilter())
        other = WorkerStatus.objects.create(label="other", hostname="h", pid=2)
        TaskExec.objects.filter(pk=taken.id).update(worker=other)  # taken for dead and handed on
        now = timezone.now()
        outcome = {"state": States.SUCCEEDED, "result": 1, "finished": now}
        failure = {"state": States.FAILED, "error": "boom", "finished": now}  # another shape: another statement
        endings = [(first.id, worker.pk, outcome), (taken.id, worker.pk, outcome), (third.id, worker.pk, failure)]
        stored = store.finish_many(endings)
        self.assertEqual(stored, {first.id, third.id})
        rows = {row.pk: row for row in TaskExec.objects.all()}
        self.assertEqual((rows[first.id].state, rows[first.id].result), (States.SUCCEEDED, 1))
        self.assertEqual((rows[taken.id].state, rows[taken.id].worker_id), (States.PROCESSING, other.pk))
        self.assertEqual((rows[third.id].state, rows[third.id].error), (States.FAILED, "boom"))


class WorkerGroupCommitTests(TransactionTestCase):
    """Tasks that end at once on a worker's threads: their outcomes are written together."""

    THREADS = 4

    def run_tasks_ending_together(self, refuse_first=False):
        """Run THREADS tasks that end together; returns their rows, and the sizes of the batches written.

        The group is held busy until every outcome waits, so that they come
        together however loaded the machine. ``refuse_first``: the database
        refuses the first task's outcome.
        """
        barrier_name = f"together-{uuid.uuid4()}"
        executions = [tasks.rendezvous.queue(barrier_name, self.THREADS) for _ in range(self.THREADS)]
        worker = Worker(threads=self.THREADS, until_done=True, schedules=False)
        group = worker._together
        real_finish_many = store.finish_many
        sizes = []

        def finish_many(endings):
            sizes.append(len(endings))
            refused = refuse_first and any(
                execution_id == executions[0].pk and "result" in outcome for execution_id, _, outcome in endings
            )
            if refused:
                raise ValueError("cannot adapt")
            return real_finish_many(endings)

        with mock.patch.object(store, "finish_many", finish_many):
            if group is not None:
                set_writing(group, True)
            worker.start()
            if group is not None:
                wait_for(lambda: len(group._waiting) == self.THREADS, timeout=30, message="every outcome to wait")
                set_writing(group, False)
            worker.join(timeout=60)
        return [TaskExec.objects.get(pk=execution.pk) for execution in executions], sizes

    def test_outcomes_that_end_together_are_written_in_one_transaction(self):
        seen = []

        def finished(execution, **kwargs):
            # Sent once committed: another connection sees the row ended.
            seen.append(TaskExec.objects.get(pk=execution.id).state)

        signals.task_finished.connect(finished)
        self.addCleanup(signals.task_finished.disconnect, finished)
        rows, sizes = self.run_tasks_ending_together()
        self.assertEqual([row.state for row in rows], [States.SUCCEEDED] * self.THREADS, [row.error for row in rows])
        self.assertEqual(sizes, [self.THREADS])
        self.assertEqual(seen, [States.SUCCEEDED] * self.THREADS)

    @override_settings(TOOSIMPLEQ_FINISH_BATCH=1)
    def test_a_finish_batch_of_one_writes_each_outcome_alone(self):
        rows, sizes = self.run_tasks_ending_together()
        self.assertEqual([row.state for row in rows], [States.SUCCEEDED] * self.THREADS)
        self.assertEqual(sizes, [1] * self.THREADS)

    def test_an_outcome_the_database_refuses_fails_none_of_its_neighbours(self):
        (refused, *neighbours), sizes = self.run_tasks_ending_together(refuse_first=True)
        self.assertEqual([(row.state, row.error) for row in neighbours], [(States.SUCCEEDED, "")] * (self.THREADS - 1))
        self.assertTrue(all(row.result for row in neighbours))
        self.assertEqual(refused.state, States.SUCCEEDED)
        self.assertEqual(refused.error, "The outcome of the task could not be stored: ValueError: cannot adapt")
        # The batch, refused; then each alone, and the refused one's reason.
        self.assertEqual(sorted(sizes), [1] * (self.THREADS + 1) + [self.THREADS])


def set_writing(group, writing):
    """Have ``group`` seem busy writing (its outcomes wait), or hand the turn to the oldest outcome waiting."""
    with group._lock:
        if writing:
            group._writing = True
        else:
            group._waiting[0].turn.set()
