"""The server's worker and its bounded queue, in process: first in, first out; a full queue refuses at once; a
job whose client left never runs; shutdown answers the waiting; a failed load is reported. The jobs are plain
functions here: what is under test is the queue, not the Pipeline (the HTTP tests run the real one)."""

import asyncio
import threading

import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install -e '.[serve]'")
from jflow.errors import JFlowError  # noqa: E402
from jflow.serving.request_queue import Cancelled, Job, NotReady, PipelineWorker, QueueFull  # noqa: E402


class Loaded:
    """What `load()` returned; the worker closes it when it stops."""

    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def started(capacity):
    loaded = Loaded()
    worker = PipelineWorker(lambda: loaded, capacity)
    worker.start()
    while worker.state == "loading":
        threading.Event().wait(0.01)
    return worker, loaded


def test_jobs_run_in_arrival_order_and_a_full_queue_refuses_at_once():
    async def scenario():
        worker, loaded = started(capacity=2)
        loop, order, gate = asyncio.get_running_loop(), [], threading.Event()

        def work(name, wait=False):
            def run(pipe, job):
                assert pipe is loaded
                if wait:
                    gate.wait(10)
                order.append(name)
                return name
            return run
        first = Job("image", work("first", wait=True), loop)
        worker.submit(first)
        while worker.snapshot()["running"] is None:
            await asyncio.sleep(0.01)
        jobs = [Job("chat", work(f"queued-{i}"), loop) for i in range(2)]
        for job in jobs:
            worker.submit(job)
        with pytest.raises(QueueFull):
            worker.submit(Job("chat", work("one too many"), loop))
        assert worker.snapshot()["waiting"] == 2 and worker.snapshot()["counters"]["rejected"] == 1
        gate.set()
        results = [await job.result for job in [first, *jobs]]
        assert results == order == ["first", "queued-0", "queued-1"]
        worker.close(10)
        assert loaded.closed and worker.state == "stopped"
    asyncio.run(scenario())


def test_a_job_whose_client_left_never_runs_and_shutdown_answers_the_waiting():
    async def scenario():
        worker, _ = started(capacity=3)
        loop, ran, gate = asyncio.get_running_loop(), [], threading.Event()

        def work(name):
            def run(pipe, job):
                if name == "running":
                    gate.wait(10)
                    job.check()  # its client left while it ran: stops here
                ran.append(name)
            return run
        running, gone, stays = (Job("chat", work(n), loop) for n in ("running", "gone", "stays"))
        worker.submit(running)
        while worker.snapshot()["running"] is None:
            await asyncio.sleep(0.01)
        worker.submit(gone)
        worker.submit(stays)
        worker.cancel(gone)
        with pytest.raises(Cancelled):
            await gone.result
        worker.stop_accepting()
        with pytest.raises(NotReady) as refused:
            await stays.result
        assert refused.value.state == "stopping"
        worker.cancel(running)
        gate.set()
        with pytest.raises(Cancelled):
            await running.result
        with pytest.raises(NotReady):
            worker.submit(Job("chat", work("late"), loop))
        worker.close(10)
        assert ran == [] and worker.snapshot()["counters"]["cancelled"] == 2
    asyncio.run(scenario())


def test_a_failed_load_is_reported_once_and_refuses_jobs():
    reported = []

    def load():
        raise JFlowError("artifact x: manifest.json is missing; re-export it")
    worker = PipelineWorker(load, 1, on_failed=reported.append)
    worker.start()
    worker.close(10)
    assert worker.state == "failed"
    assert reported == [worker.error] == ["artifact x: manifest.json is missing; re-export it"]
    with pytest.raises(NotReady):
        worker.check_room()
