"""Prompt templates of JanusFlow (DeepSeek SFT format, official processor behaviour).

Generation: "User: {prompt}\n\nAssistant:" + the generation tag, with no system prompt.
Understanding: SYSTEM + "\n\nUser: <image_placeholder>\n{question}\n\nAssistant:".

A template is a list of parts: text (the template's own words with the user's text inside) and `Tag`s,
the control tokens the template places. The tokenizer encodes text parts as text (a control token spelled
in a question stays those characters) and each Tag as its id, so only the template places control tokens.
Text between two tags is one part, as the tokenizer split the rendered string before: same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Tag:
    """A control token placed by the template (never read from the user's text)."""
    text: str


Part = str | Tag


def sft_parts(user_content: list[Part], system_prompt: str = "") -> list[Part]:
    """DeepSeek SFT template for one user turn followed by an empty assistant turn.

    Official: the content is stripped, the system prompt (if any) is followed by the separator,
    the empty assistant turn renders as "Assistant:", and the whole string is stripped.
    """
    head = (system_prompt + SEPARATOR) if system_prompt else ""
    return _strip([head + "User: ", *_strip(user_content), SEPARATOR + "Assistant:"])


def generation_parts(prompt: str, gen_tag: str) -> list[Part]:
    """Text-to-image prompt; the trailing tag is tokenized and then dropped (its slot takes t_emb)."""
    return sft_parts([prompt]) + [Tag(gen_tag)]


def understanding_parts(question: str, image_tag: str) -> list[Part]:
    return sft_parts([Tag(image_tag), "\n" + question], SYSTEM_PROMPT)


def render(parts: list[Part]) -> str:
    """The template as one string, as the official processor writes it."""
    return "".join(p.text if isinstance(p, Tag) else p for p in parts)


def sft_prompt(user_content: str, system_prompt: str = "") -> str:
    return render(sft_parts([user_content], system_prompt))


def generation_prompt(prompt: str, gen_tag: str) -> str:
    return render(generation_parts(prompt, gen_tag))


def understanding_prompt(question: str, image_tag: str) -> str:
    return render(understanding_parts(question, image_tag))


def _strip(parts: list[Part]) -> list[Part]:
    """str.strip of the rendered parts: whitespace goes from the ends, up to the first and last tag.
    Neighbouring text parts are merged, so a text part always runs from one tag to the next."""
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if merged and isinstance(merged[0], str):
        merged[0] = merged[0].lstrip()
    if merged and isinstance(merged[-1], str):
        merged[-1] = merged[-1].rstrip()
    return [p for p in merged if p != ""]
