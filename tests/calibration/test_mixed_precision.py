"""Issue 21's recipes on the tiny artifact: int4 with the GEMMs most sensitive to int4 held at int8 (measured,
recorded in the manifest, the same kinds in both LLM forms), and int8's ORT form as block-wise MatMulNBits."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from jflow.artifact.manifest import Manifest
from jflow.calibration.quantize import quantize_artifact
from jflow.calibration.qdq import int4_round_trip
from jflow.calibration.sensitivity import choose_int8, gemm_bytes
from jflow.cli import main
from jflow.runtime.verify import verify_artifact


def _graph(art, name):
    return onnx.load(str(art / "onnx" / f"{name}.onnx"), load_external_data=True)


def _weight_kinds(model) -> list[str]:
    """Each weight GEMM's weight format, in graph order: int4 (blocked), int8 (per channel), int8-block."""
    produced = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    kinds = []
    for node in model.graph.node:
        dq = produced.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        blocked = any(a.name == "block_size" for a in dq.attribute)
        kind = {onnx.TensorProto.INT4: "int4", onnx.TensorProto.INT8: "int8"}[inits[dq.input[0]].data_type]
        kinds.append(kind + ("-block" if blocked and kind == "int8" else ""))
    return kinds


def _optimized(art, name, tmp_path):
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{name}.opt.data")
    ort.InferenceSession(str(art / "onnx" / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath, load_external_data=False)


def _nbits(model) -> list[dict]:
    return [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node
            if n.op_type == "MatMulNBits"]


def test_int4_records_every_gemms_sensitivity_and_precision(quantized, tiny_ref):
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    mixed = Manifest.load(quantized["int4"]).data["quantization"]["int4"]["int8_gemms"]
    names = [f"layers.{i}.{r}" for i in range(layers) for r in ("qkv", "o", "gate_up", "down")] + ["lm_head"]
    kl = mixed["sensitivity"]["kl"]
    assert list(kl) == names and all(np.isfinite(v) and v >= 0 for v in kl.values()) and max(kl.values()) > 0
    assert mixed["chosen_by"] == "measured sensitivity" and mixed["budget"] == 1.3
    assert mixed["int8"] and set(mixed["int8"]) < set(names)
    assert 1 < mixed["bytes_vs_plain_int4"] <= 1.3
    model = _graph(quantized["int4"], "llm_ort")  # the weights' shapes, [K, N], in graph order
    inits = {i.name: i for i in model.graph.initializer}
    dims = [tuple(inits[n.input[0]].dims) for n in model.graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] in inits and inits[n.input[0]].data_type in (onnx.TensorProto.INT4, onnx.TensorProto.INT8)]
    shapes = dict(zip(names, dims))
    assert choose_int8(kl, shapes, 1.3, 32) == mixed["int8"]  # the recorded choice follows from the recorded numbers


@pytest.mark.parametrize("name", ["llm", "llm_ort"])
def test_mixed_int4_has_the_chosen_kind_per_gemm_in_both_forms(quantized, name, tmp_path):
    mixed = Manifest.load(quantized["int4"]).data["quantization"]["int4"]["int8_gemms"]
    expected = ["int8" if g in mixed["int8"] else "int4" for g in mixed["sensitivity"]["kl"]]
    assert _weight_kinds(_graph(quantized["int4"], name)) == expected
    # ONNX Runtime runs each as MatMulNBits of that many bits, activations quantized per block (accuracy 4)
    nbits = _nbits(_optimized(quantized["int4"], name, tmp_path))
    assert [n["bits"] for n in nbits] == [8 if k == "int8" else 4 for k in expected]
    assert all(n["accuracy_level"] == 4 for n in nbits)


def test_mixed_int4_stores_each_weight_once(quantized):
    fused = onnx.load(str(quantized["int4"] / "onnx" / "llm_ort.onnx"), load_external_data=False)
    weights = [i for i in fused.graph.initializer if i.name.endswith(("_quantized", "_DQ_Q4"))
               and i.data_location == onnx.TensorProto.EXTERNAL]
    assert any(w.name.endswith("_quantized") for w in weights)  # the int8 GEMMs are shared too
    assert all({e.value for e in w.external_data if e.key == "location"} == {"llm.onnx.data"} for w in weights)


def test_int8_ort_form_is_blockwise_and_becomes_8bit_matmulnbits(quantized, tiny_ref, tmp_path):
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    model = _graph(quantized["int8"], "llm_ort")
    assert _weight_kinds(model) == ["int8-block"] * (4 * layers + 1)  # every weight GEMM, lm_head included
    assert not any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # activations: in the kernel
    nbits = _nbits(_optimized(quantized["int8"], "llm_ort", tmp_path))
    assert len(nbits) == 4 * layers + 1 and all(n["bits"] == 8 and n["block_size"] == 32
                                                and n["accuracy_level"] == 4 for n in nbits)
    q = Manifest.load(quantized["int8"]).data["quantization"]["int8"]
    assert q["llm_ort"]["ort_int8"] == "blockwise" and "MatMulNBits" in q["llm_ort"]["activations"]
    # the portable form (TensorRT) keeps static W8A8: its GEMMs read QuantizeLinear'd activations
    assert any(n.op_type == "QuantizeLinear" for n in _graph(quantized["int8"], "llm").graph.node)


def test_int4_round_trip_is_the_grid_the_artifact_holds(tiny_artifact, quantized):
    # The sensitivity is measured on exactly the values the int4 artifact's DequantizeLinear gives back.
    model = _graph(quantized["int4"], "llm_ort")
    inits = {i.name: i for i in model.graph.initializer}
    fp32 = {i.name: numpy_helper.to_array(i) for i in _graph(tiny_artifact, "llm_ort").graph.initializer}
    checked = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].data_type == onnx.TensorProto.INT4]:
        weight = fp32.get(dq.input[0].removesuffix("_DQ_Q4"))
        if weight is None:  # a packed weight: made from several
            continue
        session = ort.InferenceSession(helper.make_model(helper.make_graph(
            [dq], "dq", [], [helper.make_tensor_value_info(dq.output[0], onnx.TensorProto.FLOAT, None)],
            [inits[i] for i in dq.input]), opset_imports=[helper.make_opsetid("", 21)],
            ir_version=10).SerializeToString(), providers=["CPUExecutionProvider"])
        assert np.array_equal(int4_round_trip(weight, 32), session.run(None, {})[0]), dq.name
        checked += 1
    assert checked


def test_choose_int8_spends_the_budget_on_the_most_kl_per_byte():
    shapes = {"a": (64, 64), "b": (64, 256), "c": (64, 64), "d": (64, 64)}
    kl = {"a": 0.5, "b": 1.0, "c": 0.1, "d": 0.0}
    assert choose_int8(kl, shapes, 1.0, 32) == []
    plain = sum(gemm_bytes(s, "int4", 32) for s in shapes.values())
    for budget in (1.05, 1.2, 1.5, 2.0):
        chosen = choose_int8(kl, shapes, budget, 32)
        used = sum(gemm_bytes(s, "int8" if g in chosen else "int4", 32) for g, s in shapes.items())
        assert used <= plain * budget
        # b removes the most KL but costs 4x the bytes of a: per byte a comes first
        if chosen:
            assert "a" in chosen
    # b does not fit beside a, c still does; d, which int4 costs nothing, stays int4
    assert choose_int8(kl, shapes, 1.5, 32) == ["a", "c"]


def test_int8_gemms_hold_exactly_the_named_gemms(tiny_artifact, quantized, photos, tmp_path):
    out = quantize_artifact(tiny_artifact, tmp_path / "named", "int4", calib=photos, samples=2, steps=3,
                            cache=quantized["int8"].parent / "cache", log=lambda _: None,
                            int8_gemms=("lm_head", "layers.0.down"))
    mixed = Manifest.load(out).data["quantization"]["int4"]["int8_gemms"]
    assert mixed["int8"] == ["lm_head", "layers.0.down"] and mixed["chosen_by"] == "--int8-gemms"
    assert mixed["sensitivity"] is None and mixed["budget"] is None
    kinds = _weight_kinds(_graph(out, "llm"))
    assert kinds[3] == "int8" and kinds[-1] == "int8" and kinds.count("int8") == 2
    assert verify_artifact(out).ok


def test_bad_recipe_input_is_one_line_and_writes_nothing(tiny_artifact, tmp_path):
    cases = [
        (["--precision", "int4", "--int8-gemms", "layers.0.down,layers.99.qkv"],
         "--int8-gemms: this LLM has no GEMM named 'layers.99.qkv'; its GEMMs are layers.<0-"),
        (["--precision", "int4", "--int8-budget", "3"], "Invalid value for '--int8-budget'"),
        (["--precision", "int8", "--ort-int8", "dynamic"], "Invalid value for '--ort-int8'"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["quantize", str(tiny_artifact), *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_sensitivity_is_the_kl_the_exported_graph_gives(tiny_artifact):
    # The measuring session (weights as inputs, lm_head taken out) against the exported graph as it is: its
    # hidden states times lm_head are its logits, and lm_head's sensitivity is the KL they give.
    from jflow.calibration.sensitivity import calibration_text_ids, measure_sensitivity
    m = Manifest.load(tiny_artifact)
    sensitivity, shapes, scales = measure_sensitivity(m, 32, tokens=24, log=lambda _: None)
    assert scales is None and list(sensitivity) == list(shapes) and sensitivity["lm_head"] > 0
    ids = calibration_text_ids(tiny_artifact, 24)
    session = ort.InferenceSession(str(m.graph_path("llm")), providers=["CPUExecutionProvider"])
    table = np.load(tiny_artifact / "embeddings" / "embed_tokens.npy")
    feeds = {"inputs_embeds": table[ids][None].astype(np.float32), "attention_mask": np.ones((1, 24), np.int64),
             "position_ids": np.arange(24, dtype=np.int64)[None]}
    for arg in session.get_inputs():
        if arg.name.startswith("past_"):
            feeds[arg.name] = np.zeros([1 if isinstance(d, str) and d == "batch" else 0 if isinstance(d, str) else d
                                        for d in arg.shape], np.float32)
    hidden, logits = session.run(["hidden_states", "logits"], feeds)
    graph = _graph(tiny_artifact, "llm")
    head = next(numpy_helper.to_array(i) for i in graph.graph.initializer if "lm_head" in i.name).T  # [H, V]
    np.testing.assert_allclose(hidden[0, -1] @ head, logits[0], rtol=1e-4, atol=1e-4)
    ref = (hidden[0] @ head).astype(np.float64)
    test = (hidden[0] @ int4_round_trip(head, 32)).astype(np.float64)
    ref, test = (v - np.logaddexp.reduce(v, axis=-1, keepdims=True) for v in (ref, test))
    expected = float((np.exp(ref) * (ref - test)).sum(-1).mean())
    assert sensitivity["lm_head"] == pytest.approx(expected, rel=1e-3)


def test_awq_search_never_loses_to_plain_rounding_and_finds_outlier_channels():
    from jflow.calibration.awq import search_scales
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 64)).astype(np.float32)
    x[:, [3, 40]] *= 30  # two channels carry most of the activation, as in an LLM's norm outputs
    w = rng.standard_normal((64, 48)).astype(np.float32)
    s, a = search_scales(x, w, 32)
    plain = np.linalg.norm(x @ int4_round_trip(w, 32) - x @ w)
    scaled = np.linalg.norm((x / s) @ int4_round_trip(w * s[:, None], 32) - x @ w)
    assert a > 0 and scaled < plain and s[3] > np.median(s) and s[40] > np.median(s)
    flat = rng.standard_normal((128, 64)).astype(np.float32)
    s, a = search_scales(flat, w, 32)
    assert np.linalg.norm((flat / s) @ int4_round_trip(w * s[:, None], 32) - flat @ w) <= \
        np.linalg.norm(flat @ int4_round_trip(w, 32) - flat @ w)


def test_awq_scales_are_recorded_and_folded_alike_into_both_forms(tiny_artifact, quantized, photos, tmp_path):
    out = quantize_artifact(tiny_artifact, tmp_path / "awq", "int4", calib=photos, samples=2, steps=3,
                            cache=quantized["int8"].parent / "cache", log=lambda _: None, awq=True)
    mixed = Manifest.load(out).data["quantization"]["int4"]["int8_gemms"]
    alpha = mixed["awq"]["alpha"]
    assert alpha and all(0 <= a < 1 for a in alpha.values()) and "AWQ" in mixed["sensitivity"]["measure"]
    assert all(g.endswith((".qkv", ".gate_up", ".down")) for g in alpha)  # the GEMMs a norm or up_proj feeds
    fused = onnx.load(str(out / "onnx" / "llm_ort.onnx"), load_external_data=False)
    weights = [i for i in fused.graph.initializer if i.name.endswith(("_quantized", "_DQ_Q4"))
               and i.data_location == onnx.TensorProto.EXTERNAL]
    assert weights and all({e.value for e in w.external_data if e.key == "location"} == {"llm.onnx.data"}
                           for w in weights)  # scaled the same way in both forms: still one copy
    plain = _graph(quantized["int4"], "llm")
    assert {i.name for i in plain.graph.initializer} == {i.name for i in _graph(out, "llm").graph.initializer}
    assert verify_artifact(out).ok


def test_split_int8_runs_the_ode_steps_on_a_static_form_and_the_text_on_the_blockwise_one(
        tiny_artifact, quantized, photos, photo, tmp_path):
    from collections import Counter

    from jflow.runtime.backends import Hook
    from jflow.runtime.pipeline import Pipeline

    class Calls(Hook):
        def __init__(self):
            self.count = Counter()

        def call(self, runner, feeds):
            self.count[(runner.name, int(np.shape(feeds["inputs_embeds"])[1]) if "inputs_embeds" in feeds else 0)] += 1
            return super().call(runner, feeds)

    out = quantize_artifact(tiny_artifact, tmp_path / "split", "int8", calib=photos, samples=2, steps=3,
                            cache=quantized["int8"].parent / "cache", log=lambda _: None,
                            keep_float=("down", "o"))  # the default: split; float GEMMs as int8-static's
    m = Manifest.load(out)
    assert m.data["quantization"]["int8"]["llm_ort"]["ort_int8"] == "split"
    assert m.graph("llm_ort_step")["form_of"] == "llm" and m.graph_precision("llm_ort_step") == "int8"
    # the step form is the static W8A8 one, its weights referenced in the portable form's file
    step, static = _graph(out, "llm_ort_step"), _graph(quantized["int8-static"], "llm_ort")
    assert sorted(n.op_type for n in step.graph.node) == sorted(n.op_type for n in static.graph.node)
    weights = [i for i in onnx.load(str(out / "onnx" / "llm_ort_step.onnx"), load_external_data=False).graph.initializer
               if i.name.endswith("_quantized")]
    assert weights and all({e.value for e in w.external_data if e.key == "location"} == {"llm.onnx.data"}
                           for w in weights)
    assert _weight_kinds(_graph(out, "llm_ort"))[0] == "int8-block"
    calls = Calls()
    with Pipeline.load(out, hooks=[calls]) as pipe:
        latents = pipe.generate_latents("a lighthouse", steps=3, seed=0)
        assert np.isfinite(latents).all() and len(pipe.answer_tokens(photo, "what is this?", max_new_tokens=3)[0])
    steps = {k: v for k, v in calls.count.items() if k[0].startswith("llm")}
    assert steps[("llm_ort_step", 577)] == 3 and ("llm_ort", 577) not in steps  # every ODE step, on the static form
    assert any(k[0] == "llm_ort" and k[1] == 1 for k in steps)  # decode on the block-wise one
    assert not any(k[0] == "llm_ort_step" and k[1] != 577 for k in steps)
    assert verify_artifact(out).ok
