"""Which LLM GEMMs a static W8A8 (int8) artifact keeps float, chosen by measurement (`--keep-float measured`).

The measure is the mean KL(fp32 || that) of the next-token distributions over the calibration text
(sensitivity.TOKENS tokens), with chosen GEMMs W8A8: weight per-channel int8, input quantized with the static
scale calibrated for it, SmoothQuant folded in, the numbers the artifact's QDQ will hold (a test checks the
probe against the written graph). The session is the int4 measure's (sensitivity.weight_session: GEMM weights
as graph inputs) with a switch before each weight GEMM, Where(on, DequantizeLinear(QuantizeLinear(x)), x), so
any set of GEMMs can be made W8A8 in one run. lm_head is weight-only int8 in every static form
(gemms.open_graph): its cost is its weight alone int8.

GEMMs go W8A8 in rounds, each measured on top of those already W8A8 (quantize_in_rounds), until the float
ones hold at most `float_budget` of the layers' GEMM weights: measured alone, each down projection looks
cheap, yet together they are most of an all-W8A8 LLM's error. It is not the default: on the real weights it
beats the role rule (every down and o projection float) on the calibration text at the rule's share, and
loses to it on held-out prose (results/int8_float_choice.json): the shipped prompts do not show what other
text does to the down projections. The per-GEMM costs it records in the manifest still say where an LLM's
int8 error comes from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from jflow.calibration.qdq import int8_round_trip
from jflow.calibration.sensitivity import TOKENS, NextTokenKl, calibration_text_ids, text_feeds, weight_session


@dataclass
class W8A8Probe:
    """The measuring session: `measure` (its fp32 run done), the GEMM weights it feeds by input name (smoothing
    folded), and per GEMM name its weight's input name and its switch's."""
    measure: NextTokenKl
    weights: dict[str, np.ndarray]
    weight_of: dict[str, str]
    switches: dict[str, str]

    def run(self, gemms) -> np.ndarray:
        """hidden_states [T, H] with the GEMMs named in `gemms` (and those settled) W8A8, the rest float."""
        changes = {}
        for g in gemms:
            w = self.weight_of[g]
            changes |= {w: int8_round_trip(self.weights[w]), self.switches[g]: np.array(True)}
        return self.measure.run(changes)

    def settle(self, gemms) -> None:
        """The GEMMs named in `gemms` W8A8 in every later run: their int8 weights made once, in place of the float
        ones (at full size a round trip of every W8A8 weight per run would cost more than the run)."""
        for g in gemms:
            w = self.weight_of[g]
            self.measure.feeds[w] = int8_round_trip(self.weights[w])
            self.measure.feeds[self.switches[g]] = np.array(True)


def w8a8_probe(manifest, llm: dict, alpha: float | None, tokens: int = TOKENS) -> W8A8Probe:
    """The probe over the portable LLM form of `manifest`, with the ranges and smoothing scales `llm` holds
    (gemms.measure_llm of every GEMM), fed `tokens` tokens of the calibration text."""
    from onnx import TensorProto, helper
    from jflow.calibration.gemms import open_graph, smooth_and_find
    from jflow.calibration.llm_graph import gemm_names
    from jflow.calibration.ranges import activation_scale
    graph = open_graph(manifest.graph_path("llm"), "llm", known=llm.setdefault("digests", {}))
    _, ranges = smooth_and_find(graph, llm, alpha)  # the folded weights are what is measured
    model, tensors = graph.model, graph.tensors
    names = gemm_names(model)  # (open_graph made lm_head a MatMul: hidden_states x its weight [K, N])
    nodes = {n.name: n for n in model.graph.node}
    weight_of = {g: nodes[node].input[1] for node, g in names.items() if g != "lm_head"}
    switches, order = {}, []
    for node in model.graph.node:
        g = names.get(node.name)
        if g is not None and g != "lm_head":
            x, switches[g] = node.input[0], f"{g}.w8a8"
            scale = activation_scale(*ranges[x])
            tensors.derive(f"{g}.scale", lambda v=scale: v, TensorProto.FLOAT, [])
            tensors.derive(f"{g}.zero", lambda: np.zeros((), np.int8), TensorProto.INT8, [])
            order += [helper.make_node("QuantizeLinear", [x, f"{g}.scale", f"{g}.zero"], [f"{g}.q"]),
                      helper.make_node("DequantizeLinear", [f"{g}.q", f"{g}.scale", f"{g}.zero"], [f"{g}.dq"]),
                      helper.make_node("Where", [switches[g], f"{g}.dq", x], [f"{g}.x"])]
            node.input[0] = f"{g}.x"
            model.graph.input.append(helper.make_tensor_value_info(switches[g], TensorProto.BOOL, []))
        order.append(node)
    del model.graph.node[:]
    model.graph.node.extend(order)
    session, weights, head_weight = weight_session(model, tensors, names)
    off = {s: np.array(False) for s in switches.values()}
    feeds = {**text_feeds(manifest, session, calibration_text_ids(manifest.root, tokens)), **weights, **off}
    return W8A8Probe(NextTokenKl(session, feeds, head_weight), weights, weight_of, switches)


def quantize_in_rounds(probe: W8A8Probe, sizes: dict[str, int], budget: float,
                       log: Callable[[str], None] = print) -> tuple[list[str], dict[str, float]]:
    """(the GEMMs kept float, each GEMM's last measured cost): GEMMs go W8A8 in rounds, until the float ones hold
    at most `budget` of the weights in `sizes`. Each round measures what adding each still-float GEMM costs
    on top of those already W8A8 (the KL with it, less the KL without it) and moves the cheapest half per
    weight element, so a GEMM's cost is measured with the errors it will compound with, where one measured
    alone looks cheap (the down projections: each alone 0.0001-0.013 on the real weights, all together 0.058)."""
    total, quantized, floating = sum(sizes.values()), [], list(sizes)
    cost, base, started = {}, 0.0, time.perf_counter()
    while sum(sizes[g] for g in floating) > budget * total:
        for g in floating:
            cost[g] = probe.measure.kl(probe.run([g])) - base
        moved = []
        for g in sorted(floating, key=lambda g: cost[g] / sizes[g])[:max(1, len(floating) // 2)]:
            if sum(sizes[f] for f in floating) <= budget * total:
                break
            moved.append(g)
            floating.remove(g)
        probe.settle(moved)
        quantized += moved
        base = probe.measure.kl(probe.run([]))
        log(f"    W8A8 round: {len(quantized)} of {len(sizes)} GEMMs W8A8, KL {base:.4g}, "
            f"{time.perf_counter() - started:.0f}s")
    return floating, cost


def plan_float_gemms(manifest, recipe, samples: Path, llm: dict, alpha: float | None,
                     log: Callable[[str], None] = print) -> dict:
    """Which LLM GEMMs an int8 artifact keeps float and why, as its manifest records it ("gemms": the names).
    Measures the LLM's ranges first (into `llm`, for every GEMM: the forms quantized next find them there)."""
    from jflow.calibration.collect import calibrated_form
    from jflow.calibration.gemms import measure_llm, open_graph
    from jflow.calibration.ranges import load_observed
    started = time.perf_counter()
    form = calibrated_form(manifest)
    observed = load_observed(samples.parent, samples.name) if recipe.method == "minmax" else None
    calibrated = open_graph(manifest.graph_path(form), form, known=llm.setdefault("digests", {}))
    llm.update(measure_llm(calibrated, samples, recipe.method, alpha, observed))
    del calibrated
    probe = w8a8_probe(manifest, llm, alpha)
    sizes = {g: int(probe.weights[w].size) for g, w in probe.weight_of.items()}  # lm_head: weight-only int8
    chosen, cost = quantize_in_rounds(probe, sizes, recipe.float_budget, log)
    head = probe.measure.kl(probe.measure.hidden, int8_round_trip(probe.measure.head_weight))
    share = sum(sizes[g] for g in chosen) / sum(sizes.values())
    log(f"  float GEMMs: {len(chosen)} of {len(sizes)} ({share:.1%} of the layers' GEMM weights) in "
        f"{time.perf_counter() - started:5.1f}s")
    return {"gemms": chosen, "chosen_by": "measured sensitivity", "budget": recipe.float_budget,
            "weights_share": round(share, 4),
            "sensitivity": {"measure": f"KL added by making this GEMM W8A8 (per-channel int8 weight, static int8 "
                                       f"input, smoothing folded) on top of those already W8A8, in the last round "
                                       f"that measured it (float_choice.quantize_in_rounds); mean KL(fp32 || that) "
                                       f"of the next-token distributions over {TOKENS} tokens of the calibration "
                                       "prompts and questions. lm_head (weight-only int8 in every case): its weight "
                                       "alone int8",
                            "kl": {g: float(f"{v:.4g}") for g, v in (cost | {"lm_head": head}).items()}}}
