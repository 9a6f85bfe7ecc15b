"""Nothing lost, with real worker processes killed, stopped and cut off from
their database.

The scenarios are in tests/chaos.py, run here at their short size (the long
one: ``python -m chaos``). Those that need PostgreSQL skip on SQLite, and the
SQLite one skips on PostgreSQL. Their checks are counts and states, not
timings, so that a loaded machine only makes them slower.
"""

import signal
import tempfile
from pathlib import Path
from unittest import skipUnless

from django.db import connection
from django.test import TransactionTestCase

from django_toosimple_q import conf
from django_toosimple_q.models import TaskExec

from . import chaos
from .helpers import wait_for

States = TaskExec.States
ON_POSTGRESQL = connection.vendor == "postgresql"


class ChaosTestCase(TransactionTestCase):
    def setUp(self):
        # The workers' logs, and the files that tasks wait for.
        log_dir = tempfile.TemporaryDirectory(prefix="toosimpleq-chaos-")
        self.addCleanup(log_dir.cleanup)
        self.log_dir = log_dir.name

    def queue_hold(self, key, gate):
        """Queue chaos.hold(key, gate): it waits until the file ``gate`` exists."""
        return TaskExec.objects.create(task_name="chaos.hold", args=[key, str(gate)], queue="chaos")

    def run_scenario(self, name):
        return chaos.run(name, self.log_dir)

    def assert_nothing_lost(self, outcome):
        """Every task SUCCEEDED once, nothing is left running or waiting, no worker went wrong."""
        self.assertEqual(outcome.problems, [], outcome)
        self.assertEqual((outcome.lost, outcome.double_successes, outcome.stuck), (0, 0, 0), outcome)

    def cluster(self):
        cluster = chaos.attached_cluster()
        if cluster is None:
            self.skipTest("needs the PostgreSQL cluster of tests/run.py, to stop and restart it")
        return cluster


class KillTests(ChaosTestCase):
    def assert_kills_lose_nothing(self, scenario):
        outcome = self.run_scenario(scenario)
        self.assert_nothing_lost(outcome)
        self.assertGreater(outcome.kills, 0, outcome)
        # Only a task running at a kill may have run twice: one whose outcome
        # waited for its batch, or was in one not committed, included.
        self.assertLessEqual(outcome.duplicated, outcome.in_flight, outcome)

    @skipUnless(ON_POSTGRESQL, "PostgreSQL: SKIP LOCKED claiming among many processes")
    def test_workers_killed_with_sigkill_lose_nothing(self):
        self.assert_kills_lose_nothing("kill -9")

    def test_workers_killed_while_they_write_batches_of_outcomes_lose_nothing(self):
        # On SQLite too: there the loop writes the outcomes with its claims.
        self.assert_kills_lose_nothing("kill -9 batches")

    @skipUnless(ON_POSTGRESQL, "a frozen process could hold SQLite's write lock")
    def test_outcomes_of_a_worker_taken_for_dead_are_refused_together(self):
        outcome = self.run_scenario("late outcomes")
        threads = chaos.sizes("late outcomes")["threads"]
        self.assert_nothing_lost(outcome)
        self.assertEqual(outcome.facts["late outcomes refused"], threads, outcome)
        self.assertEqual(outcome.facts["first runs"], {States.INTERRUPTED: threads}, outcome)
        # Each task ran twice, once in each worker, and SUCCEEDED once: the replacement's.
        self.assertEqual(outcome.duplicated, threads, outcome)

    @skipUnless(ON_POSTGRESQL, "PostgreSQL: many schedulers at once")
    def test_schedulers_killed_queue_each_due_time_once(self):
        outcome = self.run_scenario("schedules")
        self.assertEqual(outcome.problems, [], outcome)
        self.assertEqual((outcome.lost, outcome.duplicated), (0, 0), outcome)
        # From the first due time to the end of the kills.
        self.assertGreaterEqual(outcome.tasks, chaos.sizes("schedules")["seconds"] - 1, outcome)
        self.assertTrue(outcome.facts["last due queued"], outcome)


class PoisonTests(ChaosTestCase):
    def test_a_poison_task_that_kills_its_worker_runs_at_most_the_limit_then_fails(self):
        outcome = self.run_scenario("poison")
        limit = conf.MAX_INTERRUPTIONS
        self.assert_nothing_lost(outcome)
        self.assertEqual(outcome.facts["poison runs"], limit, outcome)
        self.assertEqual(outcome.kills, limit, outcome)
        self.assertEqual(outcome.facts["poison states"], [States.INTERRUPTED] * (limit - 1) + [States.FAILED], outcome)
        self.assertIn(f"Interrupted {limit} times", outcome.facts["poison error"])
        self.assertLessEqual(outcome.duplicated, outcome.in_flight, outcome)


class StopTests(ChaosTestCase):
    def test_sigterm_lets_tasks_end_within_the_grace_and_requeues_the_others(self):
        outcome = self.run_scenario("sigterm")
        sizes = chaos.sizes("sigterm")
        self.assertEqual(outcome.facts["exit code"], 77, outcome)
        self.assertEqual(
            outcome.facts["states"],
            {"within SUCCEEDED": sizes["within"], "beyond INTERRUPTED": sizes["beyond"]},
        )
        self.assertEqual(outcome.facts["run again by the other worker"], sizes["beyond"], outcome)
        self.assert_nothing_lost(outcome)
        self.assertEqual(outcome.duplicated, 0, outcome)

    def test_a_second_sigterm_skips_the_grace(self):
        execution = self.queue_hold("held", Path(self.log_dir) / "never")
        with chaos.Workers("twice", self.log_dir, "--queue", "chaos", "--tick", "0.1") as pool:
            label = pool.start("--grace", "600")
            wait_for(lambda: TaskExec.objects.get(pk=execution.pk).state == States.PROCESSING, timeout=120)
            worker = pool.processes[label]
            worker.send_signal(signal.SIGTERM)
            # Two signals sent together could make one: the second one waits
            # for the first to be seen.
            wait_for(lambda: "stopping: running tasks get 600.0s" in pool.log(label), timeout=60)
            worker.send_signal(signal.SIGTERM)
            self.assertEqual(worker.wait(timeout=60), 77)
        interrupted = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(interrupted.state, States.INTERRUPTED)
        self.assertEqual(interrupted.replaced_by.state, States.QUEUED)


class DatabaseOutageTests(ChaosTestCase):
    @skipUnless(ON_POSTGRESQL, "restarts the PostgreSQL server")
    def test_workers_survive_postgresql_restarts(self):
        self.cluster()
        outcome = self.run_scenario("postgres restart")
        self.assert_nothing_lost(outcome)
        self.assertEqual(outcome.facts["workers alive"], chaos.sizes("postgres restart")["workers"], outcome)

    @skipUnless(ON_POSTGRESQL, "stops the PostgreSQL server")
    def test_an_outage_longer_than_the_worker_timeout_runs_nothing_twice(self):
        self.cluster()
        outcome = self.run_scenario("long outage")
        self.assert_nothing_lost(outcome)
        self.assertEqual((outcome.duplicated, outcome.facts["interrupted during the wait"]), (0, 0), outcome)

    @skipUnless(ON_POSTGRESQL, "stops the PostgreSQL server")
    def test_an_outcome_reached_while_the_database_is_away_is_stored_when_it_is_back(self):
        cluster = self.cluster()
        gate = Path(self.log_dir) / "gate"
        # Without a key, chaos.hold touches no database: it can end while it is away.
        execution = self.queue_hold(None, gate)
        with chaos.Workers("outage", self.log_dir, "--queue", "chaos", "--tick", "0.1") as pool:
            label = pool.start()
            wait_for(lambda: TaskExec.objects.get(pk=execution.pk).state == States.PROCESSING, timeout=120)
            cluster.stop(mode="fast")
            connection.close()
            try:
                gate.touch()
                wait_for(lambda: "could not store the outcome of chaos.hold" in pool.log(label), timeout=60)
            finally:
                cluster.start()
            wait_for(lambda: TaskExec.objects.get(pk=execution.pk).state == States.SUCCEEDED, timeout=120)
            # The worker carries on.
            after = self.queue_hold("after", gate)
            wait_for(lambda: TaskExec.objects.get(pk=after.pk).state == States.SUCCEEDED, timeout=120)
            exit_codes = pool.stop()
            self.assertIn("database error", pool.log(label))
            self.assertEqual(pool.problems(exit_codes), [])
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).result, "done")


class SqliteTests(ChaosTestCase):
    @skipUnless(connection.vendor == "sqlite", "SQLite: its one writer at a time")
    def test_workers_and_a_busy_writer_share_sqlite(self):
        outcome = self.run_scenario("sqlite writers")
        self.assert_nothing_lost(outcome)
        self.assertEqual(outcome.facts["locked at ERROR"], 0, outcome)
        # Each task run once: no worker was taken for dead, nothing failed.
        self.assertEqual(
            (outcome.duplicated, outcome.facts["interrupted"], outcome.facts["failed"]), (0, 0, 0), outcome
        )
        self.assertGreater(outcome.facts["rows written meanwhile"], 0, outcome)
