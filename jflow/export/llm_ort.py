"""`llm_ort` graph: the ONNX Runtime form of the `llm` graph, emitted op by op.

The portable `llm` graph (standard ops, concat KV) serves TensorRT and `verify`. ONNX Runtime gets this
form, built the way ORT GenAI's model builder builds Llama, over the SAME weight bytes (each MatMul
weight is a reference into the portable graph's data file, found by content):
- com.microsoft GroupQueryAttention with rotary inside, explicit position ids, and ONE cache buffer per
  layer bound as both past and present: new K/V are written in place at each row's end;
- SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization for RMSNorm and the residual adds.
- Q/K/V and gate/up stay separate MatMuls. Packing them (GenAI's way) would need either a second copy of
  those weights or a Concat that ONNX Runtime folds at every session start; measured on 2 cores, packing
  made SmolLM2 decode ~3% faster but a bench-preset session start 3.5x slower (3.5 s vs 1.0 s), and
  quantized forms could no longer share their int8/int4 weights with the portable graph (quantize packs
  both forms alike instead).

The cache holds only real tokens, right-aligned to nothing: row b holds seqlens_k[b] + 1 tokens after
the call, of which query_seqlens[b] are this call's (right-padded in inputs_embeds). Positions are
explicit, so a guidance row that masks its prompt holds just BOS and its step tokens.

Inputs: inputs_embeds [batch, seq, H], position_ids [batch, seq] int64, seqlens_k [batch] int32,
query_seqlens [batch] int32, total_sequence_length [] int32 (max of seqlens_k + 1), past_key_i /
past_value_i [batch, kv_heads, capacity, head_dim]. Outputs: final-normed hidden_states [batch, seq, H],
logits [batch, vocab] of each row's last new token, present_key_i / present_value_i (the same buffers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from jflow.artifact.external_data import SharedWeights
from jflow.artifact.spec import GraphSpec, Limits, TensorSpec
from jflow.export.llm import kv_geometry, kv_names

NAME = "llm_ort"
OPSET = 18
MS_OPSET = 1
_ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def spec(config, limits: Limits, act: str = "float32") -> GraphSpec:
    layers, kv_heads, head_dim = kv_geometry(config)
    hidden, vocab = config.hidden_size, int(config.language["vocab_size"])
    cache = lambda name: TensorSpec(name, act, ("batch", kv_heads, "capacity", head_dim))  # noqa: E731
    return GraphSpec(
        NAME,
        inputs=(TensorSpec("inputs_embeds", act, ("batch", "seq", hidden)),
                TensorSpec("position_ids", "int64", ("batch", "seq")),
                TensorSpec("seqlens_k", "int32", ("batch",)),
                TensorSpec("query_seqlens", "int32", ("batch",)),
                TensorSpec("total_sequence_length", "int32", ()),
                *[cache(n) for n in kv_names(layers, "past")]),
        outputs=(TensorSpec("hidden_states", act, ("batch", "seq", hidden)),
                 TensorSpec("logits", act, ("batch", vocab)),
                 *[cache(n) for n in kv_names(layers, "present")]),
        ranges={"batch": (1, 1, 2 * limits.max_batch), "seq": (1, 1, limits.max_context),
                "capacity": (1, limits.max_context, limits.max_context)})


class _Emitter:
    """Nodes and initializers of the graph being written (names stay readable: layers.3.qkv ...)."""

    def __init__(self, shared: SharedWeights, np_dtype, inline_limit: int):
        self.shared, self.np_dtype, self.inline_limit = shared, np_dtype, inline_limit
        self.nodes: list = []
        self.inits: list = []
        self.types: dict[str, int] = {}  # every intermediate tensor's element type (see value_infos)
        self.inlined_bytes = 0

    def node(self, op: str, inputs: list[str], name: str, outputs: int | list[str] = 1, domain: str = "",
             elem: int | None = None, **attrs):
        outs = outputs if isinstance(outputs, list) else [f"{name}/out{i}" if outputs > 1 else f"{name}/out"
                                                          for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        for out in outs:
            if out:
                self.types[out] = elem or (TensorProto.FLOAT16 if self.np_dtype == np.float16 else TensorProto.FLOAT)
        return outs if len(outs) > 1 else outs[0]

    def value_infos(self, declared: set[str]) -> list:
        """Element types of the intermediate tensors. ONNX shape inference does not know the com.microsoft
        ops, so without these a tool reading the graph (onnxruntime's calibrator) sees untyped tensors after
        the first fused op, and quietly leaves them unquantized."""
        return [helper.make_tensor_value_info(n, t, None) for n, t in self.types.items() if n not in declared]

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, tensor: torch.Tensor, transposed: bool = True) -> tuple[str, bool]:
        """The weight in the portable graph's layout, shared when found there. Returns (name, is_transposed):
        MatMul weights are stored [in, out] by the exporter, lm_head [vocab, hidden] (a Gemm with transB)."""
        array = tensor.detach().to(torch.float32 if self.np_dtype == np.float32 else torch.float16).numpy()
        for layout in ((True, False) if transposed else (False, True)):
            candidate = np.ascontiguousarray(array.T if layout else array)
            found = self.shared.find(name, candidate)
            if found is not None:
                self.inits.append(found)
                return name, layout
        # Small tensors (norm weights, biases) sit inline in the portable graph too.
        if array.nbytes > self.inline_limit:
            raise RuntimeError(f"jflow bug: weight {name} {list(array.shape)} is not in the portable llm graph's "
                               "data file, so the ORT form would store it twice")
        self.inlined_bytes += array.nbytes
        self.const(name, np.ascontiguousarray(array.T if transposed else array))
        return name, transposed

    def matmul_weight(self, name: str, tensor: torch.Tensor) -> str:
        """A [in, out] MatMul weight, shared with the portable graph."""
        weight, transposed = self.weight(name, tensor)
        return weight if transposed else self.node("Transpose", [weight], f"{name}.t", perm=[1, 0])


def _skip_outputs(name: str) -> list[str]:
    """SkipSimplifiedLayerNormalization outputs: the normed sum and the sum (the statistics are not needed)."""
    return [f"{name}/out", "", "", f"{name}/sum"]


def _linear(e: _Emitter, x: str, name: str, module) -> str:
    y = e.node("MatMul", [x, e.matmul_weight(f"{name}.weight", module.weight)], name)
    if module.bias is not None:
        y = e.node("Add", [y, e.const(f"{name}.bias", module.bias.detach().float().numpy().astype(e.np_dtype))],
                   f"{name}.add_bias")
    return y


def _rope_cache(lm, capacity: int, np_dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [capacity, head_dim/2] exactly as the model's own rotary module computes them (fp32)."""
    rotary = lm.model.rotary_emb
    positions = torch.arange(capacity)[None, :]
    probe = torch.zeros(1, dtype=torch.float32)
    with torch.no_grad():
        cos, sin = rotary(probe, positions)
    half = cos.shape[-1] // 2
    return cos[0, :, :half].numpy().astype(np_dtype), sin[0, :, :half].numpy().astype(np_dtype)


def build_model(lm, config, limits: Limits, act: str, portable: Path,
                inline_limit: int = 1 << 20) -> tuple[onnx.ModelProto, int]:
    """The ORT form as an in-memory ModelProto whose weights point into `portable`'s data file; a weight
    not found there may be written inline only when small (norm weights); returns the inlined bytes."""
    layers, kv_heads, head_dim = kv_geometry(config)
    lang = config.language
    heads = int(lang["num_attention_heads"])
    eps = float(lang.get("rms_norm_eps", 1e-6))
    np_dtype = np.float16 if act == "float16" else np.float32
    e = _Emitter(SharedWeights(portable), np_dtype, inline_limit)
    graph_spec = spec(config, limits, act)
    past, present = kv_names(layers, "past"), kv_names(layers, "present")
    cos, sin = _rope_cache(lm, limits.max_context, np_dtype)
    e.const("rope.cos", cos)
    e.const("rope.sin", sin)

    def norm_weight(name, module):
        return e.weight(name, module.weight, transposed=False)[0]

    blocks = lm.model.layers
    x = "inputs_embeds"
    h = e.node("SimplifiedLayerNormalization", [x, norm_weight("layers.0.input_norm", blocks[0].input_layernorm)],
               "layers.0.input_norm", epsilon=eps, axis=-1, stash_type=1)
    residual = x
    for i, block in enumerate(blocks):
        attn, mlp = block.self_attn, block.mlp
        q, k, v = (_linear(e, h, f"layers.{i}.{n}_proj", p) for n, p in zip("qkv", (attn.q_proj, attn.k_proj,
                                                                                   attn.v_proj)))
        context, _, _ = e.node(
            "GroupQueryAttention",
            [q, k, v, past[2 * i], past[2 * i + 1], "seqlens_k", "total_sequence_length", "rope.cos", "rope.sin",
             "position_ids", "", "", "", "", "", "", "query_seqlens"],
            f"layers.{i}.attention", outputs=[f"layers.{i}.attention/out", present[2 * i], present[2 * i + 1]],
            domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0,
            scale=float(attn.scaling))
        out = _linear(e, context, f"layers.{i}.o_proj", attn.o_proj)
        h, _, _, residual = e.node("SkipSimplifiedLayerNormalization",
                                   [out, residual, norm_weight(f"layers.{i}.post_norm", block.post_attention_layernorm)],
                                   f"layers.{i}.post_norm", outputs=_skip_outputs(f"layers.{i}.post_norm"),
                                   domain="com.microsoft", epsilon=eps)
        gate = _linear(e, h, f"layers.{i}.gate_proj", mlp.gate_proj)
        up = _linear(e, h, f"layers.{i}.up_proj", mlp.up_proj)
        act_out = e.node("Mul", [e.node("Mul", [gate, e.node("Sigmoid", [gate], f"layers.{i}.sigmoid")],
                                        f"layers.{i}.silu"), up], f"layers.{i}.swiglu")
        down = _linear(e, act_out, f"layers.{i}.down_proj", mlp.down_proj)
        last = i == len(blocks) - 1
        next_norm = lm.model.norm if last else blocks[i + 1].input_layernorm
        name = "final_norm" if last else f"layers.{i + 1}.input_norm"
        outputs = ["hidden_states", "", "", f"{name}/sum"] if last else _skip_outputs(name)
        h, _, _, residual = e.node("SkipSimplifiedLayerNormalization", [down, residual, norm_weight(name, next_norm)],
                                   name, outputs=outputs, domain="com.microsoft", epsilon=eps)

    # Logits of each row's last new token: row b's token query_seqlens[b] - 1 (inputs are right-padded).
    index = TensorProto.INT64
    last_index = e.node("Sub", [e.node("Cast", ["query_seqlens"], "logits.index64", elem=index, to=index),
                                e.const("logits.one", np.array(1, np.int64))], "logits.index", elem=index)
    last_hidden = e.node("GatherND", ["hidden_states", e.node("Unsqueeze", [last_index, e.const("logits.axis",
                                                                                                 np.array([-1]))],
                                                              "logits.index2d", elem=index)],
                         "logits.gather", batch_dims=1)
    head, transposed = e.weight("lm_head.weight", lm.lm_head.weight, transposed=False)
    e.node("Gemm", [last_hidden, head], "lm_head", outputs=["logits"], transB=0 if transposed else 1)

    def value_info(t: TensorSpec):
        elem = _ONNX_TYPES.get(t.dtype) or {"int64": TensorProto.INT64, "int32": TensorProto.INT32}[t.dtype]
        return helper.make_tensor_value_info(t.name, elem, list(t.shape))

    graph = helper.make_graph(e.nodes, NAME, [value_info(t) for t in graph_spec.inputs],
                              [value_info(t) for t in graph_spec.outputs], initializer=e.inits,
                              value_info=e.value_infos({t.name for t in graph_spec.inputs + graph_spec.outputs}))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.microsoft", MS_OPSET)],
                              producer_name="jflow")
    model.ir_version = 9
    return model, e.inlined_bytes


def export(lm, config, limits: Limits, act: str, portable: Path, out: Path) -> None:
    """Write the ORT form next to the portable graph (`out` must be in the same folder: ORT only reads
    external data from the model's own folder)."""
    if out.parent.resolve() != portable.parent.resolve():
        raise RuntimeError("jflow bug: the ORT form must sit next to the portable llm graph to share its weights")
    model, _ = build_model(lm, config, limits, act, portable)
    onnx.save(model, str(out))
