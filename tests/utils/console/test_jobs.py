"""The job queue: one job at a time in order, cancel before and during a job, one-line failures."""
import threading

from utils.console.jobs import JobQueue
from utils.errors import CompressionError


def test_jobs_run_one_at_a_time_in_order_and_cancel():
    jobs, order, release = JobQueue(), [], threading.Event()

    def first(job):
        order.append("first")
        release.wait(10)
        job.progress(0.5, "half way")  # raises Cancelled if cancelled meanwhile
        order.append("first done")
        return 1

    try:
        a = jobs.submit("t", "a", first)
        b = jobs.submit("t", "b", lambda job: order.append("b") or 2)
        c = jobs.submit("t", "c", lambda job: order.append("c") or 3)
        jobs.cancel(c.id)  # queued: cancelled at once, never runs
        assert jobs.get(c.id).state == "cancelled"
        assert jobs.get(b.id).state == "queued"
        release.set()
        assert jobs.wait(a.id, 10)["result"] == 1 and jobs.wait(b.id, 10)["result"] == 2
        assert order == ["first", "first done", "b"]

        started, hold = threading.Event(), threading.Event()

        def long(job):
            started.set()
            hold.wait(10)
            job.progress(0.9, "next step")
            return "never"

        d = jobs.submit("t", "d", long)
        started.wait(10)
        jobs.cancel(d.id)
        hold.set()
        assert jobs.wait(d.id, 10)["state"] == "cancelled" and jobs.get(d.id).result is None

        def bad(job):
            raise CompressionError("--ratio must be in (0, 1)\nsecond line")

        snap = jobs.wait(jobs.submit("t", "e", bad).id, 10)
        assert snap["state"] == "failed" and snap["error"] == "--ratio must be in (0, 1) second line"
        snap = jobs.wait(jobs.submit("t", "f", lambda job: 1 / 0).id, 10)
        assert snap["state"] == "failed" and snap["error"].startswith("ZeroDivisionError")
    finally:
        jobs.close()
