"""The HTTP routes (Starlette): OpenAI's chat and image endpoints, the model list, health, and the page.

Every handler reads a bounded body, turns it into a request (400/413 before anything is queued), hands a
job to the worker (503 when the queue is full) and waits for it while watching the connection: a client
that goes away cancels its job. Errors are OpenAI's JSON with the right status, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jflow.errors import InputError
from jflow.serving import api_errors
from jflow.serving.api_errors import APIError
from jflow.serving.limits import ServeLimits
from jflow.serving.openai_responses import (ChunkWriter, chat_completion, completion_id, image_response,
                                            model_card)
from jflow.serving.openai_schema import parse_chat, parse_image
from jflow.serving.pipeline_work import answer_work, image_work
from jflow.serving.request_queue import END, Cancelled, Job, NotReady, PipelineWorker, QueueFull

log = logging.getLogger("jflow.serving")
SHUTDOWN_WAIT_S = 30  # how long the lifespan waits for the worker thread to let the Pipeline go


class ClientGone(Exception):
    pass


def build_app(worker: PipelineWorker, model_id: str, limits: ServeLimits, api_key: str | None = None) -> Starlette:
    started = int(time.time())
    page = resources.files("jflow.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest takes as long whatever the first wrong byte: the key cannot be guessed by timing
        if not (hmac.compare_digest(scheme.lower().encode(), b"bearer")
                & hmac.compare_digest(token.strip().encode(), api_key.encode())):
            raise api_errors.unauthorized()

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def health(request: Request) -> Response:
        snapshot = worker.snapshot()
        return JSONResponse({"model": model_id, **snapshot}, status_code=200 if snapshot["status"] == "ready" else 503)

    async def models(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"object": "list", "data": [card()]})

    async def one_model(request: Request) -> Response:
        check_key(request)
        if request.path_params["model"] != model_id:
            raise APIError(404, f"model: this server serves {model_id!r} only, got {request.path_params['model']!r}",
                           type=api_errors.NOT_FOUND, param="model", code="model_not_found")
        return JSONResponse(card())

    def card() -> dict:
        ready(worker)
        return model_card(model_id, worker.pipe.manifest.precision, worker.pipe.backend.name, started)

    async def chat(request: Request) -> Response:
        check_key(request)
        admit(worker, limits.retry_after_s)
        body = await read_json(request, limits.max_body_bytes)
        pipe = ready(worker)
        # decoding the picture takes a while for a large one: off the event loop
        parsed = await asyncio.to_thread(parse_chat, body, model_id, limits, int(pipe.limits["max_new_tokens"]))
        job = admit(worker, limits.retry_after_s, Job("chat", answer_work(parsed, parsed.stream),
                                                      asyncio.get_running_loop()))
        request_id = completion_id()
        if not parsed.stream:
            return JSONResponse(chat_completion(await outcome(job, request, worker), model_id, request_id))
        first = (await until_done_or_gone(job.events.get(), job, request, worker)).result()
        if first is END:
            await outcome(job, request, worker)  # raises the job's error with its status, before any chunk
        writer = ChunkWriter(model_id, request_id, parsed.include_usage)
        return JobStream(sse_events(job, writer, first), worker, job)

    async def images(request: Request) -> Response:
        check_key(request)
        admit(worker, limits.retry_after_s)
        body = await read_json(request, limits.max_body_bytes)
        ready(worker)
        parsed = parse_image(body, model_id, limits)
        job = admit(worker, limits.retry_after_s, Job("image", image_work(parsed), asyncio.get_running_loop()))
        pictures = await outcome(job, request, worker)
        return JSONResponse(await asyncio.to_thread(image_response, pictures))  # PNG encoding off the loop

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        await asyncio.to_thread(worker.close, SHUTDOWN_WAIT_S)

    routes = [Route("/", index), Route("/health", health), Route("/v1/models", models),
              Route("/v1/models/{model:path}", one_model),
              Route("/v1/chat/completions", chat, methods=["POST"]),
              Route("/v1/images/generations", images, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        APIError: api_error, ClientGone: client_gone, HTTPException: http_error, Exception: unexpected})


def ready(worker: PipelineWorker):
    state = worker.state
    if state != "ready":
        raise not_ready(state)
    return worker.pipe


def not_ready(state: str) -> APIError:
    if state == "loading":
        return api_errors.busy("the model is still loading; retry shortly (GET /health says when it is ready)",
                               "model_loading", 5)
    if state == "failed":
        return api_errors.internal("the model failed to load; see the server's log")
    return api_errors.busy("the server is shutting down", "shutting_down", 5)


def admit(worker: PipelineWorker, retry_after_s: int, job: Job | None = None) -> Job | None:
    """503 now if the queue is full or the model is not ready; with `job`, queue it. Asked once before the body
    is read (a crowd is turned away without its uploads in memory) and again to queue the parsed request."""
    try:
        if job is None:
            worker.check_room()
        else:
            worker.submit(job)
    except QueueFull:
        raise api_errors.busy(f"the server is busy: {worker.capacity} requests are already waiting for the model "
                              "(--queue); retry after the time in Retry-After", "queue_full", retry_after_s) from None
    except NotReady as exc:
        raise not_ready(exc.state) from None
    return job


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, read at most `limit` bytes far (413 past it, 400 if it is not JSON)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(int(declared), limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise body_too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:  # the client hung up mid-upload: nobody to answer
        raise ClientGone() from None
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({str(exc)[:200]}); send a JSON object with "
                            "Content-Type: application/json", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got a JSON {type(body).__name__}",
                       code="invalid_json")
    return body


def body_too_large(size: int, limit: int) -> APIError:
    return api_errors.too_large(f"the request body is over {limit} bytes (got {'at least ' if size > limit else ''}"
                                f"{size}); this server's limit is --max-body-mib {limit / (1 << 20):g}: send a "
                                "smaller picture (the model sees 384x384)")


async def until_done_or_gone(awaitable, job: Job, request: Request, worker: PipelineWorker) -> asyncio.Future:
    """Await `awaitable` while watching the connection (a client that hangs up cancels its job); the done
    future, whose result or error the caller reads."""
    waiter = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(disconnected(request))
    try:
        done, _ = await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        worker.cancel(job)  # this handler was cancelled (a shutdown past its grace period)
        raise
    finally:
        gone.cancel()
        if not waiter.done():
            waiter.cancel()
    if waiter not in done:
        worker.cancel(job)
        raise ClientGone()
    return waiter


async def disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def outcome(job: Job, request: Request, worker: PipelineWorker):
    """The job's result, or its failure as the client should see it."""
    done = await until_done_or_gone(asyncio.shield(job.result), job, request, worker)
    try:
        return done.result()
    except InputError as exc:  # the Pipeline refused the request (a prompt too long for the context, ...)
        raise APIError(400, str(exc), param="prompt" if job.kind == "image" else "messages",
                       code="invalid_value") from None
    except NotReady as exc:
        raise not_ready(exc.state) from None
    except Cancelled:
        raise ClientGone() from None


async def sse_events(job: Job, writer: ChunkWriter, first):
    yield writer.start()
    item = first
    while item is not END:
        yield writer.piece(item)
        item = await job.events.get()
    error = job.result.exception()
    if error is None:
        yield writer.finish(job.result.result())
    elif not isinstance(error, Cancelled):
        log.error("a streamed answer failed", exc_info=error)
        yield ChunkWriter.error(api_errors.internal("the answer failed midway; see the server's log").body())


class JobStream(StreamingResponse):
    """Server-sent events of one job; however the stream ends (done, client gone, shutdown), the job is
    cancelled if it still runs, so no decode goes on for nobody."""

    def __init__(self, events, worker: PipelineWorker, job: Job):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.worker, self.job = worker, job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        except OSError:  # the client hung up mid-write
            pass
        finally:
            self.worker.cancel(self.job)


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        error = APIError(404, f"no such endpoint: {request.method} {request.url.path} (this server has POST "
                              "/v1/chat/completions, POST /v1/images/generations, GET /v1/models, GET /health, "
                              "GET /)", type=api_errors.NOT_FOUND, code="unknown_url")
    elif exc.status_code == 405:
        error = APIError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed",
                         headers=dict(exc.headers or {}))
    else:
        error = APIError(exc.status_code, str(exc.detail), code="http_error")
    return error.response()


async def api_error(request: Request, exc: APIError) -> Response:
    return exc.response()


async def client_gone(request: Request, exc: ClientGone) -> Response:
    return Response(status_code=499)  # nobody reads it (nginx's code for "client closed the request")


async def unexpected(request: Request, exc: Exception) -> Response:
    """A fault of the server: the client gets one line; uvicorn logs the traceback in the server's log."""
    return api_errors.internal(f"the server failed on this request ({type(exc).__name__}); see its log").response()
