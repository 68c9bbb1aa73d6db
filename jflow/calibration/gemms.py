"""Which GEMMs of a graph int8 quantizes, and the ranges of their inputs.

A graph is opened without its weights (calibration.tensors); the LLM forms are packed (and smoothed) as
recipes on them. The LLM's ranges are measured once, on the form the calibration run recorded (llm_ort
where the artifact has it), and found in the other form by the digest of each GEMM's weight: both forms
multiply the same values by the same weights (their packed weights are identical bytes), so one
calibration generation per prompt serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jflow.calibration.llm_graph import FLOAT_GEMMS, gemm_as_matmul, gemm_names, pack_siblings
from jflow.calibration.ranges import observe, smoothed_range
from jflow.calibration.smooth import find_pairs, fold_scales, scales as smoothing_scales
from jflow.calibration.tensors import Tensors

LLM_FORMS = ("llm", "llm_ort")
TIME_INPUTS = {"gen_encoder": ("t",), "gen_decoder": ("t_emb", "dt", "cfg_weight")}


@dataclass
class Graph:
    """One graph opened for int8: its structure, its weights (read when asked) and the GEMMs to quantize."""
    name: str
    source: Path
    model: object
    tensors: Tensors
    kept: list[str] = field(default_factory=list)    # LLM GEMMs kept float by role
    weight_only: list[str] = field(default_factory=list)  # GEMMs (in gemms) whose input stays float: lm_head
    gemms: list[str] = field(default_factory=list)   # the GEMMs to quantize, by node name
    nodes: dict = field(default_factory=dict)        # node name -> node


def open_graph(source: Path, name: str, keep_float=(), exclude=(), known: dict | None = None,
               float_gemms=()) -> Graph:
    """An LLM form keeps float the GEMMs of the roles `keep_float` (FLOAT_GEMMS) and those named in `float_gemms`
    (llm_graph.gemm_names). `known`: weight digests by where the weight lies, shared by the graphs opened with
    it (Tensors)."""
    import onnx
    model = onnx.load(str(source), load_external_data=False)
    tensors = Tensors(model, source.parent, known)
    llm = name in LLM_FORMS
    if llm:
        gemm_as_matmul(model, tensors)  # lm_head: so ONNX Runtime fuses its weight-only int8 (MatMulNBits)
        pack_siblings(model, tensors)  # quantize the packed graph (see pack_siblings)
    kept, weight_only = [], []
    if llm:
        named = set(float_gemms)
        kept = [n for role in keep_float for n in FLOAT_GEMMS[role](model)]
        kept += [node for node, gemm in gemm_names(model).items() if gemm in named] if named else []
        # lm_head (the GEMM making the logits) reads one row per call, the last position's: quantizing that row
        # buys no time, and its input (the final norm's output, a graph output too, so not smoothable) has outliers
        # one static scale cannot hold: on the real weights W8A8 cost a KL of 0.034, its weight alone int8 0.001.
        weight_only = [n.name for n in model.graph.node if "logits" in n.output and n.name not in kept]
    skip = set(time_only_nodes(model, TIME_INPUTS.get(name, ()))) | set(activation_products(model)) | set(kept) \
        | set(exclude)
    constant = set(tensors.readers)
    gemms = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n.name not in skip
             and len(n.input) > 1 and n.input[1] in constant]
    return Graph(name, source, model, tensors, kept, weight_only, gemms, {n.name: n for n in model.graph.node})


def graph_ranges(graph: Graph, samples: Path, method: str) -> dict[str, tuple]:
    """A graph calibrated on its own samples: input tensor -> range."""
    inputs = sorted({_node(graph, g).input[0] for g in graph.gemms})
    return observe(graph.source, samples, tensors=inputs, method=method).ranges


def gemm_keys(graph: Graph) -> dict[str, str]:
    """GEMM -> the digest of its weight (taken before smoothing changes it), the same in both LLM forms."""
    return {g: graph.tensors.digest(_node(graph, g).input[1]) for g in graph.gemms}


def measure_llm(graph: Graph, samples: Path, method: str, alpha: float | None, observed=None) -> dict:
    """The calibrated LLM form's ranges (from `observed`, the statistics the calibration run took, else measured
    on its recorded samples): {"ranges": weight digest -> range of the GEMM's input (smoothed
    where smoothing will be folded in), "maxima": weight digest -> channel maxima, "scales": weight digest ->
    the smoothing scales s (computed once from the weights as they were: the other form reads no weight
    again to find them)}."""
    keys = gemm_keys(graph)
    pairs = {p.matmul: p for p in find_pairs(graph.model)} if alpha else {}
    smoothed = [p for m, p in pairs.items() if m not in graph.kept]
    inputs = sorted({_node(graph, g).input[0] for g in graph.gemms})
    histogram = method != "minmax"
    if observed is not None:  # taken in the calibration run (calibration.observe): minmax only
        missing = sorted((set(inputs) | {p.tensor for p in smoothed}) - set(observed.channels))
        if missing or histogram:
            raise RuntimeError(f"jflow bug: the calibration run observed no {missing[:1] or method} for {graph.name}")
        first = observed
    else:
        first = observe(graph.source, samples, tensors=() if histogram and smoothed else inputs,
                        channels=[p.tensor for p in smoothed], method=method)
    maxima = {graph.tensors.digest(p.weight): first.channels[p.tensor] for p in smoothed}
    s = smoothing_scales(graph.model, maxima, alpha, skip=set(graph.kept), tensors=graph.tensors) if alpha else {}
    by_weight = {graph.tensors.digest(pairs[m].weight): v for m, v in s.items()}
    divide = {pairs[m].tensor: v for m, v in s.items()}
    if histogram and smoothed:  # histograms of x / s cannot be derived from those of x: a second pass
        ranges = observe(graph.source, samples, tensors=inputs, method=method, divide=divide).ranges
    else:
        ranges = dict(first.ranges)
        ranges.update({pairs[m].tensor: smoothed_range(first.channels[pairs[m].tensor], v) for m, v in s.items()})
    found: dict[str, tuple] = {}
    for g, key in keys.items():
        lo, hi = ranges[_node(graph, g).input[0]]
        if key in found:  # the same weight twice: the wider range serves both
            lo, hi = min(lo, found[key][0]), max(hi, found[key][1])
        found[key] = (lo, hi)
    return {"ranges": found, "maxima": maxima, "scales": by_weight}


def smooth_and_find(graph: Graph, measured: dict, alpha: float | None) -> tuple[int, dict[str, tuple]]:
    """Fold the smoothing into an LLM form's weights and give each GEMM input its measured range (by the
    weight's digest, from measure_llm). Returns (GEMMs smoothed, input tensor -> range)."""
    keys = gemm_keys(graph)  # digests of the weights as they are, before the fold changes them
    smoothed = 0
    if alpha:
        s = {p.matmul: measured["scales"][graph.tensors.digest(p.weight)] for p in find_pairs(graph.model)
             if p.matmul not in graph.kept and graph.tensors.digest(p.weight) in measured["scales"]}
        smoothed = fold_scales(graph.model, s, graph.tensors)
    ranges = {}
    for g, key in keys.items():
        if key not in measured["ranges"]:
            raise RuntimeError(f"jflow bug: {graph.name} GEMM {g} has no counterpart in the calibrated LLM form")
        ranges[_node(graph, g).input[0]] = measured["ranges"][key]
    return smoothed, ranges


def _node(graph: Graph, name: str):
    return graph.nodes[name]


def time_only_nodes(model, time_inputs: tuple[str, ...]) -> list[str]:
    """Nodes whose values come from the time inputs and constants alone (the time-conditioning path).
    Shapes are not values: Shape/Size outputs (e.g. the batch size a Reshape needs) count as constants,
    and so does the dtype-only second input of CastLike."""
    constant = {i.name for i in model.graph.initializer}
    timed = set(time_inputs)
    names = []
    for node in model.graph.node:  # topological order
        values = [i for i in (node.input[:1] if node.op_type == "CastLike" else node.input) if i]
        if node.op_type in ("Constant", "Shape", "Size") or all(i in constant for i in values):
            constant.update(node.output)
        elif all(i in constant or i in timed for i in values):
            timed.update(node.output)
            names.append(node.name)
    return names


def activation_products(model) -> list[str]:
    """MatMuls of two activations (attention scores, attention x V) stay float: only weight GEMMs are
    quantized."""
    constant = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in constant]


def check_ranges(ranges: dict[str, tuple], graph: Graph) -> None:
    missing = sorted({_node(graph, g).input[0] for g in graph.gemms} - set(ranges))
    if missing:
        raise RuntimeError(f"jflow bug: no calibrated range for {len(missing)} GEMM input(s) of {graph.name}, "
                           f"e.g. {missing[0]}")
    bad = [t for t, (lo, hi) in ranges.items() if not (np.isfinite(lo) and np.isfinite(hi))]
    if bad:
        raise RuntimeError(f"jflow bug: {graph.name}'s calibrated range of {bad[0]} is not finite")
