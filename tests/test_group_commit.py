"""Group commit: the outcomes of tasks that end close together, written in one transaction."""

import threading
import uuid
from unittest import mock

from django.db import IntegrityError
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


class GroupCommitTests(SimpleTestCase):
    def test_items_are_taken_oldest_first_at_most_most_at_a_time(self):
        group = GroupCommit(most=2)
        for item in "abc":
            group.hand_over(item)
        self.assertEqual((group.take(), len(group)), (["a", "b"], 1))
        self.assertEqual((group.take(), group.take()), (["c"], []))

    def test_a_batch_put_back_is_taken_first(self):
        group = GroupCommit(most=10)
        group.hand_over("a")
        batch = group.take()
        group.hand_over("b")
        group.put_back(batch)
        self.assertEqual(group.take_all(), ["a", "b"])
        self.assertEqual(len(group), 0)

    def test_no_item_handed_over_from_many_threads_is_lost(self):
        group = GroupCommit(most=7)
        threads = [
            threading.Thread(target=lambda start=start: [group.hand_over(item) for item in range(start, start + 1000)])
            for start in range(0, 8000, 1000)
        ]
        taken = []
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads) or len(group):
            taken += group.take()
        self.assertEqual(sorted(taken), list(range(8000)))


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


class FinishAndClaimTests(TransactionTestCase):
    def setUp(self):
        self.worker = WorkerStatus.objects.create(label="w", hostname="h", pid=1)
        tasks.add.queue(1)
        [self.running] = store.claim(self.worker.pk, 1, QueueFilter())
        self.waiting = tasks.add.queue(2)
        self.outcome = {"state": States.SUCCEEDED, "result": 3, "finished": timezone.now()}

    def test_outcomes_are_stored_and_tasks_claimed(self):
        stored, claimed = store.finish_and_claim(
            [(self.running.id, self.worker.pk, self.outcome)], self.worker.pk, 5, QueueFilter()
        )
        self.assertEqual((stored, [task.id for task in claimed]), ({self.running.id}, [self.waiting.pk]))
        self.assertEqual(TaskExec.objects.get(pk=self.running.id).result, 3)
        self.assertEqual(TaskExec.objects.get(pk=self.waiting.pk).state, States.PROCESSING)

    def test_all_or_nothing(self):
        gone = self.worker.pk + 1000  # a claim for no worker: its foreign key is refused
        with self.assertRaises(IntegrityError):
            store.finish_and_claim([(self.running.id, self.worker.pk, self.outcome)], gone, 5, QueueFilter())
        # The outcome is undone with the claim.
        self.assertEqual(TaskExec.objects.get(pk=self.running.id).state, States.PROCESSING)
        self.assertEqual(TaskExec.objects.get(pk=self.waiting.pk).state, States.QUEUED)


class WorkerGroupCommitTests(TransactionTestCase):
    """Tasks that end at once on a worker's threads: their outcomes are written together."""

    THREADS = 4

    def run_tasks_ending_together(self, refuse_first=False):
        """Run THREADS tasks that end together; returns their rows, and the sizes of the batches written.

        The first write of outcomes is held until every other outcome is
        handed over, so that they come together however loaded the machine.
        ``refuse_first``: the database refuses the first task's outcome.
        """
        barrier_name = f"together-{uuid.uuid4()}"
        executions = [tasks.rendezvous.queue(barrier_name, self.THREADS) for _ in range(self.THREADS)]
        worker = Worker(threads=self.THREADS, until_done=True, schedules=False)
        group = worker._together
        real_finish_params = store._finish_params
        sizes = []

        def finish_params(database, endings, adapters):
            sizes.append(len(endings))
            if group is not None and len(sizes) == 1:
                wait_for(lambda: len(endings) + len(group) == self.THREADS, timeout=30, message="the others to wait")
            if refuse_first and any(id == executions[0].pk and "result" in outcome for id, _, outcome in endings):
                raise ValueError("cannot adapt")
            return real_finish_params(database, endings, adapters)

        with mock.patch.object(store, "_finish_params", finish_params):
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
        # Those taken first; then the others, handed over meanwhile, together.
        self.assertEqual(sum(sizes), self.THREADS)
        self.assertLess(len(sizes), self.THREADS, sizes)
        self.assertEqual(seen, [States.SUCCEEDED] * self.THREADS)

    @override_settings(TOOSIMPLEQ_FINISH_BATCH=2)
    def test_outcomes_beyond_a_batch_make_the_next_batches(self):
        rows, sizes = self.run_tasks_ending_together()
        self.assertEqual([row.state for row in rows], [States.SUCCEEDED] * self.THREADS)
        self.assertEqual((sum(sizes), max(sizes)), (self.THREADS, 2), sizes)

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
        # The batch that holds the refused one is written again, each alone.
        self.assertIn(1, sizes)
