"""Prompt templates of JanusFlow (DeepSeek SFT format, official processor behaviour).

Generation: "User: {prompt}\n\nAssistant:" + the generation tag, with no system prompt.
Understanding: SYSTEM + "\n\nUser: <image_placeholder>\n{question}\n\nAssistant:".
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
SEPARATOR = "\n\n"


def sft_prompt(user_content: str, system_prompt: str = "") -> str:
    """DeepSeek SFT template for one user turn followed by an empty assistant turn.

    Official: the content is stripped, the system prompt (if any) is followed by the separator,
    the empty assistant turn renders as "Assistant:", and the whole string is stripped.
    """
    text = (system_prompt + SEPARATOR) if system_prompt else ""
    text += "User: " + user_content.strip() + SEPARATOR + "Assistant:"
    return text.strip()


def generation_prompt(prompt: str, gen_tag: str) -> str:
    """Text-to-image prompt; the trailing tag is tokenized and then dropped (its slot takes t_emb)."""
    return sft_prompt(prompt) + gen_tag


def understanding_prompt(question: str, image_tag: str) -> str:
    return sft_prompt(image_tag + "\n" + question, SYSTEM_PROMPT)
