"""One worker thread owns the Pipeline; requests reach it through a bounded FIFO queue.

The Pipeline runs one request at a time (its sessions, KV cache and buffers are reused between calls), so
the HTTP side never touches it: each request becomes a `Job` whose work runs on the worker thread, and
whose result and streamed pieces come back to the event loop thread-safely. A full queue is refused at
once (the client gets 503 and Retry-After) rather than piling up memory and latency. A job whose client
went away is dropped from the queue, or stopped at its next token or ODE step if it is running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, deque
from typing import Any, Callable

from jflow.errors import InputError

log = logging.getLogger("jflow.serving")
END = object()  # the last item of a job's event queue


class QueueFull(Exception):
    pass


class NotReady(Exception):
    """The model is still loading, failed to load, or the server is stopping; `state` says which."""

    def __init__(self, state: str):
        super().__init__(state)
        self.state = state


class Cancelled(Exception):
    """Raised on the worker thread inside a job whose client went away; the work stops where it is."""


class Job:
    """One request: `work(pipe, job)` runs on the worker thread; `result` and `events` are read on the loop."""

    def __init__(self, kind: str, work: Callable[[Any, "Job"], Any], loop: asyncio.AbstractEventLoop):
        self.kind, self.work, self.loop = kind, work, loop
        self.result: asyncio.Future = loop.create_future()
        # A job whose client left has no reader: mark its error as seen, or asyncio logs it as lost.
        self.result.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.events: asyncio.Queue = asyncio.Queue()  # streamed pieces, then END
        self.cancelled = threading.Event()
        self.tokens = 0  # tokens decoded / ODE steps run for this job (the worker's statistics)
        self.steps = 0

    # --- worker side ---------------------------------------------------------------------------------
    def emit(self, item) -> None:
        self._call_on_loop(self.events.put_nowait, item)

    def check(self) -> None:
        """Between tokens and steps: stop here if the client went away."""
        if self.cancelled.is_set():
            raise Cancelled()

    def finish(self, result=None, error: BaseException | None = None) -> None:
        def settle():
            if not self.result.done():
                if error is None:
                    self.result.set_result(result)
                else:
                    self.result.set_exception(error)
            self.events.put_nowait(END)
        self._call_on_loop(settle)

    def _call_on_loop(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


class PipelineWorker:
    """Loads the Pipeline with `load()` on its own thread, then runs queued jobs one at a time, in order.

    `capacity`: how many jobs may wait behind the running one (0: only an idle worker accepts a job)."""

    def __init__(self, load: Callable[[], Any], capacity: int, on_failed: Callable[[str], None] = lambda _: None):
        self._load, self.capacity, self._on_failed = load, capacity, on_failed
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition(threading.RLock())  # re-entrant: submit() calls check_room()
        self.state = "loading"  # loading -> ready -> stopping -> stopped; or failed
        self.error: str | None = None
        self.pipe = None
        self.stats: Counter = Counter()
        self._thread = threading.Thread(target=self._run, name="jflow-pipeline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- event-loop side -------------------------------------------------------------------------------
    def check_room(self) -> None:
        """QueueFull (counted as rejected) or NotReady if a job submitted now would be refused: the HTTP side asks
        before it reads a body, so that a crowd of clients is turned away without its uploads held in memory."""
        with self._cond:
            if self.state != "ready":
                raise NotReady(self.state)
            if len(self._waiting) + (self._running is not None) > self.capacity:
                self.stats["rejected"] += 1
                raise QueueFull()

    def submit(self, job: Job) -> None:
        with self._cond:
            self.check_room()
            self.stats["accepted"] += 1
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job if it waits, or stop it at its next token or step."""
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                self.stats["cancelled"] += 1
                job.finish(error=Cancelled())
                return
        job.cancelled.set()

    def snapshot(self) -> dict:
        with self._cond:
            return {"status": self.state, "error": self.error, "waiting": len(self._waiting),
                    "running": self._running.kind if self._running else None, "queue_capacity": self.capacity,
                    "counters": dict(sorted(self.stats.items()))}

    def stop_accepting(self) -> None:
        """Shutdown has begun: refuse new jobs and answer the waiting ones 503; the running one goes on."""
        with self._cond:
            if self.state in ("loading", "ready"):
                self.state = "stopping"  # a load still running is closed as soon as it ends
            while self._waiting:
                self._waiting.popleft().finish(error=NotReady("stopping"))
            self._cond.notify()

    def close(self, timeout: float) -> None:
        """Stop the running job at its next token or step, wait for the thread, release the Pipeline."""
        self.stop_accepting()
        with self._cond:
            if self._running is not None:
                self._running.cancelled.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- worker thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.pipe = self._load()
        except BaseException as exc:  # a bad artifact: one line for the operator, and the server stops
            with self._cond:
                self.state, self.error = "failed", str(exc) or type(exc).__name__
            self._on_failed(self.error)
            return
        with self._cond:
            if self.state == "loading":
                self.state = "ready"
        try:
            while (job := self._next()) is not None:
                self._execute(job)
        finally:
            self.pipe.close()
            with self._cond:
                self.state = "stopped"

    def _next(self) -> Job | None:
        with self._cond:
            while not self._waiting and self.state == "ready":
                self._cond.wait()
            if not self._waiting:
                return None
            self._running = self._waiting.popleft()
            return self._running

    def _execute(self, job: Job) -> None:
        outcome = "completed"
        try:
            job.check()
            result = job.work(self.pipe, job)
        except Cancelled as exc:
            outcome, result = "cancelled", exc
        except Exception as exc:  # InputError: the client's fault (400); anything else is logged (500)
            outcome, result = "failed", exc
            if not isinstance(exc, InputError):
                log.error("a %s request failed", job.kind, exc_info=exc)
        with self._cond:
            self._running = None
            self.stats[outcome] += 1
            self.stats["tokens_decoded"] += job.tokens
            self.stats["steps_run"] += job.steps
        if outcome == "completed":
            job.finish(result)
        else:
            job.finish(error=result)
