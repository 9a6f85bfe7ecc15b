"""The schema of upstream django-toosimple-q 1.2.1, where this project's history starts.

It stands for upstream's sixteen migrations: on a database that applied them
all, Django takes it as applied and goes on with 0017, which converts the
rows; on a new database it makes upstream's tables, which 0017 then turns
into this project's. A database part-way through upstream's history is
refused by the system check toosimpleq.E006 (upgrade to upstream 1.2.1 first).
args, kwargs and result held pickles (django-picklefield) in text columns.
"""

import datetime

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

from . import UPSTREAM_MIGRATIONS



class Migration(migrations.Migration):
    initial = True

    replaces = [("toosimpleq", name) for name in UPSTREAM_MIGRATIONS]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="WorkerStatus",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("label", models.CharField(max_length=1024, unique=True)),
                ("included_queues", models.JSONField(default=list)),
                ("excluded_queues", models.JSONField(default=list)),
                ("timeout", models.DurationField(default=datetime.timedelta(seconds=3600))),
                ("last_tick", models.DateTimeField(default=django.utils.timezone.now)),
                ("started", models.DateTimeField(default=django.utils.timezone.now)),
                ("stopped", models.DateTimeField(blank=True, null=True)),
                ("exit_code", models.IntegerField(blank=True, null=True)),
                ("exit_log", models.TextField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="TaskExec",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("task_name", models.CharField(max_length=1024)),
                ("args", models.TextField(blank=True)),
                ("kwargs", models.TextField(blank=True)),
                ("retries", models.IntegerField(default=0)),
                ("retry_delay", models.IntegerField(default=0)),
                ("due", models.DateTimeField(default=django.utils.timezone.now)),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                ("started", models.DateTimeField(blank=True, null=True)),
                ("finished", models.DateTimeField(blank=True, null=True)),
                ("state", models.CharField(default="QUEUED", max_length=32)),
                ("result", models.TextField(blank=True, null=True)),
                ("result_preview", models.CharField(blank=True, editable=False, max_length=255, null=True)),
                ("error", models.TextField(blank=True, null=True)),
                (
                    "replaced_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to="toosimpleq.taskexec",
                    ),
                ),
                (
                    "worker",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to="toosimpleq.workerstatus",
                    ),
                ),
                ("stdout", models.TextField(blank=True, default="")),
                ("stderr", models.TextField(blank=True, default="")),
            ],
            options={"permissions": [("requeue_taskexec", "Can requeue tasks")]},
        ),
        migrations.CreateModel(
            name="ScheduleExec",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=1024, unique=True)),
                ("last_due", models.DateTimeField(blank=True, null=True)),
                (
                    "last_task",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to="toosimpleq.taskexec",
                    ),
                ),
                ("state", models.CharField(default="ACTIVE", max_length=32)),
            ],
            options={"permissions": [("force_run_scheduleexec", "Can force execution of schedules")]},
        ),
    ]
