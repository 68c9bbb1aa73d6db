"""What quantizing each LLM GEMM to int4 costs, measured, and which GEMMs a byte budget buys back at int8.

A GEMM's sensitivity is the mean KL(fp32 || that GEMM alone int4) of the next-token distributions over a
stretch of calibration text: the same quantity the accuracy report scores for a whole artifact, one GEMM
at a time (with the int4 grid and kernel the artifact will hold). The relative output error of a GEMM
cannot rank them: int4 in blocks of 32 costs GEMMs about the same relative error (0.6-0.7% for layer 1's four
on the real weights, results/gptq_check.json); what differs is how much of it survives to the logits.

Running the graph once per GEMM is affordable because it is one ONNX Runtime session: the portable LLM
form with its weight GEMMs' weights turned into graph inputs, so each run feeds the fp32 weights with one of
them swapped for its int4 round trip. The graph's hidden_states (after the final norm, every position) times
lm_head gives all positions' logits; lm_head's own sensitivity needs no run. At full size (1.3B, 97 GEMMs)
a run over 128 tokens costs a few seconds, and the fp32 weights are held once (5.2 GB).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from jflow.calibration.qdq import int4_round_trip

TOKENS = 128  # calibration-text tokens each GEMM is measured over


def gemm_bytes(shape: tuple[int, int], kind: str, block_size: int) -> int:
    """Bytes a GEMM's weight takes in the artifact: int4 (4-bit values, a float32 scale per block) or int8
    (per-channel: 8-bit values, a float32 scale and an int8 zero point per output channel)."""
    k, n = shape
    if kind == "int4":
        return (k * n + 1) // 2 + -(-k // block_size) * n * 4
    return k * n + n * 5


def choose_int8(sensitivity: dict[str, float], shapes: dict[str, tuple[int, int]], budget: float,
                block_size: int) -> list[str]:
    """The GEMMs to hold at int8 instead of int4: most KL removed per extra byte first, while the LLM's GEMM
    bytes stay within `budget` times those of plain int4 (1.0: none)."""
    plain = sum(gemm_bytes(s, "int4", block_size) for s in shapes.values())
    extra = {g: gemm_bytes(shapes[g], "int8", block_size) - gemm_bytes(shapes[g], "int4", block_size) for g in shapes}
    room, chosen = plain * (budget - 1), []
    for g in sorted(sensitivity, key=lambda g: sensitivity[g] / extra[g], reverse=True):
        if 0 < extra[g] <= room and sensitivity[g] > 0:  # a GEMM int4 costs nothing is left int4
            chosen.append(g)
            room -= extra[g]
    return sorted(chosen, key=list(shapes).index)


def calibration_text_ids(root: Path, tokens: int = TOKENS) -> list[int]:
    """BOS + the shipped calibration prompts and questions, `tokens` ids in all (the user's text-to-image
    prompts and questions: what the LLM reads)."""
    from jflow.calibration.data import PROMPTS, QUESTIONS
    from jflow.runtime.tokenizer import JanusFlowTokenizer
    tokenizer = JanusFlowTokenizer.from_dir(root)
    ids = [tokenizer.bos_id]
    while len(ids) < tokens:
        ids += tokenizer.encode(" ".join(PROMPTS + QUESTIONS))
    return ids[:tokens]


class NextTokenKl:
    """Mean KL(fp32 || a variant) of the next-token distributions at every position of one session's text: the
    fp32 run once, each variant one run with some feeds changed (or none, for lm_head's: its hidden states
    are the fp32 run's). `feeds`: the session's full feeds (text and fp32 weights); logits are
    hidden_states x `head_weight`."""

    def __init__(self, session, feeds: dict[str, np.ndarray], head_weight: np.ndarray):
        self.session, self.feeds, self.head_weight = session, feeds, head_weight
        self.hidden = self.run({})
        self.ref = self.log_probs(self.hidden)
        self.p = np.exp(self.ref)

    def run(self, changes: dict[str, np.ndarray]) -> np.ndarray:
        """hidden_states [T, H] with `changes` (feed name -> value) over the fp32 feeds."""
        return self.session.run(["hidden_states"], {**self.feeds, **changes})[0][0]

    def log_probs(self, hidden: np.ndarray, head_weight: np.ndarray | None = None) -> np.ndarray:
        logits = (hidden @ (self.head_weight if head_weight is None else head_weight)).astype(np.float64)
        return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)

    def kl(self, hidden: np.ndarray, head_weight: np.ndarray | None = None) -> float:
        return float((self.p * (self.ref - self.log_probs(hidden, head_weight))).sum(-1).mean())


def measure_sensitivity(manifest, block_size: int, tokens: int = TOKENS, log: Callable[[str], None] = print,
                        awq: bool = False) -> tuple[dict[str, float], dict[str, tuple[int, int]], dict | None]:
    """(GEMM name -> mean KL of that GEMM alone at int4, GEMM name -> weight shape [K, N], AWQ scales by GEMM
    name or None), names as llm_graph.gemm_names gives them, for the artifact `manifest`'s portable LLM form.
    With `awq`, the scales are searched first (calibration.awq, on the GEMM inputs of the same text) and
    folded in, and the sensitivities are those of the scaled weights: what the artifact will hold."""
    import onnx
    from jflow.calibration.llm_graph import gemm_names, open_weight_gemms
    from jflow.calibration.smooth import find_pairs, fold_scales
    model, tensors = open_weight_gemms(manifest.graph_path("llm"))
    names = gemm_names(model)
    ids = calibration_text_ids(manifest.root, tokens)
    scales = None
    if awq:
        from jflow.calibration.awq import search_scales
        started = time.perf_counter()
        pairs = [p for p in find_pairs(model) if p.matmul in names]
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        session, weights, _ = weight_session(probe, tensors, names, extra=[p.tensor for p in pairs])
        values = session.run([p.tensor for p in pairs], {**text_feeds(manifest, session, ids), **weights})
        del session
        scales = {}
        for pair, x in zip(pairs, values):
            w = weights[pair.weight]
            scales[names[pair.matmul]] = search_scales(x.reshape(-1, x.shape[-1]), w, block_size)
        del weights, values
        fold_scales(model, {p.matmul: scales[names[p.matmul]][0] for p in pairs}, tensors)
        log(f"    AWQ scales of {len(pairs)} GEMMs in {time.perf_counter() - started:.0f}s")
    session, weights, head_weight = weight_session(model, tensors, names)
    nodes = {n.name: n for n in model.graph.node}
    weight_of = {names[g]: nodes[g].input[1] for g in names if names[g] != "lm_head"}
    shapes = {g: weights[w].shape for g, w in weight_of.items()} | {"lm_head": head_weight.shape}
    del model
    started = time.perf_counter()
    measure = NextTokenKl(session, {**text_feeds(manifest, session, ids), **weights}, head_weight)
    found = {"lm_head": measure.kl(measure.hidden, int4_round_trip(head_weight, block_size))}
    for index, (g, w) in enumerate(weight_of.items()):
        found[g] = measure.kl(measure.run({w: int4_round_trip(weights[w], block_size)}))
        if index % 16 == 15:
            log(f"    sensitivity: {index + 1}/{len(weight_of)} GEMMs in {time.perf_counter() - started:.0f}s")
    order = {g: i for i, g in enumerate(names.values())}
    return (dict(sorted(found.items(), key=lambda kv: order[kv[0]])), {g: shapes[g] for g in names.values()},
            scales)


def weight_session(model, tensors, names: dict[str, str], extra=()):
    """(session, its GEMM weights by input name, lm_head's weight): `model` (changed in place) as an ONNX
    Runtime session whose weight GEMMs take their weights as graph inputs, every other initializer inline,
    lm_head left out (logits are hidden_states times it), and the tensors `extra` as outputs too."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    nodes = {n.name: n for n in model.graph.node}
    head = nodes[next(g for g, n in names.items() if n == "lm_head")].input[1]
    weights = {nodes[g].input[1]: np.ascontiguousarray(tensors.array(nodes[g].input[1]), np.float32)
               for g, n in names.items() if n != "lm_head"}
    head_weight = np.ascontiguousarray(tensors.array(head), np.float32)
    others = [numpy_helper.from_array(np.asarray(tensors.array(i.name)), i.name) for i in model.graph.initializer
              if i.name not in weights and i.name != head]
    del model.graph.initializer[:]
    model.graph.initializer.extend(others)
    model.graph.input.extend(helper.make_tensor_value_info(w, onnx.TensorProto.FLOAT, list(a.shape))
                             for w, a in weights.items())
    _drop_head(model, extra)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return (ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), weights,
            head_weight)


def _drop_head(model, extra=()) -> None:
    """Outputs: hidden_states and the tensors `extra`; the lm_head MatMul (and all else they do not need)
    leaves the graph."""
    from onnx import TensorProto, helper
    keep_outputs = [o for o in model.graph.output if o.name == "hidden_states"]
    del model.graph.output[:]
    model.graph.output.extend(keep_outputs)
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in extra)
    needed, kept = {"hidden_states", *extra}, []
    for node in reversed(model.graph.node):  # only what hidden_states needs
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    used = {i for n in model.graph.node for i in n.input}
    inputs = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def text_feeds(manifest, session, ids: list[int]) -> dict[str, np.ndarray]:
    """One row of token ids as the portable form's prefill takes it (no past)."""
    table = np.load(manifest.root / "embeddings" / "embed_tokens.npy", mmap_mode="r")
    feeds = {}
    for arg in session.get_inputs():
        dtype = np.float32 if "float" in arg.type else np.int64
        if arg.name == "inputs_embeds":
            feeds[arg.name] = np.asarray(table[ids], np.float32)[None]
        elif arg.name == "attention_mask":
            feeds[arg.name] = np.ones((1, len(ids)), dtype)
        elif arg.name == "position_ids":
            feeds[arg.name] = np.arange(len(ids), dtype=dtype)[None]
        elif arg.name.startswith("past_"):
            feeds[arg.name] = np.zeros([1 if d == "batch" else 0 if isinstance(d, str) else d for d in arg.shape],
                                       dtype)
    return feeds


def llm_gemms(manifest) -> dict[str, tuple[int, int]]:
    """The portable LLM form's weight GEMMs, packed as quantize packs them: name -> weight shape [K, N]."""
    from jflow.calibration.llm_graph import gemm_names, open_weight_gemms
    model, _ = open_weight_gemms(manifest.graph_path("llm"))
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return {name: dims[nodes[node].input[1]] for node, name in gemm_names(model).items()}


def check_gemm_names(manifest, names, option: str) -> None:
    """`option` (--int8-gemms, --keep-float) names GEMMs of this LLM, or one line saying which names exist (before
    any work)."""
    from jflow.errors import InputError
    known = llm_gemms(manifest)
    unknown = [n for n in names if n not in known]
    if unknown:
        layers = sum(1 for n in known if n.endswith(".qkv"))
        raise InputError(f"{option}: this LLM has no GEMM named {unknown[0]!r}; its GEMMs are "
                         f"layers.<0-{layers - 1}>.qkv|o|gate_up|down and lm_head")


def plan_int8_gemms(manifest, recipe, log: Callable[[str], None] = print) -> tuple[dict, dict | None]:
    """(which LLM GEMMs an int4 artifact holds at int8 and why, as its manifest records it; the AWQ scales
    by GEMM name, or None): the recipe's own list, or the measured choice under its byte budget."""
    started = time.perf_counter()
    sensitivity = scales = None
    if recipe.int8_gemms is None or recipe.awq:
        sensitivity, shapes, scales = measure_sensitivity(manifest, recipe.block_size, log=log, awq=recipe.awq)
    else:
        shapes = llm_gemms(manifest)
    if recipe.int8_gemms is None:
        chosen = choose_int8(sensitivity, shapes, recipe.int8_budget, recipe.block_size)
    else:
        chosen = list(recipe.int8_gemms)
    plain = sum(gemm_bytes(s, "int4", recipe.block_size) for s in shapes.values())
    mixed = sum(gemm_bytes(s, "int8" if g in chosen else "int4", recipe.block_size) for g, s in shapes.items())
    log(f"  int8 GEMMs: {len(chosen)} of {len(shapes)} ({mixed / plain:.2f}x the bytes of plain int4) in "
        f"{time.perf_counter() - started:5.1f}s")
    measured = recipe.int8_gemms is None
    return {"int8": chosen, "chosen_by": "measured sensitivity" if measured else "--int8-gemms",
            "budget": recipe.int8_budget if measured else None, "bytes_vs_plain_int4": round(mixed / plain, 4),
            "sensitivity": None if sensitivity is None else {
                "measure": f"mean KL(fp32 || this GEMM alone int4) of the next-token distributions over {TOKENS} "
                           "tokens of the calibration prompts and questions" + (", AWQ scales folded in"
                                                                                 if scales else ""),
                "kl": {g: float(f"{v:.4g}") for g, v in sensitivity.items()}}}, scales
