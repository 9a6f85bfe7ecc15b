"""A read-only view of executions and workers in Django's admin."""

from django.contrib import admin

from .models import TaskExec, WorkerStatus


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TaskExec)
class TaskExecAdmin(ReadOnlyAdmin):
    list_display = ["id", "task_name", "state", "queue", "priority", "due", "started", "finished", "result_preview"]
    list_filter = ["state", "queue", "task_name"]
    search_fields = ["task_name"]
    date_hierarchy = "created"
    ordering = ["-id"]


@admin.register(WorkerStatus)
class WorkerStatusAdmin(ReadOnlyAdmin):
    list_display = ["label", "state", "hostname", "pid", "threads", "started", "last_tick", "stopped", "exit_code"]
    search_fields = ["label", "hostname"]
    ordering = ["-started"]
