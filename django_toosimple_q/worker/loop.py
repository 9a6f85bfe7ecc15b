"""The worker: one loop thread that claims tasks for a pool of executor threads.

The loop thread heartbeats, wakes due SLEEPING tasks, runs the schedules,
reaps the tasks of dead workers, and claims at most as many tasks as it has
idle threads. It installs no signal handler: the ``worker`` command and
embedded mode decide how a stop is asked for, and call ``stop()``.
"""

import datetime
import functools
import logging
import math
import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, wait

from django.db import DatabaseError, InterfaceError, connections
from django.utils import timezone

from .. import conf, signals, store, wakeup
from ..models import TaskExec, WorkerStatus, default_label, queue_database
from . import errors, executor, recovery, timeouts
from .announcer import Announcer
from .backoff import Backoff
from .claiming import QueueFilter
from .counters import RunCounters
from .scheduler import Scheduler

logger = logging.getLogger("django_toosimple_q")

# Seconds a stopping worker waits for its announcer at least.
ANNOUNCER_LEAST_WAIT = 1.0


class Worker:
    """Runs queued tasks on ``threads`` threads until stopped.

    ``once``: run one task, then stop. ``until_done``: stop when nothing is
    waiting or running. ``max_tasks``: stop after that many tasks.
    ``stop_with_main_thread``: stop when the main thread ends, as the
    interpreter begins to exit (embedded mode).
    """

    def __init__(
        self,
        *,
        threads=1,
        queues=(),
        excluded_queues=(),
        tick=1.0,
        label=None,
        once=False,
        until_done=False,
        max_tasks=None,
        schedules=True,
        grace=None,
        timeout=None,
        stop_with_main_thread=False,
    ):
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if queues and excluded_queues:
            raise ValueError("give the queues to serve or the queues to exclude, not both")
        if not (math.isfinite(tick) and tick > 0):
            raise ValueError(f"tick must be a finite number of seconds > 0, not {tick}")
        if max_tasks is not None and max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.threads = threads
        self.queue_filter = QueueFilter(tuple(queues), tuple(excluded_queues))
        self.tick = tick
        # "{pid}" in a label is this process's id, as upstream's --label had it.
        self.label = label.replace("{pid}", str(os.getpid())) if label else default_label()
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
        self.timeout = conf.WORKER_TIMEOUT if timeout is None else timeout
        # A timeout shorter than TOOSIMPLEQ_HEARTBEAT (upstream's tests use
        # --timeout 3) gets two heartbeats within it, so a live worker is never
        # taken for dead.
        self.heartbeat = min(conf.HEARTBEAT, self.timeout / 2)
        # --once runs one task if one is waiting, and never waits for one.
        self.until_done = until_done or once
        self.max_tasks = 1 if once else max_tasks
        self.scheduler = Scheduler(self.queue_filter) if schedules else None
        self.grace = conf.GRACE if grace is None else grace
        if not (math.isfinite(self.grace) and self.grace >= 0):
            raise ValueError(
                f"grace must be a finite number of seconds >= 0 (--grace, TOOSIMPLEQ_GRACE), not {self.grace}"
            )
        self.stop_with_main_thread = stop_with_main_thread
        self.status = None
        self.exit_code = None
        self._claimed_count = 0
        self._running = {}  # future -> ClaimedTask
        self._watches = {}  # future -> timeouts.Watch, for the tasks that have a timeout
        self.abandoned_threads = 0
        self._stuck = set()  # the futures of abandoned threads still in their task
        self.counters = RunCounters()
        self._together = executor.group_commit()  # what the pool's threads hand their outcomes over to
        # Whether this loop writes those outcomes, with its claims (see group_commit.py).
        self._loop_writes = self._together is not None and not self._together.writes_itself
        self._announcer = None  # where such a loop hands what follows those outcomes (see announcer.py)
        # Tasks whose last run was interrupted, claimed, waiting to run alone;
        # and the future of the one running alone.
        self._held = []
        self._alone = None
        self._running_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._grace_deadline = None
        self._thread = None
        self._outage = False  # the database went away, and no heartbeat reached it since
        self._database_back = None  # when a heartbeat last reached it after an outage

    # Control, from any thread.

    def start(self):
        """Start the loop thread and return at once."""
        self._thread = threading.Thread(target=self._run, name=f"toosimpleq-{self.label}", daemon=True)
        self._thread.start()

    def run(self):
        """Run in the calling thread until the worker stops; returns its exit code."""
        self._run()
        return self.exit_code

    def join(self, timeout=None):
        self._thread.join(timeout)
        return self.exit_code

    def stop(self, grace=None):
        """Stop claiming; running tasks get ``grace`` seconds to finish.

        A second call shortens the grace period (``stop(grace=0)``: at once).
        """
        grace = self.grace if grace is None else grace
        deadline = time.monotonic() + grace
        if self._grace_deadline is None or deadline < self._grace_deadline:
            self._grace_deadline = deadline
        self._stopping.set()
        self._wake.set()

    def wake(self):
        """New work may be waiting: claim now rather than at the next tick."""
        self._wake.set()

    def task_queued(self, queue):
        """A task was queued on ``queue``: wake up if this worker serves it."""
        if self.queue_filter.serves(queue):
            self.wake()

    @property
    def running_count(self):
        with self._running_lock:
            return len(self._running)

    # The loop thread.

    def _run(self):
        if in_callers_transaction():
            self._run_in_callers_transaction()
            return
        if not self._register_when_possible():
            return
        # Room for the threads it may abandon: each one's capacity is replaced.
        pool = ThreadPoolExecutor(
            self.threads + conf.MAX_ABANDONED_THREADS, thread_name_prefix=f"toosimpleq-{self.label}"
        )
        listener = wakeup.start_listener(self.task_queued, queue_database(), name=f"toosimpleq-{self.label}-listener")
        if self._loop_writes:
            self._announcer = Announcer(name=f"toosimpleq-{self.label}-announcer")
            self._announcer.start()
        wakeup.add_local_worker(self)
        exit_log = ""
        try:
            self._loop(pool)
            store.release([task.id for task in self._held], self.status.pk)
            self.exit_code = self._finish_running()
            if self.abandoned_threads > conf.MAX_ABANDONED_THREADS:
                self.exit_code = WorkerStatus.ExitCodes.ABANDONED_THREADS
            if not self.running_count:
                self._close_pool_connections(pool)
            # Tasks interrupted after the grace period are left to their
            # threads: waiting for them is what the grace period bounds.
            pool.shutdown(wait=False, cancel_futures=True)
        except Exception:
            exit_log = traceback.format_exc()
            logger.exception("worker %s crashed", self.label)
            self.exit_code = WorkerStatus.ExitCodes.CRASHED
        finally:
            wakeup.remove_local_worker(self)
            if listener:
                listener.stop()
                listener.join()
            if self._announcer is not None:
                self._stop_announcer()
            self._record_exit(exit_log)
            connections.close_all()

    def _run_in_callers_transaction(self):
        """Run the waiting tasks one after another on this thread, then stop.

        The caller's transaction (a TestCase) holds rows no other connection
        sees, and on SQLite no claim could begin a transaction of its own:
        the tasks run here, on its connection, each outcome in a savepoint.
        Nothing committed elsewhere can reach this worker, so it stops when
        nothing is left. An error of the engine is raised to the caller,
        whose transaction it is, rather than retried.
        """
        self._register()
        logger.info(
            "worker %s runs inside a transaction: tasks run one at a time on the calling thread, "
            "and it stops when none is left",
            self.label,
        )
        while not self._stopping.is_set() and self._budget_left() > 0:
            self._poll()
            claimed = store.claim(self.status.pk, 1, self.queue_filter)
            if not claimed:
                break
            self._claimed_count += 1
            executor.execute(claimed[0], self.status.pk)
        self.exit_code = 0
        self._record_exit("")

    def run_now(self, executions):
        """Run ``executions`` on this thread at once, and the retries they queue without delay (immediate mode).

        Those not QUEUED (SLEEPING until their due time, or refused as
        duplicates) are left to wait. Each ends with its outcome stored.
        """
        ids = [execution.pk for execution in executions if execution and execution.state == TaskExec.States.QUEUED]
        if not ids:
            return
        self._register()
        while ids:
            for task in store.claim_these(ids, self.status.pk):
                executor.execute(task, self.status.pk)
            ids = list(
                TaskExec.objects.filter(replaces__in=ids, state=TaskExec.States.QUEUED).values_list("pk", flat=True)
            )
        self.exit_code = 0
        self._record_exit("")
        for execution in executions:
            if execution:
                execution.refresh_from_db()

    def _register_when_possible(self):
        """Register, waiting for the database (or its tables) as long as needed.

        A worker started with the web server may come up before the
        database, or before ``migrate`` made its tables: it says so once.
        Any other database error (a label too long for its column, say)
        would come back at every try: the worker stops with it, exit 99.
        """
        backoff = Backoff(first=1.0, longest=10.0)
        said = False
        while not self._stopping.is_set():
            try:
                self._register()
                return True
            except (DatabaseError, InterfaceError) as error:
                if not (errors.is_transient(error) or errors.is_schema_behind(error)):
                    logger.error("worker %s cannot register: %s", self.label, error)
                    self.exit_code = WorkerStatus.ExitCodes.CRASHED
                    return False
                if not said:
                    logger.warning("worker %s waits for the database, or for migrate (%s)", self.label, error)
                    said = True
                self._outage = True
                connections.close_all()
                self._stopping.wait(backoff.next_delay())
        self.exit_code = 0
        return False

    def _register(self):
        self.status = WorkerStatus.objects.create(
            label=self.label,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            threads=self.threads,
            queues=list(self.queue_filter.queues),
            excluded_queues=list(self.queue_filter.excluded),
            timeout=datetime.timedelta(seconds=self.timeout),
        )
        if self.scheduler:
            self.scheduler.sync()
        logger.info(
            "worker %s started: %s thread(s), queues %s",
            self.label,
            self.threads,
            self._describe_queues(),
            extra={"worker": self.status.pk},
        )
        signals.send(signals.worker_started, WorkerStatus, status=self.status)

    def _record_exit(self, exit_log):
        self.status.stopped, self.status.exit_code, self.status.exit_log = timezone.now(), self.exit_code, exit_log
        try:
            WorkerStatus.objects.filter(pk=self.status.pk).update(
                stopped=self.status.stopped,
                exit_code=self.exit_code,
                exit_log=exit_log,
                counters=self.counters.snapshot(),
            )
        except (DatabaseError, InterfaceError):
            logger.exception("worker %s could not record its exit", self.label)
        logger.info("worker %s stopped (exit code %s)", self.label, self.exit_code, extra={"worker": self.status.pk})
        signals.send(signals.worker_stopped, WorkerStatus, status=self.status)

    def _describe_queues(self):
        if self.queue_filter.queues:
            return ", ".join(self.queue_filter.queues)
        if self.queue_filter.excluded:
            return "all but " + ", ".join(self.queue_filter.excluded)
        return "all"

    def _loop(self, pool):
        self._next_heartbeat = self._next_poll = 0.0
        outage = Backoff()
        while not self._stopping.is_set():
            try:
                if self._step(pool):
                    return
                outage.reset()
            except (DatabaseError, InterfaceError) as error:
                if not (errors.is_transient(error) or errors.is_schema_behind(error)):
                    raise  # the worker crashes with it (exit 99): no retry would mend it
                # The database went away (a restart, the network), or migrate
                # is under way: running tasks go on, and so does this loop
                # once it is back.
                self._outage = True
                delay = outage.next_delay()
                logger.warning("worker %s: database error (%s); retrying in %.1fs", self.label, error, delay)
                connections.close_all()
                self._stopping.wait(delay)

    def _step(self, pool):
        """Heartbeat, poll and claim as due; then wait for work. True when done."""
        # Cleared before looking for work, so that a wake() coming while we
        # look is not lost: the wait below then returns at once.
        self._wake.clear()
        if self.stop_with_main_thread and not threading.main_thread().is_alive():
            self.stop()
            return True
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + self.heartbeat
        if now >= self._next_poll:
            self._poll()
            self._next_poll = now + self.tick
        next_deadline = self._enforce_timeouts(pool)
        if self._stopping.is_set():
            return True  # stop() came while the loop looked: a stopping worker claims nothing
        free = 0 if self._isolating() else min(self.threads - self.running_count, self._budget_left())
        claimed, say = self._store_and_claim(free)
        claimed = self._hold_suspects(claimed)
        submitted = self._submit_all(pool, claimed)
        say()  # the outcomes stored, once their threads have their next tasks
        if submitted is None:
            return True
        if self._held and not self.running_count:
            futures = self._submit_all(pool, [self._held.pop(0)])
            if futures is None:
                return True
            [self._alone] = futures
        if self._done(claimed):
            return True
        if claimed and len(claimed) == free:
            return False  # all free threads got work: there may be more
        if self._loop_writes and self._unwritten():
            return False  # more outcomes than a batch takes
        wake_at = min(self._next_poll, self._next_heartbeat, next_deadline)
        self._wake.wait(timeout=max(0.0, wake_at - time.monotonic()))
        return False

    def _store_and_claim(self, limit):
        """Claim up to ``limit`` tasks, in one transaction with the outcomes handed over since the last claim
        (unless a pool thread writes them, see group_commit.py); see ``executor.store_and_claim``.

        Those outcomes are taken once the free threads were counted: the
        outcome of each thread counted free is among them. Those not written
        (the database went away) are written with the next claim.
        """
        endings = self._together.take() if self._loop_writes else []
        try:
            claimed, say = executor.store_and_claim(endings, self.status.pk, limit, self.queue_filter)
        except BaseException:
            if endings:
                self._together.put_back(endings)
            raise
        if endings and self._announcer is not None and executor.calls_receivers(endings):
            # The project's code, which may take its time: not on this thread.
            return claimed, functools.partial(self._announcer.announce, say)
        return claimed, say

    def _store_outcomes(self):
        """Store the outcomes handed over, claiming nothing."""
        _, say = self._store_and_claim(0)
        say()

    def _stop_announcer(self):
        """Let the announcer send what it was given, within the grace period; then stop waiting for it."""
        deadline = self._grace_deadline or time.monotonic() + self.grace
        # At least a moment: the grace period may be spent on running tasks
        # (or be 0), and what is left to send takes microseconds unless a receiver is stuck.
        if not self._announcer.stop(timeout=max(ANNOUNCER_LEAST_WAIT, deadline - time.monotonic())):
            logger.warning(
                "worker %s: a receiver of task_finished still runs at the end of the grace period; not waited for",
                self.label,
            )

    def _unwritten(self):
        """How many outcomes handed over wait to be written."""
        return len(self._together) if self._together else 0

    def _heartbeat(self):
        self._beat()
        if self._outage:
            self._outage = False
            self._database_back = timezone.now()
            logger.info("worker %s: the database is back; its peers get their full timeout to beat again", self.label)
        recovery.reap_dead_workers(database_back=self._database_back)

    def _beat(self):
        WorkerStatus.objects.filter(pk=self.status.pk).update(
            last_tick=timezone.now(), counters=self.counters.snapshot()
        )

    def _poll(self):
        """What is done once a tick rather than at each claim."""
        if self.scheduler:
            self.scheduler.run_due()
        store.wake_sleeping(self.queue_filter)

    def _budget_left(self):
        if self.max_tasks is None:
            return self.threads
        return self.max_tasks - self._claimed_count

    def _isolating(self):
        """Whether a task interrupted before runs, or waits to: then nothing more is claimed.

        A task that killed its worker (os._exit, out of memory) would kill
        the tasks running beside it again at each of its runs, and have them
        counted as interrupted as often as itself: it runs alone instead.
        """
        return bool(self._held) or (self._alone is not None and not self._alone.done())

    def _hold_suspects(self, claimed):
        """The claimed tasks to run now; those whose last run was interrupted are held, to run alone."""
        suspects = [task for task in claimed if task.interrupted_before]
        if not suspects:
            return claimed
        self._held += suspects
        return [task for task in claimed if not task.interrupted_before]

    def _submit_all(self, pool, claimed):
        """Hand the claimed tasks to the pool; their futures, or None if it takes no more work."""
        futures = []
        for position, task in enumerate(claimed):
            seconds = timeouts.limit_of(task)
            watch = None if seconds is None else timeouts.Watch(seconds)
            try:
                future = pool.submit(self._through_executor, executor.execute, task, watch=watch)
            except RuntimeError:
                # The interpreter is exiting and its pools take no more
                # work: what was claimed goes back to the queue.
                store.release([task.id for task in claimed[position:]], self.status.pk)
                self.stop()
                return None
            self._claimed_count += 1
            self._track(future, task, watch)
            futures.append(future)
        return futures

    def _track(self, future, task, watch=None):
        with self._running_lock:
            self._running[future] = task
            if watch is not None:
                self._watches[future] = watch
        future.add_done_callback(self._task_done)

    def _through_executor(self, function, task, *args, **kwargs):
        """``function(task, ...)``, the executor's ``execute`` or ``store_timed_out``, on a thread of the pool.

        Its outcome is handed over to the worker's GroupCommit, and counted once stored.
        """
        try:
            function(
                task,
                self.status.pk,
                *args,
                give_up=self._stopping_now,
                together=self._together,
                ended=functools.partial(self.counters.record, task.queue),
                **kwargs,
            )
        except Exception:
            logger.exception("could not store the outcome of %s #%s", task.task_name, task.id)

    def _enforce_timeouts(self, pool):
        """End the tasks past their timeout, abandon the threads stuck in them; returns the next deadline."""
        now = time.monotonic()
        with self._running_lock:
            watched = list(self._watches.items())
        for future, watch in watched:
            if watch.check(now):
                self._abandon(pool, future, watch)
        with self._running_lock:
            return min((watch.next_check() for watch in self._watches.values()), default=math.inf)

    def _abandon(self, pool, future, watch):
        """Stop counting ``future``'s thread, stuck past its timeout; store its task's outcome from another."""
        with self._running_lock:
            task = self._running.pop(future)
            self._watches.pop(future)
            self._stuck.add(future)
        self.abandoned_threads += 1
        WorkerStatus.objects.filter(pk=self.status.pk).update(abandoned_threads=self.abandoned_threads)
        logger.error(
            "%s #%s timed out after %ss and its thread ignores it: thread abandoned (%s so far)",
            task.task_name,
            task.id,
            watch.seconds,
            self.abandoned_threads,
            extra=executor.log_extra(task, self.status.pk),
        )
        stored = pool.submit(self._through_executor, executor.store_timed_out, task, watch.seconds)
        self._track(stored, task)
        if self._alone is future:  # a task running alone: the others wait until its outcome is stored
            self._alone = stored
        if self.abandoned_threads > conf.MAX_ABANDONED_THREADS:
            logger.error(
                "worker %s abandoned more than TOOSIMPLEQ_MAX_ABANDONED_THREADS (%s) threads: it stops, exit code %s",
                self.label,
                conf.MAX_ABANDONED_THREADS,
                WorkerStatus.ExitCodes.ABANDONED_THREADS,
            )
            self.stop()

    def _stopping_now(self):
        """Whether the grace period is over: outcomes not yet stored are abandoned."""
        return self._grace_deadline is not None and time.monotonic() >= self._grace_deadline

    def _task_done(self, future):
        with self._running_lock:
            self._running.pop(future, None)
            self._watches.pop(future, None)
            self._stuck.discard(future)
        self._wake.set()

    def _done(self, claimed):
        if claimed or self.running_count or self._held or self._unwritten():
            return False
        if self.max_tasks is not None and self._budget_left() <= 0:
            return True
        return self.until_done and not store.has_waiting_work(self.queue_filter)

    def _finish_running(self):
        """Give running tasks until the grace deadline, writing their outcomes; interrupt those still running."""
        if not self._stopping.is_set():  # the loop ends by itself only when nothing runs
            return 0
        while (self.running_count or self._unwritten()) and time.monotonic() < self._grace_deadline:
            self._wake.clear()
            reached = self._while_stopping(self._beat) and self._while_stopping(self._store_outcomes)
            if self.running_count or not reached:
                self._wake.wait(timeout=min(self.heartbeat, max(0.0, self._grace_deadline - time.monotonic())))
        with self._running_lock:
            unfinished = [task.id for task in self._running.values()]
        if self._together:
            # Ended, but the database was away until the end: not known to have run.
            unfinished += [ending.claimed.id for ending in self._together.take_all()]
        if not unfinished:
            return 0
        logger.warning(
            "worker %s: %s task(s) still running, or their outcome unwritten, after the grace period",
            self.label,
            len(unfinished),
        )
        executions = TaskExec.objects.filter(pk__in=unfinished, worker_id=self.status.pk)
        recovery.interrupt(executions, reason="its worker stopped before it finished")
        return WorkerStatus.ExitCodes.TERMINATED

    def _while_stopping(self, write):
        """``write()`` through the grace period: beating, lest the running tasks be taken for
        orphans, or storing their outcomes. The database may be away: False, to be tried again."""
        try:
            write()
        except (DatabaseError, InterfaceError) as error:
            # The tasks may still end and store their outcome once it is back.
            logger.warning("worker %s: database error while stopping (%s)", self.label, error)
            connections.close_all()
            return False
        return True

    def _close_pool_connections(self, pool):
        """Close the connection of every pool thread.

        Connections belong to the thread that opened them. A barrier makes
        each of these jobs wait for the others, so they run on distinct
        threads: one per thread of the pool, less those stuck in a task past
        its timeout (each closes its own when it ends).
        """
        with self._running_lock:
            # ThreadPoolExecutor keeps the threads it started in _threads.
            idle = len(pool._threads) - len(self._stuck)
        if idle <= 0:
            return
        barrier = threading.Barrier(idle)

        def close_this_threads_connections():
            try:
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass  # a thread was slow to come: close this one's anyway
            connections.close_all()

        try:
            wait([pool.submit(close_this_threads_connections) for _ in range(idle)])
        except RuntimeError:
            pass  # the interpreter is exiting: the pool's threads, and their connections, are gone


def in_callers_transaction():
    """Whether the calling thread is inside a transaction on the queue's database."""
    return connections[queue_database()].in_atomic_block


def exit_leaving_task_threads(exit_code):
    """End the process now, without waiting for the threads of running tasks.

    The interpreter's normal exit joins the pool's threads. Once their tasks
    are INTERRUPTED and queued again (or left to the other workers' reaping),
    waiting for them would only delay the exit, or run them twice.
    """
    logging.shutdown()  # flushes the log, as a normal exit would
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
