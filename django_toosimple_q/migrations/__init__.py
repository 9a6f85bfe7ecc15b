# Upstream django-toosimple-q 1.2.1's migrations, in order: 0016_upstream_1_2_1
# stands for them all (see there).
UPSTREAM_MIGRATIONS = [
    "0001_initial",
    "0002_auto_20191101_1838",
    "0003_task_queue",
    "0004_auto_20200507_1339",
    "0005_auto_20210302_1748",
    "0006_task_replacement",
    "0007_schedule_datetime_kwarg",
    "0008_auto_20210902_2111",
    "0009_auto_20210902_2245",
    "0010_auto_20220324_0419",
    "0011_workerstatus",
    "0012_rename_last_run_scheduleexec_last_task",
    "0013_workerstatus_exit_code_workerstatus_exit_log",
    "0014_alter_workerstatus_exit_code",
    "0015_taskexec_result_preview",
    "0016_alter_scheduleexec_options_alter_taskexec_options",
]
