"""One Pipeline shared by threads: requests are serialised (cold or warm, the results are a single thread's),
streams hold the Pipeline only while they compute, and close() during a run says what happened."""

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from jflow.errors import JFlowError
from jflow.runtime.pipeline import Pipeline

QUESTION = "what is in this picture?"
THREADS = 8
WAIT = 120  # seconds: a deadlock fails the test instead of hanging the suite


def _requests(photo):
    """Three kinds of request, each deterministic: their results must not depend on what else runs."""
    return [
        lambda p: p.generate_latents("a cat", steps=2, seed=1).tobytes(),
        lambda p: p.answer_tokens(photo, QUESTION, max_new_tokens=8),
        lambda p: "".join(p.answer_stream(photo, "how many objects are there?", max_new_tokens=12)),
    ]


@pytest.fixture(scope="module")
def expected(tiny_artifact, photo):
    with Pipeline.load(tiny_artifact) as p:
        return [request(p) for request in _requests(photo)]


def _in_threads(pipe, photo, calls_per_thread=1):
    """Every thread starts at once (a barrier) and runs its share of the requests in turn."""
    requests, start = _requests(photo), threading.Barrier(THREADS)

    def work(t):
        start.wait()
        return [(i % 3, requests[i % 3](pipe)) for i in range(t, t + calls_per_thread)]
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(work, t) for t in range(THREADS)]
        return [r for f in futures for r in f.result(timeout=WAIT)]


def test_threads_on_a_cold_pipeline_get_single_thread_results(tiny_artifact, photo, expected):
    # Before: the first calls raced to open each session (one thread bound its inputs on a session that
    # another then replaced: "IOBinding must be used with the session that created it"), 3 of 4 trials.
    for _ in range(5):
        with Pipeline.load(tiny_artifact) as pipe:
            results = _in_threads(pipe, photo)
        assert [r == expected[kind] for kind, r in results] == [True] * THREADS


def test_threads_on_a_warm_pipeline_get_single_thread_results(tiny_artifact, photo, expected):
    with Pipeline.load(tiny_artifact) as pipe:
        assert [r(pipe) for r in _requests(photo)] == expected
        for _ in range(3):
            results = _in_threads(pipe, photo, calls_per_thread=2)
            assert [r == expected[kind] for kind, r in results] == [True] * THREADS * 2


def _finishes(call) -> bool:
    """Whether `call` completes in another thread (it would wait forever on a lock a stream kept)."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (call(), done.set()), daemon=True)
    thread.start()
    return done.wait(WAIT)


def test_a_paused_or_abandoned_stream_blocks_no_other_thread(tiny_artifact, photo, expected):
    with Pipeline.load(tiny_artifact) as pipe:
        paused = pipe.answer_stream(photo, "how many objects are there?", max_new_tokens=12)
        first = next(paused)
        assert _finishes(lambda: pipe.answer_tokens(photo, QUESTION, max_new_tokens=8))
        assert first + "".join(paused) == expected[2]  # the other call ran between its tokens: same answer

        abandoned = pipe.answer_stream(photo, QUESTION, max_new_tokens=12)
        next(abandoned)
        del abandoned
        gc.collect()
        assert _finishes(lambda: pipe.generate_latents("a cat", steps=1, seed=0))

        # A server's workers may each advance the same stream: every piece from a different thread.
        stream, pieces = pipe.answer_stream(photo, "how many objects are there?", max_new_tokens=12), []
        with ThreadPoolExecutor(4) as pool:
            while (piece := pool.submit(next, stream, None).result(timeout=WAIT)) is not None:
                pieces.append(piece)
        assert len(pieces) >= 3 and "".join(pieces) == expected[2]


def test_close_from_another_thread_waits_for_the_running_call(tiny_artifact, expected):
    pipe = Pipeline.load(tiny_artifact)
    closer = threading.Thread(target=pipe.close)
    waited = []

    def progress(k, n):
        if k == 1:  # mid-run: another thread closes the Pipeline
            closer.start()
            closer.join(0.5)
            waited.append(closer.is_alive())
    latents = pipe.generate_latents("a cat", steps=2, seed=1, progress=progress)
    closer.join(WAIT)
    assert waited == [True] and not closer.is_alive()  # close() waited for the call, then closed
    assert latents.tobytes() == expected[0]  # which finished with its sessions intact
    with pytest.raises(JFlowError, match="this Pipeline was closed; load the artifact again"):
        pipe.generate_latents("a cat", steps=1, seed=1)


def _clear_closed_error(excinfo):
    text = str(excinfo.value)
    assert "this Pipeline was closed" in text and "NoneType" not in text and "Check the artifact" not in text


def test_close_inside_a_running_call_ends_it_with_a_clear_error(tiny_artifact, photo):
    # Before: "AttributeError: 'NoneType' object has no attribute 'run_with_iobinding'. Check the artifact".
    pipe = Pipeline.load(tiny_artifact)
    with pytest.raises(JFlowError) as excinfo:
        pipe.generate("a cat", steps=3, seed=1, progress=lambda k, n: pipe.close() if k == 1 else None)
    _clear_closed_error(excinfo)

    pipe = Pipeline.load(tiny_artifact)
    stream = pipe.answer_stream(photo, QUESTION, max_new_tokens=12)
    next(stream)
    pipe.close()
    with pytest.raises(JFlowError) as excinfo:
        next(stream)
    _clear_closed_error(excinfo)


def test_closing_under_a_loop_that_drives_the_llm_directly(tiny_artifact, photo):
    # Tools (verify, profile) drive pipe.llm themselves, outside the Pipeline's request lock: a binding
    # prepared before close() says its session was released (before any hook runs), never NoneType.
    pipe = Pipeline.load(tiny_artifact)
    llm = pipe.llm
    rows, _ = pipe.understanding_rows([photo], [QUESTION])
    cache = llm.new_cache(1, capacity=len(rows[0]) + 6)
    llm.prefill(cache, rows)
    llm.decode_one(cache, pipe.embed([[5]]))  # the decode step's binding is made: the next token only runs it
    pipe.close()
    with pytest.raises(JFlowError, match="graph llm_ort: its session was released .the Pipeline was closed.") as e:
        llm.decode_one(cache, pipe.embed([[6]]))
    assert "NoneType" not in str(e.value)
