"""From upstream 1.2.1's schema to this project's, keeping every row.

Pickled values become JSON (see _from_upstream.py); rows gain the queue,
priority and dedup key of their registered task; workers gain the columns
this project's heartbeat and reaping read.
"""

import django.db.models.deletion
from django.db import migrations, models

import django_toosimple_q.fields
import django_toosimple_q.models

from ._from_upstream import convert_rows

STATES = [
    ("SLEEPING", "Sleeping"),
    ("QUEUED", "Queued"),
    ("PROCESSING", "Processing"),
    ("SUCCEEDED", "Succeeded"),
    ("FAILED", "Failed"),
    ("INTERRUPTED", "Interrupted"),
    ("INVALID", "Invalid"),
    ("CANCELLED", "Cancelled"),
]


class Migration(migrations.Migration):
    dependencies = [("toosimpleq", "0016_upstream_1_2_1")]

    operations = [
        # Executions: new columns, then the pickles converted into JSON ones.
        migrations.AddField("taskexec", "queue", models.CharField(default="default", max_length=255)),
        migrations.AddField("taskexec", "priority", models.IntegerField(default=0)),
        migrations.AddField(
            "taskexec",
            "attempt",
            models.PositiveIntegerField(default=1, help_text="which run of its call this is (1: the first)"),
        ),
        migrations.AddField(
            "taskexec",
            "dedup_key",
            models.CharField(blank=True, editable=False, max_length=64, null=True, unique=True),
        ),
        migrations.AddField("taskexec", "json_args", django_toosimple_q.fields.TaggedJSONField(default=list)),
        migrations.AddField("taskexec", "json_kwargs", django_toosimple_q.fields.TaggedJSONField(default=dict)),
        migrations.AddField(
            "taskexec", "json_result", django_toosimple_q.fields.TaggedJSONField(blank=True, null=True)
        ),
        migrations.RunPython(convert_rows, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField("taskexec", "args"),
        migrations.RemoveField("taskexec", "kwargs"),
        migrations.RemoveField("taskexec", "result"),
        migrations.RenameField("taskexec", "json_args", "args"),
        migrations.RenameField("taskexec", "json_kwargs", "kwargs"),
        migrations.RenameField("taskexec", "json_result", "result"),
        migrations.AlterField(
            "taskexec",
            "retry_delay",
            models.FloatField(default=0, help_text="seconds before the next retry"),
        ),
        migrations.AlterField(
            "taskexec", "retries", models.IntegerField(default=0, help_text="retries left (-1: forever)")
        ),
        migrations.AlterField(
            "taskexec", "result_preview", models.CharField(blank=True, default="", max_length=255)
        ),
        migrations.AlterField("taskexec", "error", models.TextField(blank=True, default="")),
        migrations.AlterField(
            "taskexec", "state", models.CharField(choices=STATES, default="QUEUED", max_length=32)
        ),
        migrations.AlterField(
            "taskexec",
            "replaced_by",
            models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="replaces",
                to="toosimpleq.taskexec",
            ),
        ),
        migrations.AlterField(
            "taskexec",
            "worker",
            models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="executions",
                to="toosimpleq.workerstatus",
            ),
        ),
        migrations.AlterModelOptions(
            "taskexec",
            {
                "permissions": [
                    ("requeue_taskexec", "Can requeue tasks"),
                    ("cancel_taskexec", "Can cancel waiting tasks"),
                ],
                "verbose_name": "task execution",
            },
        ),
        migrations.AddIndex(
            "taskexec",
            models.Index(
                condition=models.Q(("state", "QUEUED")),
                fields=["-priority", "due", "id"],
                name="toosimpleq_claim_idx",
            ),
        ),
        migrations.AddIndex(
            "taskexec",
            models.Index(
                condition=models.Q(("state", "SLEEPING")), fields=["due"], name="toosimpleq_sleeping_idx"
            ),
        ),
        migrations.AddIndex(
            "taskexec",
            models.Index(
                condition=models.Q(("state", "PROCESSING")), fields=["worker"], name="toosimpleq_processing_idx"
            ),
        ),
        migrations.AddIndex(
            "taskexec", models.Index(fields=["task_name", "created"], name="toosimpleq_task_idx")
        ),
        # Workers: one row per run of a worker, labels may repeat.
        migrations.AlterField("workerstatus", "label", models.CharField(max_length=1024)),
        migrations.RenameField("workerstatus", "included_queues", "queues"),
        migrations.AlterField(
            "workerstatus",
            "queues",
            models.JSONField(blank=True, default=list, help_text="queues served (empty: all)"),
        ),
        migrations.AlterField("workerstatus", "excluded_queues", models.JSONField(blank=True, default=list)),
        migrations.AddField(
            "workerstatus", "hostname", models.CharField(default="", max_length=1024), preserve_default=False
        ),
        migrations.AddField("workerstatus", "pid", models.IntegerField(default=0), preserve_default=False),
        migrations.AddField("workerstatus", "threads", models.PositiveIntegerField(default=1)),
        migrations.AlterField(
            "workerstatus",
            "timeout",
            models.DurationField(
                default=django_toosimple_q.models.default_worker_timeout,
                help_text="without a heartbeat for this long, it is taken for dead",
            ),
        ),
        migrations.AlterField("workerstatus", "exit_code", models.IntegerField(blank=True, null=True)),
        migrations.AlterField("workerstatus", "exit_log", models.TextField(blank=True, default="")),
        migrations.AlterModelOptions(
            "workerstatus", {"verbose_name": "worker status", "verbose_name_plural": "worker statuses"}
        ),
        # Schedules: what they run, for the admin to show.
        migrations.AddField(
            "scheduleexec", "task_name", models.CharField(blank=True, default="", max_length=1024)
        ),
        migrations.AddField("scheduleexec", "cron", models.CharField(blank=True, default="", max_length=255)),
        migrations.AlterField(
            "scheduleexec",
            "last_task",
            models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="toosimpleq.taskexec",
            ),
        ),
        migrations.AlterField(
            "scheduleexec",
            "state",
            models.CharField(choices=[("ACTIVE", "Active"), ("INVALID", "Invalid")], default="ACTIVE", max_length=32),
        ),
        migrations.AlterModelOptions(
            "scheduleexec",
            {
                "permissions": [("force_run_scheduleexec", "Can force execution of schedules")],
                "verbose_name": "schedule",
            },
        ),
    ]
