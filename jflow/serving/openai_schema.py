"""OpenAI request bodies -> the Pipeline's arguments, refusing anything the model cannot honour.

A field we cannot honour is refused (400 naming it), never silently ignored: a client that asks for `stop`
sequences or five choices and gets something else would be misled. Fields that change nothing here
(`user`, `quality`, `style`, ...) are accepted and ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from jflow.runtime.requests import MAX_CFG_WEIGHT, MAX_SEED
from jflow.serving.api_errors import APIError, NOT_FOUND, bad_field
from jflow.serving.data_url import decode_image_url
from jflow.serving.limits import ServeLimits

IMAGE_SIZE = "384x384"  # the model draws 384x384 pictures only
# Chat fields we cannot honour, with the values that mean "not used" (OpenAI's defaults).
_UNSUPPORTED_CHAT = {
    "stop": (None, [], ""), "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []),
    "function_call": (None, "none"), "logprobs": (None, False), "top_logprobs": (None, 0),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}), "audio": (None,), "modalities": (None, ["text"]),
    "prediction": (None,), "web_search_options": (None,),
}


@dataclass(frozen=True)
class ChatRequest:
    image: Image.Image
    question: str
    max_tokens: int | None  # None: the Pipeline's default
    temperature: float
    top_p: float
    seed: int | None
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    n: int
    steps: int
    cfg: float
    seed: int | None


def parse_chat(body: dict, model_id: str, limits: ServeLimits, max_new_tokens: int) -> ChatRequest:
    check_model(body, model_id)
    for name, neutral in _UNSUPPORTED_CHAT.items():
        if body.get(name) not in neutral:
            raise bad_field(name, "is not supported by this server (JanusFlow answers one question about one "
                                  "picture, as plain text)", code="unsupported_parameter")
    if body.get("n") not in (None, 1):
        raise bad_field("n", f"this server returns one choice per chat request, got {body['n']!r}",
                        code="unsupported_parameter")
    image, question = _one_question(body.get("messages"), limits)
    max_tokens = _whole(body, "max_completion_tokens", 1, max_new_tokens, None,
                        f"(this artifact's --max-new-tokens is {max_new_tokens})")
    if max_tokens is None:
        max_tokens = _whole(body, "max_tokens", 1, max_new_tokens, None,
                            f"(this artifact's --max-new-tokens is {max_new_tokens})")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_field("stream_options", "must be an object such as {\"include_usage\": true}")
    include_usage = _flag(options or {}, "include_usage", "stream_options.include_usage")
    return ChatRequest(image, question, max_tokens,
                       _number(body, "temperature", 0.0, 2.0, 0.0, "(0 is greedy, the default)"),
                       _number(body, "top_p", 0.0, 1.0, 1.0, "", low_open=True),
                       _whole(body, "seed", 0, MAX_SEED, None, "(or null for a random one)"),
                       stream, stream and include_usage)


def parse_image(body: dict, model_id: str, limits: ServeLimits) -> ImageRequest:
    check_model(body, model_id)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad_field("prompt", "must be a non-empty string (what to draw)",
                        code="missing_field" if prompt is None else "invalid_value")
    if body.get("size") not in (None, IMAGE_SIZE):
        raise bad_field("size", f"this model draws {IMAGE_SIZE} pictures only, got {body['size']!r}")
    if body.get("response_format") not in (None, "b64_json"):
        raise bad_field("response_format", f"only 'b64_json' is supported (pictures come back inline; this server "
                                           f"keeps no files to link to), got {body['response_format']!r}")
    if body.get("output_format") not in (None, "png"):
        raise bad_field("output_format", f"only 'png' is supported, got {body['output_format']!r}")
    return ImageRequest(prompt,
                        _whole(body, "n", 1, limits.max_images, 1, "(pictures per request)"),
                        _whole(body, "steps", 1, limits.max_steps, 30, "(30 is the official setting)"),
                        _number(body, "cfg", 0.0, MAX_CFG_WEIGHT, 2.0, "(guidance weight; 2 is the official)"),
                        _whole(body, "seed", 0, MAX_SEED, None, "(or null for a random one)"))


def check_model(body: dict, model_id: str) -> None:
    model = body.get("model")
    if model is not None and model != model_id:
        raise APIError(404, f"model: this server serves {model_id!r} only (see GET /v1/models), got {model!r}",
                       type=NOT_FOUND, param="model", code="model_not_found")


def _one_question(messages, limits: ServeLimits) -> tuple[Image.Image, str]:
    if not isinstance(messages, list) or not messages:
        raise bad_field("messages", "must be a list with one user message holding a picture and a question",
                        code="missing_field" if messages is None else "invalid_value")
    if len(messages) != 1:
        raise bad_field("messages", f"JanusFlow answers one question about one picture: send one user message "
                                    f"(no history, no system message; the model has its own), got {len(messages)}")
    message = messages[0]
    if not isinstance(message, dict) or message.get("role") != "user":
        raise bad_field("messages[0].role", "must be 'user'")
    content = message.get("content")
    where = "messages[0].content"
    if isinstance(content, str) or not isinstance(content, list):
        raise bad_field(where, "must be a list of parts: one {\"type\": \"image_url\", ...} with a data: URL and "
                               "{\"type\": \"text\", ...} with the question")
    texts, images = [], []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_field(f"{where}[{i}].text", "must be a string")
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            images.append((i, url.get("url") if isinstance(url, dict) else url))
        else:
            raise bad_field(f"{where}[{i}].type", f"must be 'text' or 'image_url', got {kind!r}")
    if len(images) != 1:
        raise bad_field(where, f"needs exactly one image_url part (the picture to ask about), got {len(images)}")
    question = "\n".join(texts)
    if not question.strip():
        raise bad_field(where, "needs a text part with the question")
    index, url = images[0]
    return decode_image_url(url, f"{where}[{index}].image_url", limits.max_image_pixels), question


def _whole(body: dict, name: str, low: int, high: int, default, hint: str):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type; 30.0 means 30
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise bad_field(name, f"must be a whole number from {low} to {high} {hint}, got {value!r}")
    return value


def _number(body: dict, name: str, low: float, high: float, default: float, hint: str, low_open=False) -> float:
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (low < value if low_open else low <= value) and value <= high
    if not ok:
        interval = f"({low:g}, {high:g}]" if low_open else f"from {low:g} to {high:g}"
        raise bad_field(name, f"must be a number {interval}{' ' + hint if hint else ''}, got {value!r}")
    return float(value)


def _flag(body: dict, name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_field(param or name, f"must be true or false, got {value!r}")
    return value
