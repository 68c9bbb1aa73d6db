"""The int8 recipe's measured choice of the LLM GEMMs kept float (calibration.float_choice)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from jflow.artifact.manifest import Manifest
from jflow.calibration.float_choice import plan_float_gemms, quantize_in_rounds, w8a8_probe
from jflow.calibration.recipe import QuantRecipe
from jflow.calibration.sensitivity import llm_gemms, text_feeds


class _Additive:
    """A stand-in model for the rounds (the thing tested is quantize_in_rounds): each GEMM W8A8 adds its own KL,
    and a and b together add 0.5 (the down projections' compounding, in miniature)."""

    alone = {"a": 0.001, "c": 0.002, "d": 0.003, "e": 0.004, "b": 0.005, "f": 0.01, "g": 0.02, "h": 0.05}

    def __init__(self):
        self.measure = self  # probe.measure.kl(probe.run(gemms)): the KL of that set (and those settled) W8A8
        self.runs, self.settled = 0, set()

    def run(self, gemms):
        self.runs += 1
        chosen = self.settled | set(gemms)
        return sum(self.alone[g] for g in chosen) + (0.5 if {"a", "b"} <= chosen else 0.0)

    def settle(self, gemms):
        self.settled |= set(gemms)

    def kl(self, value):
        return value


def test_quantize_in_rounds_measures_each_gemm_on_top_of_those_already_w8a8():
    model = _Additive()
    sizes = {g: 1 for g in model.alone}
    floating, cost = quantize_in_rounds(model, sizes, 0.25, log=lambda _: None)
    assert model.runs == 8 + 1 + 4 + 1  # two rounds: each still-float GEMM once, then the round's W8A8 set
    assert model.settled == set(sizes) - set(floating)
    # Round 1 makes the four cheapest W8A8 (a, c, d, e); round 2 finds b now costs 0.505 (a is W8A8) and keeps
    # it float with h, the costliest; a choice by each GEMM alone would keep g and h and pay the 0.5.
    assert floating == ["b", "h"]
    assert cost["b"] == pytest.approx(0.505) and cost["a"] == pytest.approx(0.001)
    assert model.run([]) < 0.1
    assert quantize_in_rounds(_Additive(), sizes, 1.0, log=lambda _: None)[0] == list(sizes)  # all may stay float
    assert quantize_in_rounds(_Additive(), sizes, 0.0, log=lambda _: None)[0] == []


@pytest.fixture(scope="module")
def measured(tiny_artifact, photos, quantized):
    """The choice planned again on the samples the int8 fixture was calibrated on (from its cache), with the
    ranges it leaves in `llm`."""
    from jflow.calibration.collect import calibrated_form, collect_samples
    from jflow.calibration.data import calibration_set
    folder = collect_samples(tiny_artifact, calibration_set(2, photos), quantized["int8"].parent / "cache", steps=3,
                             log=lambda _: None, observe_llm=True)
    m, llm = Manifest.load(tiny_artifact), {}
    recipe = QuantRecipe("int8", samples=2, steps=3)
    plan = plan_float_gemms(m, recipe, folder / calibrated_form(m), llm, recipe.smooth, log=lambda _: None)
    return m, llm, plan


def test_the_int8_manifest_records_every_gemms_sensitivity_and_the_choice(measured, quantized):
    m, _, plan = measured
    recorded = Manifest.load(quantized["int8"]).data["quantization"]["int8"]["llm_float_gemms"]
    shapes = llm_gemms(m)
    assert list(recorded["sensitivity"]["kl"]) == list(shapes)  # every GEMM, lm_head included, in graph order
    assert recorded["chosen_by"] == "measured sensitivity" and recorded["budget"] == QuantRecipe.float_budget
    assert recorded["gemms"] == plan["gemms"] and recorded["sensitivity"] == plan["sensitivity"]  # reproducible
    layers = {g: s for g, s in shapes.items() if g != "lm_head"}
    size = {g: int(np.prod(s)) for g, s in layers.items()}
    assert sum(size[g] for g in recorded["gemms"]) <= recorded["budget"] * sum(size.values())
    assert recorded["gemms"], "the tiny model's budget keeps at least one GEMM float"
    # the portable form holds exactly those float: their MatMuls read a float weight and a float input
    model = onnx.load(str(quantized["int8"] / "onnx" / "llm.onnx"), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    float_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert len(float_matmuls) == len(recorded["gemms"])
    produced = {o: n.op_type for n in model.graph.node for o in n.output}
    assert all(produced.get(n.input[0]) != "DequantizeLinear" for n in float_matmuls)


def test_the_probe_runs_the_numbers_the_artifact_holds(measured, quantized):
    # Every GEMM the artifact quantizes switched on in the probe (scale, smoothing, int8 weights as measured)
    # gives the hidden states of the written W8A8 portable form, far closer than fp32 does.
    m, llm, plan = measured
    probe = w8a8_probe(m, llm, QuantRecipe.smooth)
    quantized_gemms = [g for g in probe.weight_of if g not in plan["gemms"]]
    simulated = probe.run(quantized_gemms)
    art = quantized["int8"]
    from jflow.artifact.contract import disabled_optimizers
    session = ort.InferenceSession(str(art / "onnx" / "llm.onnx"), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled_optimizers(Manifest.load(art).graph("llm")))
    feeds = {k: v for k, v in probe.measure.feeds.items() if k in {i.name for i in session.get_inputs()}}
    assert set(feeds) == set(text_feeds(Manifest.load(art), session, [0] * 2))
    written = session.run(["hidden_states"], feeds)[0][0]

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))
    assert rel(probe.measure.hidden, written) > 1e-3  # quantization changed something
    assert rel(simulated, written) < 0.05 * rel(probe.measure.hidden, written), (rel(simulated, written),
                                                                                 rel(probe.measure.hidden, written))


def test_keep_float_takes_gemm_names(tiny_artifact, photos, quantized, tmp_path):
    from jflow.calibration.quantize import quantize_artifact
    out = quantize_artifact(tiny_artifact, tmp_path / "named", "int8", calib=photos, samples=2, steps=3,
                            cache=quantized["int8"].parent / "cache", log=lambda _: None, ort_int8="static",
                            keep_float=("layers.0.down", "lm_head"))
    q = Manifest.load(out).data["quantization"]["int8"]["llm_float_gemms"]
    assert q["gemms"] == ["layers.0.down", "lm_head"] and q["chosen_by"] == "--keep-float" and q["roles"] == []
    assert q["count"] == {"llm": 2, "llm_ort": 2}
    for name in ("llm", "llm_ort"):  # lm_head float too (not weight-only): both read a float weight and input
        model = onnx.load(str(out / "onnx" / f"{name}.onnx"), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        produced = {o: n.op_type for n in model.graph.node for o in n.output}
        float_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
        assert len(float_matmuls) == 2 and any("logits" in n.output for n in float_matmuls), name
        assert all(produced.get(n.input[0]) != "DequantizeLinear" for n in float_matmuls), name
