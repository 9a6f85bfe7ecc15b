"""queue(), due, using(), the claim order and unique tasks."""

import datetime
import threading
from unittest import mock, skipUnless

from django.db import connection, transaction
from django.db.models.signals import post_init
from django.test import TestCase, TransactionTestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_toosimple_q import serialization, store
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker, executor, recovery
from django_toosimple_q.worker.claiming import QueueFilter

from .testapp import tasks
from .testapp.models import Execution

States = TaskExec.States


def claim_all():
    """Claim every QUEUED task for a new worker row, as a worker would."""
    worker = WorkerStatus.objects.create(label="test", hostname="test", pid=0)
    return store.claim(worker.pk, 1000, QueueFilter())


class QueueTests(TestCase):
    def test_queue_stores_a_queued_row_and_returns_it(self):
        before = timezone.now()
        execution = tasks.add.queue(1, b=2)
        self.assertIsInstance(execution, TaskExec)
        stored = TaskExec.objects.get()
        self.assertEqual(stored.pk, execution.pk)
        self.assertEqual(stored.task_name, "tests.add")
        self.assertEqual(stored.state, States.QUEUED)
        self.assertEqual((stored.args, stored.kwargs), ([1], {"b": 2}))
        self.assertEqual((stored.queue, stored.priority), ("default", 0))
        self.assertTrue(before <= stored.due <= timezone.now())
        self.assertIsNone(stored.dedup_key)  # only unique tasks carry one
        self.assertEqual(stored.task, tasks.add._task)

    def test_queue_and_priority_default_to_the_registration(self):
        execution = tasks.configured.queue()
        stored = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((stored.queue, stored.priority), ("reports", 5))

    def test_retries_are_copied_from_the_registration(self):
        stored = TaskExec.objects.get(pk=tasks.retried.queue().pk)
        self.assertEqual((stored.retries, stored.retry_delay), (3, 10))

    def test_due_in_the_future_sleeps_until_then(self):
        due = timezone.now() + datetime.timedelta(hours=1)
        execution = tasks.add.queue(1, due=due)
        stored = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((stored.state, stored.due), (States.SLEEPING, due))
        self.assertEqual(stored.kwargs, {})  # due is not an argument of the task

    def test_due_in_the_past_is_queued_with_that_due(self):
        due = timezone.now() - datetime.timedelta(hours=1)
        stored = TaskExec.objects.get(pk=tasks.add.queue(1, due=due).pk)
        self.assertEqual((stored.state, stored.due), (States.QUEUED, due))

    @override_settings(TIME_ZONE="Europe/Paris")
    def test_a_naive_due_is_read_in_the_time_zone_with_a_warning(self):
        with self.assertWarnsRegex(RuntimeWarning, "naive datetime .* read in Europe/Paris"):
            stored = tasks.add.queue(1, due=datetime.datetime(2030, 1, 1, 12))
        self.assertEqual(stored.due, datetime.datetime(2030, 1, 1, 11, tzinfo=datetime.timezone.utc))
        self.assertEqual(TaskExec.objects.get(pk=stored.pk).due, stored.due)

    def test_bad_due_is_refused_and_nothing_stored(self):
        with self.assertRaisesMessage(TypeError, "due must be a datetime, not int"):
            tasks.add.queue(1, due=3600)
        with self.assertRaisesMessage(TypeError, "due must be a datetime, not date"):
            tasks.add.queue(1, due=datetime.date(2030, 1, 1))
        self.assertFalse(TaskExec.objects.exists())

    @override_settings(USE_TZ=False)
    def test_due_must_be_naive_without_time_zones(self):
        with self.assertRaisesMessage(ValueError, "naive"):
            tasks.add.queue(1, due=datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc))
        execution = tasks.add.queue(1, due=datetime.datetime(2030, 1, 1))
        self.assertEqual(execution.state, States.SLEEPING)

    def test_using_sets_due_priority_and_queue(self):
        due = timezone.now() + datetime.timedelta(minutes=5)
        execution = tasks.add.using(due=due, priority=9, queue="fast").queue(2, b=3)
        stored = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(
            (stored.state, stored.due, stored.priority, stored.queue, stored.args, stored.kwargs),
            (States.SLEEPING, due, 9, "fast", [2], {"b": 3}),
        )

    def test_using_overrides_only_what_it_is_given(self):
        stored = TaskExec.objects.get(pk=tasks.configured.using(priority=-1).queue().pk)
        self.assertEqual((stored.state, stored.queue, stored.priority), (States.QUEUED, "reports", -1))
        # The task itself is unchanged for later calls.
        stored = TaskExec.objects.get(pk=tasks.configured.queue().pk)
        self.assertEqual((stored.queue, stored.priority), ("reports", 5))

    def test_using_reserves_no_keyword(self):
        # A task whose own argument is called "due" is queued through using().
        later = timezone.now() + datetime.timedelta(days=1)
        execution = tasks.remind.using(priority=1).queue(due="tomorrow")
        stored = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((stored.state, stored.kwargs), (States.QUEUED, {"due": "tomorrow"}))
        execution = tasks.remind.using(due=later).queue(due=later)
        stored = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((stored.state, stored.due, stored.kwargs), (States.SLEEPING, later, {"due": later}))

    def test_queue_rolls_back_with_the_callers_transaction(self):
        with self.assertRaises(RuntimeError):
            with transaction.atomic():
                tasks.add.queue(1)
                raise RuntimeError
        self.assertFalse(TaskExec.objects.exists())


class UniqueTests(TestCase):
    def test_same_call_while_waiting_returns_false_and_stores_nothing(self):
        first = tasks.unique.queue(1, a="x")
        self.assertIsInstance(first, TaskExec)
        self.assertIs(tasks.unique.queue(1, a="x"), False)
        self.assertEqual(TaskExec.objects.count(), 1)

    def test_keyword_order_does_not_matter(self):
        tasks.unique.queue(a=1, b=2)
        self.assertIs(tasks.unique.queue(b=2, a=1), False)

    def test_other_arguments_are_another_call(self):
        self.assertTrue(tasks.unique.queue(1))
        self.assertTrue(tasks.unique.queue(2))
        self.assertTrue(tasks.unique.queue([1]))
        self.assertTrue(tasks.unique.queue((1,)))  # a tuple is not a list
        self.assertTrue(tasks.unique.queue(a=1))
        self.assertEqual(TaskExec.objects.count(), 5)

    def test_a_sleeping_call_counts_as_waiting(self):
        later = timezone.now() + datetime.timedelta(hours=1)
        self.assertTrue(tasks.unique.queue(1, due=later))
        self.assertIs(tasks.unique.queue(1), False)
        self.assertIs(tasks.unique.using(priority=3, queue="other").queue(1), False)

    def test_other_tasks_are_not_deduplicated(self):
        self.assertTrue(tasks.add.queue(1))
        self.assertTrue(tasks.add.queue(1))
        self.assertEqual(TaskExec.objects.count(), 2)

    def test_refusal_leaves_the_callers_transaction_usable(self):
        with transaction.atomic():
            tasks.unique.queue(1)
            self.assertIs(tasks.unique.queue(1), False)
            tasks.add.queue(2)  # would fail if the transaction were broken
        self.assertEqual(TaskExec.objects.count(), 2)


class QueueManyTests(TestCase):
    def stored_calls(self):
        return {row.pk: (row.args, row.kwargs) for row in TaskExec.objects.all()}

    def test_stores_each_call_and_returns_them_in_order(self):
        executions = tasks.add.queue_many([(1, 2), [3], {"a": 4, "b": 5}, ()])
        self.assertEqual(
            self.stored_calls(),
            {
                executions[0].pk: ([1, 2], {}),
                executions[1].pk: ([3], {}),
                executions[2].pk: ([], {"a": 4, "b": 5}),
                executions[3].pk: ([], {}),
            },
        )
        self.assertTrue(all(execution.state == States.QUEUED for execution in executions))
        # Saved instances, as queue() returns them.
        executions[0].refresh_from_db()
        self.assertFalse(executions[0]._state.adding)

    def test_more_calls_than_one_statement_takes(self):
        # SQLite takes 999 parameters per statement: this needs several.
        executions = tasks.add.queue_many([(i,) for i in range(500)])
        self.assertEqual(len(executions), 500)
        self.assertEqual(self.stored_calls(), {execution.pk: ([i], {}) for i, execution in enumerate(executions)})

    def test_options_of_using_and_due(self):
        later = timezone.now() + datetime.timedelta(hours=1)
        executions = tasks.add.using(priority=7, queue="bulk").queue_many([(1,), (2,)])
        self.assertEqual({(row.priority, row.queue) for row in TaskExec.objects.all()}, {(7, "bulk")})
        sleeping = tasks.add.queue_many([(3,)], due=later)
        self.assertEqual(TaskExec.objects.get(pk=sleeping[0].pk).state, States.SLEEPING)
        self.assertEqual(len(executions), 2)

    def test_unique_calls_already_waiting_or_repeated_are_refused(self):
        waiting = tasks.unique.queue(1)
        result = tasks.unique.queue_many([(1,), (2,), {"a": 1}, (2,), (3,)])
        self.assertIs(result[0], False)
        self.assertIs(result[3], False)  # the same call as result[1]
        self.assertEqual(
            self.stored_calls(),
            {
                waiting.pk: ([1], {}),
                result[1].pk: ([2], {}),
                result[2].pk: ([], {"a": 1}),
                result[4].pk: ([3], {}),
            },
        )

    def test_all_or_none(self):
        with self.assertRaisesMessage(TypeError, "cannot be stored"):
            tasks.add.queue_many([(1,), (object(),)])
        with self.assertRaisesMessage(TypeError, "for a single argument x, write (x,)"):
            tasks.add.queue_many([(1,), "2"])
        self.assertFalse(TaskExec.objects.exists())

    def test_databases_without_insert_returning_save_each_call(self):
        # What MySQL does: one save() per call, a refused duplicate in a savepoint.
        with mock.patch.object(store, "_can_insert_returning", return_value=False):
            waiting = tasks.unique.queue(1)
            result = tasks.unique.queue_many([(1,), (2,), (2,)])
        self.assertEqual([bool(execution) for execution in result], [False, True, False])
        self.assertEqual(self.stored_calls(), {waiting.pk: ([1], {}), result[1].pk: ([2], {})})

    def test_nothing_to_queue(self):
        self.assertEqual(tasks.add.queue_many([]), [])
        self.assertEqual(tasks.add.queue_many(iter(())), [])


class ReturnedExecutionTests(TestCase):
    """What queue() returns, and the row it stores, without a model instance made to store it."""

    def assertAsStored(self, execution):
        self.assertEqual(execution.get_deferred_fields(), set())  # no field is left to read from the database
        stored = TaskExec.objects.get(pk=execution.pk)
        for field in TaskExec._meta.concrete_fields:
            self.assertEqual(getattr(execution, field.attname), getattr(stored, field.attname), field.name)
        self.assertEqual((execution._state.adding, execution._state.db), (False, "default"))

    def test_a_queued_call_is_its_row_as_read_back(self):
        self.assertAsStored(tasks.add.queue((1, 2.5), b={"when": datetime.date(2030, 1, 1)}))

    def test_sleeping_unique_and_many_calls_are_their_rows_as_read_back(self):
        later = timezone.now() + datetime.timedelta(hours=1)
        self.assertAsStored(tasks.unique.using(due=later, priority=3).queue("x"))
        for execution in tasks.retried.queue_many([(1,), {"a": "b"}, ()]):
            self.assertAsStored(execution)

    def test_the_row_holds_what_the_orm_would_store(self):
        # The INSERT names only some columns: the others are as a model's save() leaves them.
        execution = tasks.retried.queue(1)
        call = ("task_name", "args", "kwargs", "queue", "priority", "state", "due", "created", "retries", "retry_delay")
        saved = TaskExec.objects.create(**{name: getattr(execution, name) for name in call})
        columns = [field.attname for field in TaskExec._meta.concrete_fields if not field.primary_key]
        self.assertEqual(
            TaskExec.objects.filter(pk=execution.pk).values(*columns).get(),
            TaskExec.objects.filter(pk=saved.pk).values(*columns).get(),
        )

    def test_receivers_of_post_init_see_each_execution_returned(self):
        seen = []

        def receiver(sender, instance, **kwargs):
            seen.append(instance)

        post_init.connect(receiver, sender=TaskExec)
        self.addCleanup(post_init.disconnect, receiver, sender=TaskExec)
        executions = tasks.add.queue_many([(1,), (2,)])
        self.assertEqual([id(instance) for instance in seen], [id(execution) for execution in executions])
        for execution in executions:
            self.assertAsStored(execution)

    def test_arguments_are_encoded_once(self):
        with mock.patch.object(serialization, "encode", wraps=serialization.encode) as encode:
            tasks.add.queue(1, b="x")
        self.assertEqual(encode.call_count, 2)

    def test_the_insert_is_among_the_queries_django_logs(self):
        # What DEBUG's connection.queries and the debug toolbar show of a request.
        with CaptureQueriesContext(connection) as queries:
            tasks.add.queue(1)
        self.assertEqual(len(queries), 1)
        self.assertIn("INSERT", queries[0]["sql"])


class UniqueOnceClaimedTests(TransactionTestCase):
    # TransactionTestCase: on SQLite, claiming opens its own transaction.

    def test_same_call_can_be_queued_again_once_claimed(self):
        tasks.unique.queue(1)
        self.assertEqual(len(claim_all()), 1)
        again = tasks.unique.queue(1)
        self.assertIsInstance(again, TaskExec)
        self.assertEqual(TaskExec.objects.filter(state=States.QUEUED).get(), again)
        self.assertIs(tasks.unique.queue(1), False)

    def test_a_waiting_retry_counts_as_waiting(self):
        tasks.unique_retried.queue("x")
        Worker(until_done=True, schedules=False).run()
        failed = TaskExec.objects.get(state=States.FAILED)
        self.assertEqual(failed.replaced_by.state, States.SLEEPING)
        self.assertIs(tasks.unique_retried.queue("x"), False)
        self.assertTrue(tasks.unique_retried.queue("y"))
        self.assertEqual(TaskExec.objects.count(), 3)

    def test_no_retry_is_queued_beside_the_same_waiting_call(self):
        execution = tasks.unique_retried.queue("x")
        (claimed,) = claim_all()
        waiting = tasks.unique_retried.queue("x")  # allowed: the first one runs
        self.assertTrue(waiting)
        executor.execute(claimed, TaskExec.objects.get(pk=execution.pk).worker_id)
        # The call that waits stands for the retry.
        failed = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((failed.state, failed.replaced_by), (States.FAILED, None))
        self.assertIn("ValueError: x", failed.error)
        self.assertEqual(list(TaskExec.objects.filter(state__in=TaskExec.WAITING_STATES)), [waiting])

    def test_the_replacement_of_an_interrupted_call_counts_as_waiting(self):
        execution = tasks.unique.queue("x")
        claim_all()
        WorkerStatus.objects.update(stopped=timezone.now())  # its worker is gone
        (replacement,) = recovery.reap_dead_workers()
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).replaced_by, replacement)
        self.assertIs(tasks.unique.queue("x"), False)
        self.assertEqual(TaskExec.objects.count(), 2)

    def test_no_replacement_is_queued_beside_the_same_waiting_call(self):
        execution = tasks.unique.queue("x")
        claim_all()
        waiting = tasks.unique.queue("x")
        WorkerStatus.objects.update(stopped=timezone.now())
        self.assertEqual(recovery.reap_dead_workers(), [])
        interrupted = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((interrupted.state, interrupted.replaced_by), (States.INTERRUPTED, None))
        self.assertEqual(list(TaskExec.objects.filter(state__in=TaskExec.WAITING_STATES)), [waiting])


class ConcurrentUniqueTests(TransactionTestCase):
    def test_concurrent_enqueuers_store_one_row(self):
        # Each thread has its own connection, as separate processes would:
        # only a database constraint can refuse all but one of them.
        threads_count, rounds = 8, 5
        results = []
        errors = []
        start = threading.Barrier(threads_count, timeout=30)

        def enqueue(value):
            try:
                start.wait()
                results.append((value, tasks.unique.queue(value)))
            except Exception as error:  # reported below: a thread cannot fail the test
                errors.append(error)
            finally:
                connection.close()

        for value in range(rounds):
            threads = [threading.Thread(target=enqueue, args=(value,)) for _ in range(threads_count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        self.assertEqual(errors, [])
        for value in range(rounds):
            outcomes = [outcome for v, outcome in results if v == value]
            self.assertEqual(len(outcomes), threads_count)
            stored = [outcome for outcome in outcomes if outcome is not False]
            self.assertEqual(len(stored), 1, f"round {value}: {outcomes}")
            self.assertEqual(TaskExec.objects.filter(args=[value]).count(), 1)
        self.assertEqual(TaskExec.objects.count(), rounds)

    @skipUnless(connection.vendor == "postgresql", "PostgreSQL: several server sessions at once")
    def test_concurrent_enqueuers_in_open_transactions(self):
        # A transaction that inserted the call but has not committed yet makes
        # the others wait on the unique index, then refuse once it commits.
        inserted = threading.Event()
        outcomes = []

        def enqueue_and_hold():
            try:
                with transaction.atomic():
                    outcomes.append(tasks.unique.queue("held"))
                    inserted.set()
                    # Long enough for the main thread's queue() to be blocked.
                    threading.Event().wait(0.5)
            finally:
                connection.close()

        holder = threading.Thread(target=enqueue_and_hold)
        holder.start()
        self.assertTrue(inserted.wait(timeout=30))
        self.assertIs(tasks.unique.queue("held"), False)
        holder.join()
        self.assertIsInstance(outcomes[0], TaskExec)
        self.assertEqual(TaskExec.objects.count(), 1)


class PriorityOrderTests(TransactionTestCase):
    def test_higher_priority_first_then_earliest_due_then_lowest_id(self):
        now = timezone.now()
        hour = datetime.timedelta(hours=1)
        # Queued in an order that matches none of the criteria alone.
        first = tasks.record.queue("p0 due-2h first")
        tasks.record.using(due=now - hour).queue("p0 due-1h")
        tasks.record.using(due=now - 2 * hour).queue("p0 due-2h")
        tasks.record.using(priority=-5).queue("p-5")
        tasks.record.using(priority=10, due=now - hour).queue("p10 due-1h a")
        tasks.record.using(priority=10, due=now - 2 * hour).queue("p10 due-2h")
        tasks.record.using(priority=10, due=now - hour).queue("p10 due-1h b")
        tasks.record.using(priority=3).queue("p3")
        # The same due as "p0 due-2h", with a lower id.
        TaskExec.objects.filter(pk=first.pk).update(due=now - 2 * hour)

        Worker(threads=1, until_done=True, schedules=False).run()

        self.assertEqual(
            list(Execution.objects.order_by("id").values_list("key", flat=True)),
            [
                "p10 due-2h",
                "p10 due-1h a",
                "p10 due-1h b",
                "p3",
                "p0 due-2h first",
                "p0 due-2h",
                "p0 due-1h",
                "p-5",
            ],
        )

    def test_a_woken_sleeping_task_takes_its_place_by_priority(self):
        now = timezone.now()
        sleeping = tasks.record.using(due=now + datetime.timedelta(hours=1), priority=1).queue("woken")
        tasks.record.queue("low")
        # Its time has come by the time the worker starts.
        TaskExec.objects.filter(pk=sleeping.pk).update(due=now)
        Worker(threads=1, until_done=True, schedules=False).run()
        self.assertEqual(list(Execution.objects.order_by("id").values_list("key", flat=True)), ["woken", "low"])
