"""Group commit: the outcomes of tasks that end close together, written in one transaction."""

import threading
import uuid
from unittest import mock

from django.test import SimpleTestCase, TransactionTestCase, override_settings
from django.utils import timezone

from django_toosimple_q import signals, store
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.group_commit import GroupCommit

from .helpers import assert_positive_integer_setting, wait_for
from .testapp import tasks

States = TaskExec.States


class Writes:
    """A ``write`` for GroupCommit that records its batches, on which thread; the first one waits until ``release()``."""

    def __init__(self):
        self.batches = []
        self.writers = []
        self.writing = threading.Event()
        self._released = threading.Event()

    def __call__(self, items):
        self.batches.append(list(items))
        self.writers.append(threading.current_thread().name)
        if len(self.batches) == 1:
            self.writing.set()
            self._released.wait(timeout=10)

    def release(self):
        self._released.set()


class GroupCommitTests(SimpleTestCase):
    def hand_over_in_threads(self, group, items):
        """``group.hand_over(item)`` for each of ``items``, each in a thread named after it; returns the threads."""
        threads = [threading.Thread(target=group.hand_over, args=(item,), name=item) for item in items]
        for thread in threads:
            thread.start()
        return threads

    def test_a_lone_item_is_written_at_once_by_its_thread(self):
        writes = Writes()
        writes.release()
        GroupCommit(writes, 10).hand_over("a")
        self.assertEqual(writes.batches, [["a"]])
        self.assertEqual(writes.writers, [threading.current_thread().name])

    def test_items_handed_over_during_a_write_are_free_at_once_and_make_the_next_batches(self):
        writes = Writes()
        group = GroupCommit(writes, most=2)
        [first] = self.hand_over_in_threads(group, ["a"])
        writes.writing.wait(timeout=10)
        others = self.hand_over_in_threads(group, ["b", "c", "d"])
        for thread in others:
            thread.join(timeout=10)
            self.assertFalse(thread.is_alive(), "a thread that hands over while another writes waits for nothing")
        self.assertEqual(writes.batches, [["a"]])
        writes.release()
        first.join(timeout=10)
        # The writer writes what came meanwhile too, two at a time (most=2), in the order it came.
        self.assertEqual(writes.batches[0], ["a"])
        self.assertEqual([len(batch) for batch in writes.batches], [1, 2, 1])
        self.assertEqual(sorted(item for batch in writes.batches for item in batch), ["a", "b", "c", "d"])
        self.assertEqual(set(writes.writers), {"a"})
        self.assertEqual((group._writing, group._waiting), (False, []))

    def test_the_next_item_after_the_writer_is_done_makes_a_new_writer(self):
        writes = Writes()
        writes.release()
        group = GroupCommit(writes, 10)
        for item in ("a", "b"):
            [thread] = self.hand_over_in_threads(group, [item])
            thread.join(timeout=10)
        self.assertEqual(writes.batches, [["a"], ["b"]])
        self.assertEqual(writes.writers, ["a", "b"])

    def test_a_write_that_raises_is_logged_and_the_writer_goes_on(self):
        batches = []

        def write(items):
            batches.append(items)
            if len(batches) == 1:
                raise ValueError("a bug")

        group = GroupCommit(write, 10)
        with self.assertLogs("django_toosimple_q", "ERROR") as logs:
            group.hand_over("a")
        self.assertIn("1 outcomes could not be written", logs.output[0])
        group.hand_over("b")
        self.assertEqual(batches, [["a"], ["b"]])
        self.assertEqual((group._writing, group._waiting), (False, []))


class FinishBatchSettingTests(SimpleTestCase):
    def test_a_positive_integer(self):
        assert_positive_integer_setting(self, "FINISH_BATCH", "toosimpleq.E008", valid=(1, 50))


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

        The first outcome's write is held until every other outcome is
        handed over, so that they come together however loaded the machine.
        ``refuse_first``: the database refuses the first task's outcome.
        """
        barrier_name = f"together-{uuid.uuid4()}"
        executions = [tasks.rendezvous.queue(barrier_name, self.THREADS) for _ in range(self.THREADS)]
        worker = Worker(threads=self.THREADS, until_done=True, schedules=False)
        group = worker._together
        real_finish_many = store.finish_many
        sizes = []

        def finish_many(endings):
            sizes.append(len(endings))
            if group is not None and len(sizes) == 1:
                wait_for(lambda: len(group._waiting) == self.THREADS - 1, timeout=30, message="the others to wait")
            refused = refuse_first and any(
                execution_id == executions[0].pk and "result" in outcome for execution_id, _, outcome in endings
            )
            if refused:
                raise ValueError("cannot adapt")
            return real_finish_many(endings)

        with mock.patch.object(store, "finish_many", finish_many):
            worker.start()
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
        # The first, alone; the others, handed over meanwhile, together.
        self.assertEqual(sizes, [1, self.THREADS - 1])
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
        # The first outcome alone, then the others' batch. The batch that
        # holds the refused one is written again, each alone, and then the
        # refused one's reason.
        refused_came_first = [1, 1, 1, self.THREADS - 1]
        refused_came_after = [1, self.THREADS - 1, *[1] * self.THREADS]
        self.assertIn(sizes, (refused_came_first, refused_came_after))


