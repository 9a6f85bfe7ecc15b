"""The admin: its pages, its actions and their permissions, and cancelled rows in the engine."""

import datetime
import decimal
import html
import re
import uuid

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import TestCase, TransactionTestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_toosimple_q import registry
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus
from django_toosimple_q.registry import Schedule, Task, register, register_schedule

from .helpers import IsolatedRegistries, run_worker
from .test_schedules import greet

States = TaskExec.States
EXECUTIONS = reverse("admin:toosimpleq_taskexec_changelist")
SCHEDULES = reverse("admin:toosimpleq_scheduleexec_changelist")
WORKERS = reverse("admin:toosimpleq_workerstatus_changelist")
OVERVIEW = reverse("admin:toosimpleq_queueoverview_changelist")


def execution_page(execution):
    return reverse("admin:toosimpleq_taskexec_change", args=[execution.pk])


def stored(task_name="tests.echo", state=States.QUEUED, **fields):
    """A row as the engine leaves it."""
    return TaskExec.objects.create(task_name=task_name, state=state, **fields)


def staff(username, *codenames):
    """A staff user who may view the queue's models, and do what ``codenames`` allow."""
    user = User.objects.create_user(username, password="pw", is_staff=True)
    views = ["view_taskexec", "view_scheduleexec", "view_workerstatus"]
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="toosimpleq", codename__in=[*views, *codenames]))
    return user


def messages_of(response):
    return [str(message) for message in response.context["messages"]]


class AdminTestCase(IsolatedRegistries, TestCase):
    def setUp(self):
        super().setUp()
        self.admin = User.objects.create_superuser("admin", password="pw")
        self.client.force_login(self.admin)

    def act(self, changelist, action, rows):
        return self.client.post(
            changelist, {"action": action, "index": "0", "_selected_action": [row.pk for row in rows]}, follow=True
        )


class ExecutionPagesTests(AdminTestCase):
    def test_the_list_shows_badge_decoded_arguments_worker_and_duration(self):
        worker = WorkerStatus.objects.create(label="w-label", hostname="h", pid=1)
        started = timezone.now()
        execution = stored(
            args=[(1, 2)],
            kwargs={"amount": decimal.Decimal("1.50")},
            state=States.SUCCEEDED,
            worker=worker,
            started=started,
            finished=started + datetime.timedelta(seconds=2),
            result_preview="'done'",
        )
        response = self.client.get(EXECUTIONS)
        self.assertContains(response, "toosimpleq-badge")
        self.assertContains(response, "(1, 2), amount=Decimal(&#x27;1.50&#x27;)")
        self.assertContains(response, "2.000 s")
        self.assertContains(response, reverse("admin:toosimpleq_workerstatus_change", args=[worker.pk]))
        self.assertContains(response, execution_page(execution))

    def test_the_list_loads_no_output_result_or_traceback(self):
        stored(stdout="OUTPUT-TEXT", stderr="ERR-TEXT", error="TRACEBACK-TEXT", result="RESULT-TEXT")
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(EXECUTIONS)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "tests.echo")
        for query in queries:
            for column in ("stdout", "stderr", "error", "result"):
                self.assertNotIn(f'"toosimpleq_taskexec"."{column}"', query["sql"])

    def test_filters_search_and_dates(self):
        worker = WorkerStatus.objects.create(label="w", hostname="h", pid=1)
        echo = stored(task_name="tests.echo", queue="mail", args=["needle"], worker=worker)
        add = stored(task_name="tests.add", state=States.FAILED)
        cases = [
            ({"state__exact": "FAILED"}, [add]),
            ({"queue": "mail"}, [echo]),
            ({"task_name": "tests.add"}, [add]),
            ({"q": "needle"}, [echo]),
            ({"worker__id__exact": worker.pk}, [echo]),
            ({"q": str(add.pk)}, [add]),
            ({"created__year": timezone.now().year}, [add, echo]),
        ]
        for query, listed in cases:
            with self.subTest(query):
                response = self.client.get(EXECUTIONS, query)
                self.assertEqual(list(response.context["cl"].result_list), listed)

    def test_the_detail_shows_decoded_values_output_and_the_retry_chain(self):
        retried = stored(state=States.QUEUED, attempt=2)
        first = stored(
            state=States.FAILED,
            args=[datetime.date(2026, 1, 2)],
            kwargs={"key": "value"},
            result=uuid.UUID("12345678-1234-5678-1234-567812345678"),
            stdout="line one\nline <two>",
            error="Traceback: ValueError",
            replaced_by=retried,
        )
        response = self.client.get(execution_page(first))
        self.assertContains(response, "datetime.date(2026, 1, 2)")
        self.assertContains(response, "key=&#x27;value&#x27;")
        self.assertContains(response, "UUID(&#x27;12345678-1234-5678-1234-567812345678&#x27;)")
        self.assertContains(response, "line one\nline &lt;two&gt;</pre>")
        self.assertContains(response, "Traceback: ValueError")
        self.assertContains(response, execution_page(retried))  # retried as
        self.assertContains(self.client.get(execution_page(retried)), execution_page(first))  # retried from

    def test_executions_cannot_be_edited_or_added(self):
        execution = stored()
        self.assertEqual(self.client.post(execution_page(execution), {"state": "SUCCEEDED"}).status_code, 403)
        self.assertEqual(self.client.get(reverse("admin:toosimpleq_taskexec_add")).status_code, 403)
        execution.refresh_from_db()
        self.assertEqual(execution.state, States.QUEUED)


class RequeueTests(AdminTestCase):
    def test_a_new_call_with_the_tasks_current_options_and_a_fresh_attempt_budget(self):
        register(Task(greet, name="admin.greet", queue="fresh", priority=7, retries=4, retry_delay=3))
        old = stored(
            "admin.greet", States.FAILED, args=[("x",)], queue="old", priority=1,
            retries=0, attempt=3,
        )
        response = self.act(EXECUTIONS, "action_requeue", [old])
        again = TaskExec.objects.exclude(pk=old.pk).get()
        self.assertEqual((again.state, again.queue, again.priority, again.retries, again.retry_delay, again.attempt),
                         (States.QUEUED, "fresh", 7, 4, 3, 1))
        self.assertEqual(again.args, [("x",)])
        old.refresh_from_db()
        self.assertIsNone(old.replaced_by)
        self.assertEqual(old.state, States.FAILED)
        self.assertEqual(messages_of(response), [f"Requeued as new executions (1): {again}"])
        self.assertEqual(LogEntry.objects.get(object_id=str(old.pk)).get_change_message(), f"Requeued as #{again.pk}.")

    def test_a_unique_call_already_waiting_is_reported(self):
        waiting = registry.tasks_registry["tests.unique"].queue(1)
        done = stored("tests.unique", States.SUCCEEDED, args=[1])
        response = self.act(EXECUTIONS, "action_requeue", [done])
        self.assertEqual(response.status_code, 200)
        self.assertEqual(TaskExec.objects.count(), 2)
        self.assertEqual(waiting.state, States.QUEUED)
        self.assertIn("Not requeued, the same call of a unique task already waits (1)", messages_of(response)[0])

    def test_a_task_no_longer_in_the_code_is_reported(self):
        gone = stored("admin.gone", States.INVALID)
        response = self.act(EXECUTIONS, "action_requeue", [gone])
        self.assertEqual(TaskExec.objects.count(), 1)
        self.assertIn("Not requeued, their task is no longer in the code (1)", messages_of(response)[0])


class CancelTests(AdminTestCase):
    def test_waiting_rows_are_cancelled_and_others_left_alone_and_reported(self):
        queued = registry.tasks_registry["tests.unique"].queue(1)
        sleeping = stored(state=States.SLEEPING, due=timezone.now() + datetime.timedelta(hours=1))
        running = stored(state=States.PROCESSING)
        response = self.act(EXECUTIONS, "action_cancel", [queued, sleeping, running])
        for row in (queued, sleeping, running):
            row.refresh_from_db()
        self.assertEqual([queued.state, sleeping.state, running.state], [States.CANCELLED, States.CANCELLED, States.PROCESSING])
        self.assertIsNone(queued.dedup_key)
        self.assertIsNotNone(queued.finished)
        self.assertEqual(len(messages_of(response)), 2)
        self.assertIn("Cancelled (2)", messages_of(response)[0])
        self.assertIn(f"Left alone, they were no longer waiting (1): {running}", messages_of(response)[1])
        self.assertEqual(LogEntry.objects.filter(change_message="Cancelled.").count(), 2)
        # The cancelled unique call no longer blocks the same call.
        self.assertTrue(registry.tasks_registry["tests.unique"].queue(1))

    def test_taskexec_cancel_and_the_queryset_method(self):
        waiting, done = stored(), stored(state=States.SUCCEEDED)
        self.assertTrue(waiting.cancel())
        self.assertEqual(waiting.state, States.CANCELLED)
        self.assertFalse(done.cancel())
        self.assertEqual(done.state, States.SUCCEEDED)
        others = [stored(), stored(state=States.SLEEPING), stored(state=States.PROCESSING)]
        self.assertEqual(TaskExec.objects.filter(pk__in=[row.pk for row in others]).cancel(), 2)


class CancelledRowsInTheEngineTests(TransactionTestCase):
    def test_a_worker_never_runs_a_cancelled_row(self):
        cancelled = registry.tasks_registry["tests.echo"].queue("no")
        sleeping = registry.tasks_registry["tests.echo"].queue("no", due=timezone.now() - datetime.timedelta(seconds=1))
        TaskExec.objects.filter(pk=sleeping.pk).update(state=States.SLEEPING)
        TaskExec.objects.filter(pk__in=[cancelled.pk, sleeping.pk]).cancel()
        ran = registry.tasks_registry["tests.echo"].queue("yes")
        result = run_worker("--until_done", "--no_schedules")
        self.assertEqual(result.returncode, 0, result.stderr)
        states = dict(TaskExec.objects.values_list("pk", "state"))
        self.assertEqual(states, {cancelled.pk: States.CANCELLED, sleeping.pk: States.CANCELLED, ran.pk: States.SUCCEEDED})


class ScheduleTests(AdminTestCase):
    def add(self, cron, name, **row):
        task = register(Task(greet, name=name))
        register_schedule(Schedule(task, cron, name=name, args=["Ada"]))
        return ScheduleExec.objects.create(name=name, task_name=name, cron=cron, **row)

    def test_the_list_shows_next_due_overdue_manual_and_invalid(self):
        self.add("manual", "admin.by_hand", last_due=timezone.now())
        self.add("0 0 1 1 *", "admin.late", last_due=timezone.now() - datetime.timedelta(days=400))
        ScheduleExec.objects.create(name="admin.gone", cron="@daily", state=ScheduleExec.States.INVALID)
        response = self.client.get(SCHEDULES)
        self.assertContains(response, "run by hand only")
        self.assertContains(response, "overdue")
        self.assertContains(response, "Invalid: no longer in the code")
        self.assertContains(response, "&#x27;Ada&#x27;")

    def test_run_now_queues_a_manual_schedule(self):
        row = self.add("manual", "admin.by_hand", last_due=None)
        response = self.act(SCHEDULES, "action_force_run", [row])
        execution = TaskExec.objects.get()
        self.assertEqual((execution.task_name, execution.args), ("admin.by_hand", ["Ada"]))
        row.refresh_from_db()
        self.assertEqual(row.last_task, execution)
        self.assertIsNone(row.last_due)  # the cron's times are left alone
        self.assertEqual(messages_of(response), [f"Queued now (1): {execution}"])
        self.assertEqual(LogEntry.objects.get(object_id=str(row.pk)).get_change_message(), f"Run now: queued #{execution.pk}.")

    def test_run_now_on_a_schedule_no_longer_in_the_code(self):
        gone = ScheduleExec.objects.create(name="admin.gone", cron="@daily", state=ScheduleExec.States.INVALID)
        response = self.act(SCHEDULES, "action_force_run", [gone])
        self.assertFalse(TaskExec.objects.exists())
        self.assertIn("Not queued, no longer in the code (1)", messages_of(response)[0])

    def test_run_now_of_a_unique_task_already_waiting(self):
        register_schedule(Schedule(registry.tasks_registry["tests.unique"], "manual", name="admin.unique"))
        row = ScheduleExec.objects.create(name="admin.unique", cron="manual")
        registry.tasks_registry["tests.unique"].queue()
        response = self.act(SCHEDULES, "action_force_run", [row])
        self.assertEqual(TaskExec.objects.count(), 1)
        self.assertIn("Not queued, their unique task already waits (1)", messages_of(response)[0])


class PermissionTests(AdminTestCase):
    def test_each_action_needs_its_permission(self):
        execution = stored()
        row = ScheduleExec.objects.create(name="admin.any", cron="manual")
        cases = [
            (EXECUTIONS, "action_requeue", execution, "requeue_taskexec"),
            (EXECUTIONS, "action_cancel", execution, "cancel_taskexec"),
            (SCHEDULES, "action_force_run", row, "force_run_scheduleexec"),
        ]
        for changelist, action, target, codename in cases:
            with self.subTest(action):
                self.client.force_login(staff(f"without-{action}"))
                self.assertNotContains(self.client.get(changelist), f'value="{action}"')
                response = self.act(changelist, action, [target])
                self.assertEqual(response.status_code, 200)
                self.assertEqual(messages_of(response), [f"You are not allowed to run '{action}': nothing was changed."])
                self.client.force_login(staff(f"with-{action}", codename))
                self.assertContains(self.client.get(changelist), f'value="{action}"')
        self.assertEqual(TaskExec.objects.get().state, States.QUEUED)
        self.assertFalse(LogEntry.objects.exists())

    def test_an_empty_selection_is_a_message(self):
        for changelist, action in [(EXECUTIONS, "action_requeue"), (EXECUTIONS, "action_cancel"), (SCHEDULES, "action_force_run")]:
            with self.subTest(action):
                response = self.act(changelist, action, [])
                self.assertEqual(response.status_code, 200)
                self.assertIn("Items must be selected", messages_of(response)[0])

    def test_the_overview_needs_the_view_permission_of_executions(self):
        self.client.force_login(staff("viewer"))
        self.assertEqual(self.client.get(OVERVIEW).status_code, 200)
        nobody = User.objects.create_user("nobody", password="pw", is_staff=True)
        self.client.force_login(nobody)
        self.assertEqual(self.client.get(OVERVIEW).status_code, 403)


class WorkerAndOverviewPagesTests(AdminTestCase):
    def test_workers_with_their_state_and_heartbeat(self):
        WorkerStatus.objects.create(label="alive", hostname="h", pid=1, queues=["mail"], last_tick=timezone.now())
        WorkerStatus.objects.create(
            label="dead", hostname="h", pid=2, stopped=timezone.now(), exit_code=99, exit_log="Traceback: boom"
        )
        response = self.client.get(WORKERS)
        self.assertContains(response, "Online")
        self.assertContains(response, "Crashed")
        self.assertContains(response, "0\xa0minutes ago")
        dead = WorkerStatus.objects.get(label="dead")
        self.assertContains(self.client.get(reverse("admin:toosimpleq_workerstatus_change", args=[dead.pk])), "Traceback: boom")

    def test_the_overview_is_linked_from_the_index_and_shows_the_figures(self):
        self.assertContains(self.client.get(reverse("admin:index")), OVERVIEW)
        recent_failure = stored(queue="mail", state=States.FAILED, finished=timezone.now())
        stored(queue="mail", state=States.QUEUED, created=timezone.now() - datetime.timedelta(minutes=3))
        stored(queue="mail", state=States.FAILED, finished=timezone.now() - datetime.timedelta(hours=2))
        response = self.client.get(OVERVIEW)
        self.assertContains(response, "<th>mail</th>", html=False)
        self.assertContains(response, f'<a href="{EXECUTIONS}?queue=mail&amp;state__exact=QUEUED">1</a>', html=False)
        self.assertContains(response, "3\xa0minutes")
        # The finished states count the last hour, not the history: one FAILED of two, and its link lists that one.
        link = rf'<a href="({EXECUTIONS}\?queue=mail&amp;state__exact=FAILED&amp;finished__gte=[^"]+)">1</a>'
        [failed] = re.findall(link, response.content.decode())
        listed = self.client.get(html.unescape(failed))
        self.assertEqual(listed.status_code, 200)
        self.assertEqual(list(listed.context["cl"].result_list), [recent_failure])

    def test_the_overview_takes_a_fixed_number_of_queries(self):
        stored(queue="q0", state=States.SUCCEEDED, finished=timezone.now())
        with CaptureQueriesContext(connection) as one_queue:
            self.client.get(OVERVIEW)
        self.assertLessEqual(len(one_queue), 8)  # the session, the user and the six of stats.collect()
        for number in range(1, 30):
            stored(queue=f"q{number}", state=States.SUCCEEDED, finished=timezone.now())
            WorkerStatus.objects.create(label=f"w{number}", hostname="h", pid=number, queues=[f"q{number}"])
        with self.assertNumQueries(len(one_queue)):
            self.assertContains(self.client.get(OVERVIEW), "<th>q29</th>", html=False)

