"""Numbered steps, each a command-line tool run as a subprocess: what ``tools/demo.py`` is made of.

:class:`Runner` streams a step's output live, saves it to ``<log_dir>/NN_<name>.log``, records
its wall and CPU time in ``<log_dir>/steps.json`` and stops the sequence with one
:class:`StepError` line naming the failed step and its log. :class:`ReplayRunner` walks the same
steps over the logs of a finished sequence (``--report-only``), running nothing.
"""
import json
import os
import re
import resource
import subprocess
import sys
import time

from utils.errors import PIDNetError


class StepError(PIDNetError):
    """A step (one of the tools) failed; the message names the step and its log."""


class Runner:
    """Runs numbered steps as subprocesses, streams and logs their output, records timings."""

    def __init__(self, log_dir, total, root):
        self.log_dir = log_dir
        self.total = total
        self.root = root
        self.steps = []
        os.makedirs(log_dir, exist_ok=True)

    def run(self, name, what, argv):
        """Run ``argv`` (a tool and its arguments) with this interpreter; return its stdout text."""
        index = len(self.steps) + 1
        log_path = os.path.join(self.log_dir, f"{index:02d}_{name}.log")
        command = [sys.executable] + argv
        shown = " ".join(quote(relative(a, self.root)) for a in argv)
        print(f"\n[{index}/{self.total}] {what}\n      $ python {shown}", flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        cpu_start = _children_cpu()
        captured = []
        with open(log_path, "wb") as log:
            log.write(f"$ {' '.join(quote(a) for a in command)}\n".encode())
            try:
                proc = subprocess.Popen(command, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=env)
            except OSError as exc:
                raise StepError(f"step {index} '{name}' could not start ({exc}); see {log_path}") from None
            try:
                # Raw chunks, not lines, so that progress bars (carriage returns) stream live.
                while True:
                    chunk = proc.stdout.read1(4096)
                    if not chunk:
                        break
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                    log.write(chunk)
                    captured.append(chunk)
                code = proc.wait()
            except BaseException:
                # Ctrl-C / SIGTERM: stop the running tool too (the trainer saves a checkpoint).
                proc.terminate()
                proc.wait()
                raise
        seconds = time.perf_counter() - start
        status = "ok" if code == 0 else f"failed (exit {code})"
        self.steps.append({"name": f"{index}. {what}", "status": status, "seconds": seconds,
                           "cpu_seconds": _children_cpu() - cpu_start, "log": relative(log_path, self.root)})
        self.save()
        if code != 0:
            raise StepError(f"demo stopped: step {index} '{name}' failed with exit code {code}; "
                            f"see its log {log_path}")
        print(f"      done in {seconds:.1f} s (CPU {self.steps[-1]['cpu_seconds']:.0f} s)", flush=True)
        return b"".join(captured).decode("utf-8", "replace")

    def record(self, name, seconds, status="ok"):
        self.steps.append({"name": f"{len(self.steps) + 1}. {name}", "status": status, "seconds": seconds,
                           "log": ""})
        self.save()

    def save(self):
        # Lets --report-only rebuild the report (timings included) without rerunning anything.
        from utils.io import atomic_write_text

        atomic_write_text(json.dumps(self.steps, indent=2) + "\n", os.path.join(self.log_dir, "steps.json"))


class ReplayRunner(Runner):
    """``--report-only``: walks the same steps, reading the logs of the previous run instead."""

    def __init__(self, log_dir, total, root):
        # Not Runner.__init__: replaying creates nothing (no empty logs/ when there is no demo to replay).
        self.log_dir, self.total, self.root, self.steps = log_dir, total, root, []
        path = os.path.join(log_dir, "steps.json")
        try:
            with open(path, encoding="utf-8") as handle:
                self.steps = json.load(handle)
        except (OSError, ValueError):
            raise StepError(f"--report-only needs a finished demo in this --workdir: {path} is missing "
                            "or unreadable; run the demo first") from None
        self._index = 0

    def run(self, name, what, argv):
        self._index += 1
        log_path = os.path.join(self.log_dir, f"{self._index:02d}_{name}.log")
        try:
            with open(log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            raise StepError(f"--report-only: {log_path} is missing; run the demo again") from None

    def record(self, name, seconds, status="ok"):
        self._index += 1

    def save(self):
        pass


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def relative(text, root):
    """Paths under ``root``, shown relative to it (the steps run from there)."""
    text = str(text)
    return text[len(root) + 1:] if text.startswith(root + os.sep) else text


def quote(text):
    """``text`` as one shell word (quoted only when it needs to be)."""
    text = str(text)
    return text if re.fullmatch(r"[\w./:=,\[\]+-]+", text) else "'" + text.replace("'", "'\\''") + "'"

