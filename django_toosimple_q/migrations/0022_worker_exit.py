"""Upstream 1.x's worker exits: WorkerStatus.ExitCodes, and exit_log None until the worker stops."""

from django.db import migrations, models


def unset_running_logs(apps, schema_editor):
    WorkerStatus = apps.get_model("toosimpleq", "WorkerStatus")
    WorkerStatus.objects.using(schema_editor.connection.alias).filter(stopped__isnull=True).update(exit_log=None)


def set_running_logs(apps, schema_editor):
    WorkerStatus = apps.get_model("toosimpleq", "WorkerStatus")
    WorkerStatus.objects.using(schema_editor.connection.alias).filter(exit_log__isnull=True).update(exit_log="")


class Migration(migrations.Migration):
    dependencies = [
        ("toosimpleq", "0021_queue_claim_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="workerstatus",
            name="exit_code",
            field=models.IntegerField(
                blank=True,
                choices=[(0, "Stopped"), (77, "Terminated"), (78, "Abandoned threads"), (99, "Crashed")],
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="workerstatus",
            name="exit_log",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.RunPython(unset_running_logs, set_running_logs, elidable=True),
    ]
