"""What a job does on the worker thread: one Pipeline call, stoppable between tokens and ODE steps."""

from __future__ import annotations

from jflow.runtime.tokenizer import TextStream
from jflow.serving.openai_responses import Answer
from jflow.serving.openai_schema import ChatRequest, ImageRequest
from jflow.serving.request_queue import Job


def answer_work(request: ChatRequest, stream: bool):
    """The answer as `Pipeline.answer` gives it (the same token ids, decoded the same way); with `stream`,
    its text pieces are emitted as the tokens arrive."""

    def work(pipe, job: Job) -> Answer:
        tokens = pipe.answer_token_ids(request.image, request.question, max_new_tokens=request.max_tokens,
                                       temperature=request.temperature, top_p=request.top_p, seed=request.seed)
        text, ids = TextStream(pipe.tokenizer), []
        try:
            for token in tokens:
                ids.append(token)
                job.tokens += 1
                job.check()  # the client left: closing the generator below ends the decode here
                piece = text.push(token)
                if stream and piece:
                    job.emit(piece)
        finally:
            tokens.close()
        tail = text.flush()
        if stream and tail:
            job.emit(tail)
        finish = "stop" if ids and ids[-1] == pipe.tokenizer.eos_id else "length"
        return Answer(pipe.tokenizer.decode(ids), len(pipe.tokenizer.understanding_ids(request.question)),
                      len(ids), finish)

    return work


def image_work(request: ImageRequest):
    """`Pipeline.generate` with the request's settings: a list of PIL images."""

    def work(pipe, job: Job):
        def step(done: int, total: int) -> None:
            job.steps += 1
            job.check()  # the client left: the exception ends the ODE loop at this step

        return pipe.generate(request.prompt, steps=request.steps, cfg_weight=request.cfg, seed=request.seed,
                             num_images=request.n, progress=step)

    return work
