"""The worker: one loop thread that claims tasks for a pool of executor threads.

The loop thread heartbeats, wakes due SLEEPING tasks, runs the schedules,
reaps the tasks of dead workers, and claims at most as many tasks as it has
idle threads. It installs no signal handler: the ``worker`` command and
embedded mode decide how a stop is asked for, and call ``stop()``.
"""

import datetime
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

from .. import conf, wakeup
from ..models import TaskExec, WorkerStatus, default_label, queue_database
from . import claiming, errors, executor, recovery
from .backoff import Backoff
from .claiming import QueueFilter
from .scheduler import Scheduler

logger = logging.getLogger("django_toosimple_q")


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
        # TOOSIMPLEQ_WORKER_TIMEOUT against TOOSIMPLEQ_HEARTBEAT is a system check's.
        if timeout is not None and not (math.isfinite(timeout) and timeout > conf.HEARTBEAT):
            raise ValueError(
                f"timeout must be a number of seconds longer than the heartbeat (TOOSIMPLEQ_HEARTBEAT = "
                f"{conf.HEARTBEAT}s), not {timeout!r}: a live worker would be taken for dead"
            )
        self.timeout = conf.WORKER_TIMEOUT if timeout is None else timeout
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
        # Tasks whose last run was interrupted, claimed, waiting to run alone;
        # and the future of the one running alone.
        self._held = []
        self._alone = None
        self._running_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._grace_deadline = None
        self._thread = None

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
        if not self._register_when_possible():
            return
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"toosimpleq-{self.label}")
        listener = self._start_listener()
        wakeup.add_local_worker(self)
        exit_log = ""
        try:
            self._loop(pool)
            claiming.release([task.id for task in self._held], self.status.pk)
            self.exit_code = self._finish_running()
            if not self.running_count:
                self._close_pool_connections(pool)
            # Tasks interrupted after the grace period are left to their
            # threads: waiting for them is what the grace period bounds.
            pool.shutdown(wait=False, cancel_futures=True)
        except Exception:
            exit_log = traceback.format_exc()
            logger.exception("worker %s crashed", self.label)
            self.exit_code = WorkerStatus.CRASHED_EXIT_CODE
        finally:
            wakeup.remove_local_worker(self)
            if listener:
                listener.stop()
                listener.join()
            self._record_exit(exit_log)
            connections.close_all()

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
                    self.exit_code = WorkerStatus.CRASHED_EXIT_CODE
                    return False
                if not said:
                    logger.warning("worker %s waits for the database, or for migrate (%s)", self.label, error)
                    said = True
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
        logger.info("worker %s started: %s thread(s), queues %s", self.label, self.threads, self._describe_queues())

    def _record_exit(self, exit_log):
        try:
            WorkerStatus.objects.filter(pk=self.status.pk).update(
                stopped=timezone.now(), exit_code=self.exit_code, exit_log=exit_log
            )
        except (DatabaseError, InterfaceError):
            logger.exception("worker %s could not record its exit", self.label)
        logger.info("worker %s stopped (exit code %s)", self.label, self.exit_code)

    def _describe_queues(self):
        if self.queue_filter.queues:
            return ", ".join(self.queue_filter.queues)
        if self.queue_filter.excluded:
            return "all but " + ", ".join(self.queue_filter.excluded)
        return "all"

    def _start_listener(self):
        using = queue_database()
        if not wakeup.can_listen(connections[using]):
            return None
        listener = wakeup.Listener(self.task_queued, using, name=f"toosimpleq-{self.label}-listener")
        listener.start()
        return listener

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
            self._next_heartbeat = now + conf.HEARTBEAT
        if now >= self._next_poll:
            self._poll()
            self._next_poll = now + self.tick
        free = 0 if self._isolating() else min(self.threads - self.running_count, self._budget_left())
        claimed = self._hold_suspects(claiming.claim(self.status.pk, free, self.queue_filter))
        if self._submit_all(pool, claimed) is None:
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
        self._wake.wait(timeout=max(0.0, min(self._next_poll, self._next_heartbeat) - time.monotonic()))
        return False

    def _heartbeat(self):
        self._beat()
        recovery.reap_dead_workers()

    def _beat(self):
        WorkerStatus.objects.filter(pk=self.status.pk).update(last_tick=timezone.now())

    def _poll(self):
        """What is done once a tick rather than at each claim."""
        if self.scheduler:
            self.scheduler.run_due()
        claiming.wake_sleeping(self.queue_filter)

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
        suspects = claiming.interrupted_before([task.id for task in claimed if task.attempt > 1])
        if not suspects:
            return claimed
        self._held += [task for task in claimed if task.id in suspects]
        return [task for task in claimed if task.id not in suspects]

    def _submit_all(self, pool, claimed):
        """Hand the claimed tasks to the pool; their futures, or None if it takes no more work."""
        futures = []
        for position, task in enumerate(claimed):
            try:
                future = pool.submit(self._execute, task)
            except RuntimeError:
                # The interpreter is exiting and its pools take no more
                # work: what was claimed goes back to the queue.
                claiming.release([task.id for task in claimed[position:]], self.status.pk)
                self.stop()
                return None
            self._claimed_count += 1
            with self._running_lock:
                self._running[future] = task
            future.add_done_callback(self._task_done)
            futures.append(future)
        return futures

    def _execute(self, task):
        try:
            executor.execute(task, self.status.pk, give_up=self._stopping_now)
        except Exception:
            logger.exception("could not store the outcome of %s #%s", task.task_name, task.id)

    def _stopping_now(self):
        """Whether the grace period is over: outcomes not yet stored are abandoned."""
        return self._grace_deadline is not None and time.monotonic() >= self._grace_deadline

    def _task_done(self, future):
        with self._running_lock:
            self._running.pop(future, None)
        self._wake.set()

    def _done(self, claimed):
        if claimed or self.running_count or self._held:
            return False
        if self.max_tasks is not None and self._budget_left() <= 0:
            return True
        return self.until_done and not claiming.has_waiting_work(self.queue_filter)

    def _finish_running(self):
        """Give running tasks until the grace deadline; interrupt those still running."""
        if not self._stopping.is_set():  # the loop ends by itself only when nothing runs
            return 0
        while self.running_count and time.monotonic() < self._grace_deadline:
            self._beat_while_stopping()
            self._wake.wait(timeout=min(conf.HEARTBEAT, max(0.0, self._grace_deadline - time.monotonic())))
            self._wake.clear()
        with self._running_lock:
            unfinished = [task.id for task in self._running.values()]
        if not unfinished:
            return 0
        logger.warning("worker %s: %s task(s) still running after the grace period", self.label, len(unfinished))
        executions = TaskExec.objects.filter(pk__in=unfinished, worker_id=self.status.pk)
        recovery.interrupt(executions, reason="its worker stopped before it finished")
        return WorkerStatus.INTERRUPTED_EXIT_CODE

    def _beat_while_stopping(self):
        """Go on beating through the grace period, lest the running tasks be taken for orphans."""
        try:
            self._beat()
        except (DatabaseError, InterfaceError) as error:
            # The tasks may still end and store their outcome once it is back.
            logger.warning("worker %s: database error while stopping (%s)", self.label, error)
            connections.close_all()

    def _close_pool_connections(self, pool):
        """Close the connection of every pool thread.

        Connections belong to the thread that opened them. A barrier makes
        each of these jobs wait for the others, so they run on distinct
        threads: one per thread of the pool.
        """
        barrier = threading.Barrier(self.threads)

        def close_this_threads_connections():
            try:
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass  # a thread was slow to come: close this one's anyway
            connections.close_all()

        try:
            wait([pool.submit(close_this_threads_connections) for _ in range(self.threads)])
        except RuntimeError:
            pass  # the interpreter is exiting: the pool's threads, and their connections, are gone



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
