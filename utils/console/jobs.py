"""One background job at a time: a FIFO queue served by a single worker thread, with cancel.

A job is a function ``fn(job)`` that reports progress with ``job.progress(fraction, message)``;
that call raises :class:`Cancelled` once the job was cancelled, so a long job stops at its
next step. The request threads only submit, poll and cancel; the page polls ``snapshot()``.
"""
import itertools
import logging
import queue
import threading
import time

from utils.cli import one_line
from utils.errors import ConsoleError, PIDNetError

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class Cancelled(Exception):
    """Raised inside a job at its next progress report after a cancel."""


class Job:
    def __init__(self, job_id, kind, label, fn):
        self.id, self.kind, self.label, self.fn = job_id, kind, label, fn
        self.state, self.fraction, self.message = QUEUED, 0.0, "waiting for the job before it"
        self.result, self.error = None, None
        self.created, self.started, self.finished = time.time(), None, None
        self._cancel = threading.Event()

    def progress(self, fraction, message):
        """Record progress; raises :class:`Cancelled` when a cancel was asked for."""
        if self._cancel.is_set():
            raise Cancelled()
        self.fraction, self.message = float(fraction), str(message)
        logger.info("job %s: %3.0f%% %s", self.id, 100 * self.fraction, self.message)

    @property
    def cancel_requested(self):
        return self._cancel.is_set()

    def snapshot(self):
        return {"id": self.id, "kind": self.kind, "label": self.label, "state": self.state,
                "progress": self.fraction, "message": self.message, "error": self.error,
                "result": self.result, "seconds": (self.finished or time.time()) - (self.started or time.time())}


class JobQueue:
    """Runs submitted jobs one after another on one worker thread."""

    def __init__(self):
        self._jobs = {}
        self._order = []
        self._queue = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="console-jobs", daemon=True)
        self._worker.start()

    def submit(self, kind, label, fn):
        with self._lock:
            job = Job(str(next(self._ids)), kind, label, fn)
            self._jobs[job.id] = job
            self._order.append(job.id)
        self._queue.put(job)
        return job

    def get(self, job_id):
        job = self._jobs.get(str(job_id))
        if job is None:
            raise ConsoleError(f"no job with id {job_id}: it was never submitted to this console")
        return job

    def jobs(self):
        return [self._jobs[i].snapshot() for i in self._order]

    def cancel(self, job_id):
        """Cancel a queued job at once, a running one at its next step; finished jobs stay as they are."""
        job = self.get(job_id)
        job._cancel.set()
        with self._lock:
            if job.state == QUEUED:
                job.state, job.message, job.finished = CANCELLED, "cancelled before it started", time.time()
        return job

    def wait(self, job_id, timeout=None):
        """Block until the job finished (for tests and the CLI); returns its snapshot."""
        job, deadline = self.get(job_id), None if timeout is None else time.time() + timeout
        while job.state not in FINISHED:
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(0.05)
        return job.snapshot()

    def close(self, timeout=5.0):
        for job_id in list(self._order):
            if self._jobs[job_id].state not in FINISHED:
                self.cancel(job_id)
        self._queue.put(None)
        self._worker.join(timeout)

    def _run(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state == CANCELLED:
                    continue
                job.state, job.started, job.message = RUNNING, time.time(), "starting"
            try:
                job.result = job.fn(job)
                job.state, job.fraction, job.message = DONE, 1.0, f"finished in {time.time() - job.started:.1f} s"
            except Cancelled:
                job.state, job.message = CANCELLED, "cancelled; the work directory is unchanged"
            except PIDNetError as exc:
                job.state, job.error = FAILED, one_line(exc)
            except Exception as exc:  # a job must never kill the worker; the page shows the line
                logger.exception("job %s failed", job.id)
                job.state, job.error = FAILED, f"{type(exc).__name__}: {one_line(exc)}"
            finally:
                job.finished = time.time()
