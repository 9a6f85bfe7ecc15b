"""The queue in Django's admin: executions, schedules and workers, what an operator can do to them, and an overview.

Rows are never edited by hand (that could leave them in a state no worker
expects): each change goes through an action that calls the engine, has its
own permission, says what it did and leaves an entry in the admin history.
"""

import datetime
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value, flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.timesince import timesince

from . import stats
from .models import QueueOverview, ScheduleExec, TaskExec, WorkerStatus, distinct_values
from .schedules import force_run

# Badge colours, readable on the admin's light and dark themes.
GREEN, BLUE, GREY, ORANGE, RED = "#2e7d32", "#1565c0", "#757575", "#ef6c00", "#c62828"
STATE_COLOURS = {
    TaskExec.States.SLEEPING: GREY,
    TaskExec.States.QUEUED: BLUE,
    TaskExec.States.PROCESSING: ORANGE,
    TaskExec.States.SUCCEEDED: GREEN,
    TaskExec.States.FAILED: RED,
    TaskExec.States.INTERRUPTED: RED,
    TaskExec.States.INVALID: RED,
    TaskExec.States.CANCELLED: GREY,
    WorkerStatus.States.ONLINE: GREEN,
    WorkerStatus.States.STOPPED: GREY,
    WorkerStatus.States.CRASHED: RED,
    WorkerStatus.States.TIMEDOUT: RED,
    ScheduleExec.States.ACTIVE: GREEN,
    ScheduleExec.States.INVALID: RED,
}

PREVIEW_LENGTH = 60

# The text columns a list never shows: on a big table they are most of its bytes.
HEAVY_FIELDS = ("result", "error", "stdout", "stderr")


def badge(state, label):
    return format_html(
        '<span class="toosimpleq-badge" style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'white-space:nowrap">{}</span>',
        STATE_COLOURS[state],
        label,
    )


def preview(text):
    return text if len(text) <= PREVIEW_LENGTH else text[: PREVIEW_LENGTH - 1] + "…"


def call_text(args, kwargs):
    """A call's arguments as Python writes them: ``1, 'a', x=2``."""
    return ", ".join([repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()])


def preformatted(text):
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text) if text else "-"


def admin_link(instance, text=None):
    if instance is None:
        return "-"
    opts = instance._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[instance.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(instance))


def has_model_permission(request, model, codename):
    return request.user.has_perm(f"{model._meta.app_label}.{codename}")


class CountCappedPaginator(Paginator):
    """Counts at most COUNT_CAP rows: a list of millions pages without counting them all.

    Deeper rows are reached through the filters, the search and the dates.
    """

    COUNT_CAP = 10_000

    @cached_property
    def count(self):
        # Unordered, so that the count can read the index of its filter.
        return self.object_list.order_by()[: self.COUNT_CAP + 1].count()

    @property
    def capped(self):
        return self.count > self.COUNT_CAP


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """Django's filter by value, its choices found by a loose index scan rather than a DISTINCT over every row."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = distinct_values(field_path)


class RunningWorkerFilter(admin.RelatedFieldListFilter):
    """Django's filter by worker, offering the workers not stopped: the stopped ones pile up by thousands.

    An execution's link to its worker, stopped or not, still filters by it.
    """

    def field_choices(self, field, request, model_admin):
        return field.get_choices(include_blank=False, limit_choices_to={"stopped": None}, ordering=["label"])


class ReadOnlyAdmin(admin.ModelAdmin):
    def changelist_view(self, request, extra_context=None):
        # Django passes over an action the user may not run in silence when
        # they may run none: it gets a message here, whatever else they may do.
        action = request.POST.get("action")
        if action and action not in self.get_actions(request):
            self.message_user(request, f"You are not allowed to run {action!r}: nothing was changed.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ActionReport:
    """What an action did: one message per kind of outcome, each naming its rows."""

    def __init__(self, model_admin, request):
        self.model_admin = model_admin
        self.request = request

    def say(self, level, what, rows):
        if rows:
            names = ", ".join(str(row) for row in rows)
            self.model_admin.message_user(self.request, f"{what} ({len(rows)}): {names}", level)


def queue_each(model_admin, request, rows, queue, logged):
    """``queue(row)`` for each of ``rows``, logging each queued one in the admin history.

    Returns three lists: the executions queued, the rows whose unique call
    already waits (``queue`` returned False), the rows whose task or
    schedule is no longer in the code (``queue`` raised LookupError).
    """
    queued, waiting, missing = [], [], []
    for row in rows:
        try:
            execution = queue(row)
        except LookupError:
            missing.append(row)
            continue
        if execution:
            queued.append(execution)
            model_admin.log_change(request, row, logged.format(pk=execution.pk))
        else:
            waiting.append(row)
    return queued, waiting, missing


@admin.register(TaskExec)
class TaskExecAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "state_badge",
        "task_name",
        "arguments_preview",
        "queue",
        "priority",
        "due",
        "created",
        "started",
        "finished",
        "duration",
        "result_preview",
        "worker_link",
    ]
    list_display_links = ["id", "task_name"]
    list_filter = [
        "state",
        ("queue", IndexedValuesFilter),
        ("task_name", IndexedValuesFilter),
        ("worker", RunningWorkerFilter),
    ]
    search_fields = ["=id", "task_name", "args", "kwargs"]
    date_hierarchy = "created"
    ordering = ["-id"]
    list_select_related = ["worker"]
    show_full_result_count = False
    paginator = CountCappedPaginator
    # Upstream 1.x's action names, which its operators' scripts and bookmarks may post.
    actions = ["action_requeue", "action_cancel"]
    fieldsets = [
        ("Call", {"fields": [("task_name", "state_badge"), ("queue", "priority", "attempt"), "arguments", "keyword_arguments"]}),
        (
            "Runs",
            {
                "fields": [
                    ("due", "created", "started", "finished", "duration"),
                    ("worker_link", "retries", "retry_delay"),
                    ("retried_from", "retried_as"),
                ]
            },
        ),
        ("Outcome", {"fields": ["return_value", "stdout_text", "stderr_text", "traceback"]}),
    ]
    readonly_fields = flatten_fieldsets(fieldsets)

    def get_changelist(self, request, **kwargs):
        return ExecutionChangeList

    @admin.display(description="state", ordering="state")
    def state_badge(self, execution):
        return badge(execution.state, execution.get_state_display())

    @admin.display(description="arguments")
    def arguments_preview(self, execution):
        return preview(call_text(execution.args, execution.kwargs))

    @admin.display(description="duration")
    def duration(self, execution):
        if execution.started is None or execution.finished is None:
            return "-"
        return f"{(execution.finished - execution.started).total_seconds():.3f} s"

    @admin.display(description="worker", ordering="worker")
    def worker_link(self, execution):
        return admin_link(execution.worker, execution.worker.label if execution.worker else None)

    @admin.display(description="retried from")
    def retried_from(self, execution):
        return admin_link(execution.replaces.first())

    @admin.display(description="retried as")
    def retried_as(self, execution):
        return admin_link(execution.replaced_by)

    @admin.display(description="args")
    def arguments(self, execution):
        return preformatted("\n".join(repr(arg) for arg in execution.args))

    @admin.display(description="kwargs")
    def keyword_arguments(self, execution):
        return preformatted("\n".join(f"{key}={value!r}" for key, value in execution.kwargs.items()))

    @admin.display(description="result")
    def return_value(self, execution):
        if execution.result is None:
            return "-"
        return preformatted(repr(execution.result))

    @admin.display(description="stdout")
    def stdout_text(self, execution):
        return preformatted(execution.stdout)

    @admin.display(description="stderr")
    def stderr_text(self, execution):
        return preformatted(execution.stderr)

    @admin.display(description="traceback")
    def traceback(self, execution):
        return preformatted(execution.error)

    def has_requeue_permission(self, request):
        return has_model_permission(request, TaskExec, "requeue_taskexec")

    def has_cancel_permission(self, request):
        return has_model_permission(request, TaskExec, "cancel_taskexec")

    @admin.action(description="Requeue selected executions", permissions=["requeue"])
    def action_requeue(self, request, queryset):
        report = ActionReport(self, request)
        requeued, waiting, missing = queue_each(
            self, request, queryset.defer(*HEAVY_FIELDS), TaskExec.queue_again, "Requeued as #{pk}."
        )
        report.say(messages.SUCCESS, "Requeued as new executions", requeued)
        report.say(messages.WARNING, "Not requeued, the same call of a unique task already waits", waiting)
        report.say(messages.ERROR, "Not requeued, their task is no longer in the code", missing)

    @admin.action(description="Cancel selected waiting executions", permissions=["cancel"])
    def action_cancel(self, request, queryset):
        report = ActionReport(self, request)
        cancelled, left = [], []
        for execution in queryset.defer(*HEAVY_FIELDS):
            if execution.cancel():
                cancelled.append(execution)
                self.log_change(request, execution, "Cancelled.")
            else:
                left.append(execution)
        report.say(messages.SUCCESS, "Cancelled", cancelled)
        report.say(messages.WARNING, "Left alone, they were no longer waiting", left)


class ExecutionChangeList(ChangeList):
    def get_queryset(self, request, *args, **kwargs):
        return super().get_queryset(request, *args, **kwargs).defer(*HEAVY_FIELDS)


@admin.register(ScheduleExec)
class ScheduleExecAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "cron",
        "task_name",
        "call",
        "queue",
        "last_due",
        "next_due",
        "last_task_link",
        "state_badge",
    ]
    search_fields = ["name", "task_name"]
    ordering = ["name"]
    actions = ["action_force_run"]
    fields = readonly_fields = list_display

    @admin.display(description="arguments")
    def call(self, row):
        schedule = row.schedule
        return "-" if schedule is None else preview(call_text(schedule.args, schedule.kwargs))

    @admin.display(description="queue")
    def queue(self, row):
        schedule = row.schedule
        return "-" if schedule is None else schedule.queue_name

    @admin.display(description="next due")
    def next_due(self, row):
        schedule = row.schedule
        if schedule is None or row.state != ScheduleExec.States.ACTIVE:
            return "-"
        if schedule.cron.is_manual:
            return "run by hand only"
        if row.last_due is None:
            return "when a worker starts"
        next_due = schedule.cron.next_due(row.last_due)
        shown = display_for_value(next_due, "-")
        if next_due < timezone.now():
            return format_html('{} <strong style="color:{}">overdue</strong>', shown, RED)
        return shown

    @admin.display(description="last task")
    def last_task_link(self, row):
        if row.last_task_id is None:
            return "-"
        url = reverse("admin:toosimpleq_taskexec_change", args=[row.last_task_id])
        return format_html('<a href="{}">#{}</a>', url, row.last_task_id)

    @admin.display(description="state", ordering="state")
    def state_badge(self, row):
        if row.schedule is None:
            return badge(ScheduleExec.States.INVALID, "Invalid: no longer in the code")
        return badge(row.state, row.get_state_display())

    def has_force_run_permission(self, request):
        return has_model_permission(request, ScheduleExec, "force_run_scheduleexec")

    @admin.action(description="Run selected schedules now", permissions=["force_run"])
    def action_force_run(self, request, queryset):
        report = ActionReport(self, request)
        queued, waiting, missing = queue_each(
            self, request, queryset, lambda row: force_run(row.name), "Run now: queued #{pk}."
        )
        report.say(messages.SUCCESS, "Queued now", queued)
        report.say(messages.WARNING, "Not queued, their unique task already waits", waiting)
        report.say(messages.ERROR, "Not queued, no longer in the code", missing)


@admin.register(WorkerStatus)
class WorkerStatusAdmin(ReadOnlyAdmin):
    list_display = [
        "label",
        "hostname",
        "pid",
        "threads",
        "served_queues",
        "state_badge",
        "started",
        "last_heartbeat",
        "exit_code",
    ]
    search_fields = ["label", "hostname"]
    ordering = ["-started"]
    show_full_result_count = False
    paginator = CountCappedPaginator
    fields = readonly_fields = [*list_display, "stopped", "exit_log_text"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("exit_log")

    @admin.display(description="queues")
    def served_queues(self, worker):
        served = ", ".join(worker.queues) or "all"
        return f"{served}, except {', '.join(worker.excluded_queues)}" if worker.excluded_queues else served

    @admin.display(description="state")
    def state_badge(self, worker):
        return badge(worker.state, worker.States(worker.state).label)

    @admin.display(description="last heartbeat", ordering="last_tick")
    def last_heartbeat(self, worker):
        return f"{timesince(worker.last_tick)} ago"

    @admin.display(description="exit log")
    def exit_log_text(self, worker):
        return preformatted(worker.exit_log)


@admin.register(QueueOverview)
class QueueOverviewAdmin(admin.ModelAdmin):
    """Its list is the overview page: figures from stats.collect(), for anyone who may view executions."""

    def has_view_permission(self, request, obj=None):
        return has_model_permission(request, TaskExec, "view_taskexec")

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        snapshot = stats.collect()
        longest = stats.RECENT_WINDOWS[-1]
        since = snapshot.taken_at - datetime.timedelta(minutes=longest)
        context = {
            **self.admin_site.each_context(request),
            "title": "Queue overview",
            "opts": self.model._meta,
            "stats": snapshot,
            "live_states": [TaskExec.States(state).label for state in stats.LIVE_STATES],
            "finished_states": [TaskExec.States(state).label for state in TaskExec.FINISHED_STATES],
            "longest_window": longest,
            "shorter_windows": stats.RECENT_WINDOWS[:-1],
            "rows": [_overview_row(queue, since) for queue in snapshot.queues],
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/toosimpleq/overview.html", context)


def _overview_row(queue, longest_since):
    """What the overview shows of one queue, with links to its executions: those that ended since ``longest_since``."""
    changelist = reverse("admin:toosimpleq_taskexec_changelist")

    def link(state, **lookups):
        return f"{changelist}?{urlencode({'queue': queue.name, 'state__exact': state, **lookups})}"

    ended = queue.ended_recently[stats.RECENT_WINDOWS[-1]]
    return {
        "name": queue.name,
        "counts": [
            *((count, link(state)) for state, count in queue.counts.items()),
            *((count, link(state, finished__gte=longest_since.isoformat())) for state, count in ended.items()),
        ],
        "oldest_waiting_age": timesince(queue.oldest_waiting) if queue.oldest_waiting else None,
        "recent": [
            (queue.finished_recently[window], queue.failed_recently[window]) for window in stats.RECENT_WINDOWS[:-1]
        ],
        "workers_online": queue.workers_online,
    }
