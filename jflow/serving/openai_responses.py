"""Response bodies in OpenAI's shapes: a chat completion, its streamed chunks (server-sent events ending with
`data: [DONE]`), an image response and the model list."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from dataclasses import dataclass

from PIL import Image


@dataclass
class Answer:
    """What a chat request produced: the text, how many tokens each side took, and why it stopped."""

    text: str
    prompt_tokens: int
    completion_tokens: int  # every token the model chose, the final end-of-answer token included
    finish_reason: str      # "stop": the model ended the answer; "length": max_tokens (or the context) ran out

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_completion(answer: Answer, model: str, request_id: str) -> dict:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "logprobs": None, "finish_reason": answer.finish_reason}],
            "usage": answer.usage()}


class ChunkWriter:
    """The `chat.completion.chunk` events of one streamed answer, as SSE lines."""

    def __init__(self, model: str, request_id: str, include_usage: bool):
        self.model, self.id, self.include_usage = model, request_id, include_usage
        self.created = int(time.time())

    def _event(self, choices: list, usage: dict | None = None) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage  # null on every chunk but the last, as OpenAI sends it
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def start(self) -> str:
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])

    def piece(self, text: str) -> str:
        return self._event([{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}])

    def finish(self, answer: Answer) -> str:
        events = self._event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": answer.finish_reason}])
        if self.include_usage:
            events += self._event([], answer.usage())
        return events + "data: [DONE]\n\n"

    @staticmethod
    def error(body: dict) -> str:
        """A failure after the stream began (the status line is already sent): OpenAI's error object as an event."""
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\ndata: [DONE]\n\n"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_response(images: list[Image.Image]) -> dict:
    return {"created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(png_bytes(image)).decode("ascii"), "revised_prompt": None}
                     for image in images]}


def model_card(model_id: str, precision: str, backend: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "jflow",
            "precision": precision, "backend": backend}
