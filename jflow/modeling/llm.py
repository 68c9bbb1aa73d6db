"""The JanusFlow LLM: a plain `transformers.LlamaForCausalLM` built from `language_config`.

`llm_step` is the one functional LLM call everything uses (prefill, decode, every ODE step, and the
ONNX `llm` graph): KV caches travel as tuples of (key, value) tensors [B, kv_heads, P, head_dim], so
reusing the prompt KV is passing the same tuple again, never an in-place cache that must be cropped.
"""

from __future__ import annotations

import inspect

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import AttentionInterface
from transformers.models.llama.modeling_llama import repeat_kv

PastKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]

# transformers 5 renamed the cache argument of LlamaModel.forward; accept either spelling.
_CACHE_ARG = "cache" if "cache" in inspect.signature(
    __import__("transformers").LlamaModel.forward).parameters else "past_key_values"


FP32_SOFTMAX_ATTENTION = "jflow_fp32_softmax"


def fp32_softmax_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager Llama attention whose softmax runs in fp32 by an explicit upcast.

    transformers' eager attention asks for softmax(dtype=float32), which the ONNX exporter lowers to an
    fp16 Softmax; an explicit cast survives, so the fp16 graph keeps its fp32 island.
    """
    key, value = repeat_kv(key, module.num_key_value_groups), repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(FP32_SOFTMAX_ATTENTION, fp32_softmax_attention)
AttentionMaskInterface.register(FP32_SOFTMAX_ATTENTION, eager_mask)  # additive float mask, as eager


def llama_config(language: dict) -> LlamaConfig:
    kwargs = {k: v for k, v in language.items() if k not in ("torch_dtype", "dtype", "architectures")}
    return LlamaConfig(**kwargs)


def build_language_model(language: dict) -> LlamaForCausalLM:
    model = LlamaForCausalLM(llama_config(language))
    model.eval()
    return model


def llm_step(lm: LlamaForCausalLM, embeds: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor, past: PastKV | None = None, with_logits: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor | None, PastKV]:
    """Run S new embeddings [B, S, H] after P cached positions.

    attention_mask [B, P+S] (1 = attend), position_ids [B, S]. Returns the final-normed hidden states
    [B, S, H], the logits of the last position [B, V] (or None) and the present KV (P+S positions).
    `past` is not modified.
    """
    cache = DynamicCache(ddp_cache_data=past) if past else DynamicCache()
    out = lm.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=True, **{_CACHE_ARG: cache})
    hidden = out.last_hidden_state
    logits = lm.lm_head(hidden[:, -1, :]) if with_logits else None
    present_cache = getattr(out, _CACHE_ARG, None) or cache
    present = tuple((layer.keys, layer.values) for layer in present_cache.layers)
    return hidden, logits, present
