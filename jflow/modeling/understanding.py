"""Reference image understanding (official algorithm, spec §6): image + question -> answer text.

Greedy when temperature is 0, else nucleus sampling from a numpy generator seeded by `seed`
(the same code as the runtime, see `jflow.runtime.token_sampling`). The KV cache grows one token per step.
"""

from __future__ import annotations

import numpy as np
import torch

from jflow.errors import InputError
from jflow.runtime.batching import understanding_batch
from jflow.runtime.image_io import preprocess_images
from jflow.runtime.requests import pair_images_questions
from jflow.runtime.token_sampling import check_sampling, choose_tokens


def understanding_embeddings(ref, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Token embeddings with each image's start tag -> beg_of_und_embed and its N placeholders -> image embeddings."""
    model, tok = ref.model, ref.tokenizer
    embeds = model.embed_tokens(ids)
    image = torch.cat([model.beg_of_und_embed.expand(ids.shape[0], 1, -1), model.encode_images(pixels)], dim=1)
    for row in range(ids.shape[0]):
        where = torch.from_numpy(tok.image_slots(ids[row].numpy(), image.shape[1]))  # the runtime's check
        embeds[row, where] = image[row].to(embeds.dtype)
    return embeds


@torch.no_grad()
def answer_tokens(ref, images, questions, max_new_tokens: int = 512, temperature: float = 0.0,
                  top_p: float = 1.0, seed: int | None = None) -> list[list[int]]:
    """New token ids per question, EOS included when reached."""
    images, questions = pair_images_questions(images, questions)
    check_sampling(temperature, top_p)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    model, tok = ref.model, ref.tokenizer
    pixels = torch.from_numpy(preprocess_images(images, ref.processor)).to(ref.dtype)
    batch = understanding_batch([tok.understanding_ids(q) for q in questions], tok.pad_id)
    ids = torch.from_numpy(batch.ids)
    mask = torch.from_numpy(batch.mask)
    embeds = understanding_embeddings(ref, pixels, ids)
    _, logits, past = model.llm_step(embeds, mask, torch.from_numpy(batch.positions))

    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in questions]
    done = np.zeros(len(questions), dtype=bool)
    for step in range(max_new_tokens):
        next_ids = choose_tokens(logits.float().numpy(), temperature, top_p, rng)
        next_ids[done] = tok.eos_id  # finished rows keep feeding EOS (the official pad id)
        for row in np.flatnonzero(~done):
            out[row].append(int(next_ids[row]))
        done |= next_ids == tok.eos_id
        if done.all() or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(len(questions), 1, dtype=mask.dtype)], dim=1)
        positions = torch.from_numpy(batch.next_positions(1, offset=step))
        new = model.embed_tokens(torch.from_numpy(next_ids)[:, None])
        _, logits, past = model.llm_step(new, mask, positions, past)
    return out


def answer(ref, images, questions, max_new_tokens: int = 512, temperature: float = 0.0, top_p: float = 1.0,
           seed: int | None = None):
    """The answer text (a str for one question, a list for a list of questions)."""
    single = isinstance(questions, str)
    tokens = answer_tokens(ref, images, questions, max_new_tokens, temperature, top_p, seed)
    texts = [ref.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return texts[0] if single else texts
