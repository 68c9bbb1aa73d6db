"""`llm` graph: one Llama step that serves prefill, decode and every ODE step.

Inputs: inputs_embeds [batch, seq, H], attention_mask [batch, total] (total = past + seq),
position_ids [batch, seq], past_key_i / past_value_i [batch, kv_heads, past, head_dim] (past may be 0).
Outputs: final-normed hidden_states [batch, seq, H], logits of the last position [batch, vocab],
present_key_i / present_value_i [batch, kv_heads, total, head_dim]. The runtime embeds tokens itself
(images and time embeddings enter as embeddings), from the table the artifact ships.
"""

from __future__ import annotations

import torch
from torch import nn

from jflow.artifact.spec import GraphSpec, Limits, TensorSpec
from jflow.modeling.llm import llm_step

NAME = "llm"


def kv_geometry(config) -> tuple[int, int, int]:
    lang = config.language
    heads = int(lang["num_attention_heads"])
    head_dim = int(lang.get("head_dim") or config.hidden_size // heads)
    return int(lang["num_hidden_layers"]), int(lang.get("num_key_value_heads") or heads), head_dim


def kv_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


class LlmGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.lm = model.language_model

    def forward(self, inputs_embeds, attention_mask, position_ids, *past_flat):
        past = tuple((past_flat[i], past_flat[i + 1]) for i in range(0, len(past_flat), 2))
        hidden, logits, present = llm_step(self.lm, inputs_embeds, attention_mask, position_ids, past)
        return (hidden, logits, *[t for pair in present for t in pair])


def spec(config, limits: Limits, act: str = "float32") -> GraphSpec:
    layers, kv_heads, head_dim = kv_geometry(config)
    hidden, vocab = config.hidden_size, int(config.language["vocab_size"])
    ctx = limits.max_context
    kv = lambda name, axis: TensorSpec(name, act, ("batch", kv_heads, axis, head_dim))  # noqa: E731
    return GraphSpec(
        NAME,
        inputs=(TensorSpec("inputs_embeds", act, ("batch", "seq", hidden)),
                TensorSpec("attention_mask", "int64", ("batch", "total")),
                TensorSpec("position_ids", "int64", ("batch", "seq")),
                *[kv(n, "past") for n in kv_names(layers, "past")]),
        outputs=(TensorSpec("hidden_states", act, ("batch", "seq", hidden)),
                 TensorSpec("logits", act, ("batch", vocab)),
                 *[kv(n, "total") for n in kv_names(layers, "present")]),
        # batch: guidance doubles the rows; opt is the decode step of one answer.
        ranges={"batch": (1, 1, 2 * limits.max_batch), "seq": (1, 1, ctx), "past": (0, ctx // 2, ctx - 1),
                "total": (1, ctx // 2, ctx)})


def example(config, generator: torch.Generator, batch: int = 3, seq: int = 5, past: int = 4) -> dict:
    """A step after a left-padded prompt (row 0 has up to 2 pad positions in the past)."""
    layers, kv_heads, head_dim = kv_geometry(config)
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    mask[0, :min(2, past)] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)[:, past:]
    out = {"inputs_embeds": torch.randn(batch, seq, config.hidden_size, generator=generator),
           "attention_mask": mask, "position_ids": positions}
    for name in kv_names(layers, "past"):
        out[name] = torch.randn(batch, kv_heads, past, head_dim, generator=generator)
    return out
