"""`jflow-export quantize` on the tiny artifact: the precision of every graph in the manifest, QDQ where the
policy wants it and nowhere else, TensorRT-compatible scales, verify, the runtime, MatMulNBits in ORT."""

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from PIL import Image

from jflow.artifact.manifest import Manifest
from jflow.calibration.gemms import LLM_FORMS
from jflow.calibration.quantize import quantize_artifact
from jflow.cli import main
from jflow.runtime.pipeline import Pipeline
from jflow.runtime.verify import verify_artifact

QUANTIZED_OPS = {"MatMul", "Gemm", "Conv"}
FLOAT_ONLY_OPS = {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "LayerNormalization",
                  "Softmax", "ReduceMean", "ReduceL2", "Sin", "Cos", "GroupQueryAttention"}


def _graph(art, name):
    return onnx.load(str(art / "onnx" / f"{name}.onnx"), load_external_data=True)


def test_the_manifest_states_every_graphs_precision_and_the_provenance(quantized):
    for name, art in quantized.items():
        m = Manifest.load(art)
        precision = m.precision
        expected = {"siglip": "int8", "gen_encoder": "int8", "gen_decoder": "int8", "vae_decoder": "fp32",
                    "llm": precision, "llm_ort": precision}
        assert m.precision == precision and {n: m.graph_precision(n) for n in m.graphs} == expected
        q = m.data["quantization"]
        assert q["from"]["precision"] == "fp32" and q["calibration_set"]["photos"] == ["p0.png", "p1.png"]
        # one calibration pass, on llm_ort; the portable form takes its ranges by weight
        assert q["samples"]["llm_ort"] > 0 and "llm" not in q["samples"] and q["int8"]["calibration"] == "minmax"
        assert q["llm_calibrated_on"] == "llm_ort"
        assert set(q["tools"]) == {"onnxruntime", "onnx"} and "SDXL VAE decoder (whole graph)" in q["kept_float"]
        measured = set(expected) - {"llm_ort"} | {"e2e:generation", "e2e:understanding"}  # llm_ort: through e2e
        assert m.data["tolerances"][precision]["rel_l2"] > 0 and set(q["measured"]) == measured


@pytest.mark.parametrize("name", ["siglip", "llm", "llm_ort", "gen_encoder", "gen_decoder"])
def test_int8_qdq_is_symmetric_and_only_on_matmuls_and_convs(quantized, name):
    model = _graph(_int8(quantized, name), name)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node.op_type)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, name
    for node in qdq:
        scale, zero = inits[node.input[1]], inits.get(node.input[2]) if len(node.input) > 2 else None
        assert np.all(np.isfinite(scale)) and np.all(scale > 0), node.name
        assert zero is None or (zero.dtype == np.int8 and not zero.any()), node.name  # TensorRT: symmetric
        if node.op_type == "DequantizeLinear":  # dequantized values feed only the ops the policy quantizes
            assert set(consumers.get(node.output[0], [])) <= QUANTIZED_OPS | {"Transpose"}, (node.name,
                                                                                            consumers[node.output[0]])
    assert not any(n.op_type in FLOAT_ONLY_OPS and n.name.endswith("_quant") for n in model.graph.node)


def _int8(quantized, name):
    """The int8 artifact whose `name` holds W8A8 QDQ: the ORT LLM form only in the static one."""
    return quantized["int8-static" if name == "llm_ort" else "int8"]


def _activation_scales(art, name):
    model = _graph(art, name)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_percentile_calibration_runs_on_samples_of_different_lengths(tiny_artifact, quantized, photos, tmp_path):
    # onnxruntime's histogram calibrators stack each tensor over the samples of one collect_data call, which
    # fails when token counts differ (prompt prefills beside ODE steps): quantize feeds them one at a time.
    out = quantize_artifact(tiny_artifact, tmp_path / "percentile", "int8", calib=photos, samples=2, steps=3,
                            method="percentile", cache=quantized["int8"].parent / "cache", log=lambda _: None)
    assert Manifest.load(out).data["quantization"]["int8"]["calibration"] == "percentile"
    for name in ("llm", "gen_encoder"):
        clipped, full = _activation_scales(out, name), _activation_scales(quantized["int8-static"], name)
        assert clipped.keys() == full.keys() and all(np.isfinite(v) and v > 0 for v in clipped.values())
        # the 99.999th percentile of |x| never exceeds the maximum, and somewhere clips below it
        assert all(clipped[t] <= full[t] * (1 + 1e-5) for t in full), name
        assert any(clipped[t] < full[t] * 0.999 for t in full), name


@pytest.mark.parametrize("name", ["siglip", "llm", "llm_ort", "gen_encoder", "gen_decoder"])
def test_int8_is_w8a8_every_weight_gemm_reads_a_quantized_activation(quantized, name):
    # Not silently weight-only: a calibrator that cannot see a tensor's type skips it without a word.
    model = _graph(_int8(quantized, name), name)
    produced = {o: n for n in model.graph.node for o in n.output}
    time_only = {n.name for n in model.graph.node if n.op_type == "Gemm" and "time_embed" in n.input[1]}
    gemms = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in time_only
             and produced.get(n.input[1]) is not None and produced[n.input[1]].op_type == "DequantizeLinear"]
    assert gemms
    for node in gemms:
        if name in LLM_FORMS and "logits" in node.output:  # lm_head: weight-only int8 (one row a call)
            assert produced[node.input[0]].op_type != "DequantizeLinear", (name, node.name)
            continue
        source = produced.get(node.input[0])
        assert source is not None and source.op_type == "DequantizeLinear", (name, node.name)
        assert produced[source.input[0]].op_type == "QuantizeLinear", (name, node.name)


@pytest.mark.parametrize("name", ["llm", "llm_ort", "siglip"])
def test_onnxruntime_runs_every_int8_gemm_as_an_integer_kernel(quantized, name, tmp_path):
    # A MatMul left with DequantizeLinear inputs after ORT's optimization dequantizes its weights on
    # every call: slower than fp32, with nothing gained. (Convolutions are left out: ORT fuses a QDQ Conv
    # only with its output quantized too, which the policy does not do; TensorRT fuses them as they are.)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "opt.data")
    from jflow.artifact.contract import disabled_optimizers
    art = _int8(quantized, name)
    entry = Manifest.load(art).graph(name)  # the runtime creates its sessions the same way
    ort.InferenceSession(str(art / "onnx" / f"{name}.onnx"), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=disabled_optimizers(entry))
    model = onnx.load(options.optimized_model_filepath, load_external_data=False)
    produced = {o: n.op_type for n in model.graph.node for o in n.output}
    float_gemms = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                   and any(produced.get(i) == "DequantizeLinear" for i in n.input)]
    integer = [n for n in model.graph.node if n.op_type in ("MatMulIntegerToFloat", "QGemm", "QLinearConv",
                                                            "QLinearMatMul", "MatMulInteger", "ConvInteger")]
    assert integer and float_gemms == [], float_gemms[:5]


@pytest.mark.parametrize("name", ["siglip", "llm"])
def test_attention_scores_stay_float(quantized, name):
    # MatMuls of two activations (scores, scores x V) are not quantized: only weight GEMMs are.
    model = _graph(quantized["int8"], name)
    produced = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}

    def weight(tensor):  # a constant, or a DequantizeLinear of a constant
        node = produced.get(tensor)
        return tensor in inits or (node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits)
    products = [n for n in model.graph.node if n.op_type == "MatMul" and not weight(n.input[1])]
    assert products, name  # the graph has attention products ...
    for node in products:  # ... and none reads a dequantized activation
        assert not any(produced.get(i) is not None and produced[i].op_type == "DequantizeLinear" for i in node.input), \
            node.name


def test_time_features_and_the_vae_stay_float(quantized):
    enc = _graph(quantized["int8"], "gen_encoder")
    quantized_inputs = {n.output[0] for n in enc.graph.node if n.op_type == "DequantizeLinear"}
    time_gemms = [n for n in enc.graph.node if n.op_type == "Gemm" and "time_embed" in n.input[1]]
    assert time_gemms and not any(set(n.input) & quantized_inputs for n in time_gemms)
    vae = _graph(quantized["int8"], "vae_decoder")
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in vae.graph.node)


def test_int4_is_blocked_weight_only_and_becomes_matmulnbits_in_onnxruntime(quantized, tmp_path):
    art = quantized["int4"]
    for name in ("llm", "llm_ort"):
        model = _graph(art, name)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
        blocked = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and any(a.name == "block_size" and a.i == 32 for a in n.attribute)}
        # the GEMMs the recipe holds at int8 (test_mixed_precision.py) are per-channel int8, not blocked
        weights = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
        matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
        assert blocked and len([m for m in matmuls if m.input[1] in weights]) == len(weights) >= 7  # one per MatMul
        assert not any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # activations stay float
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
        ort.InferenceSession(str(art / "onnx" / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node]
        assert ops.count("MatMulNBits") >= 7 and "DequantizeLinear" not in ops, name


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_qkv_and_gate_up_are_packed_in_both_llm_forms(quantized, tiny_ref, precision):
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    for name in ("llm", "llm_ort"):
        model = _graph(quantized[precision], name)
        produced = {o: n.op_type for n in model.graph.node for o in n.output}
        weight_gemms = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                        and produced.get(n.input[1]) == "DequantizeLinear"]
        # every GEMM of every layer and lm_head, but those int8 keeps float in its static (portable) form
        kept = Manifest.load(quantized[precision]).data["quantization"]["int8"]["llm_float_gemms"]
        float_gemms = len(kept["gemms"]) if precision == "int8" and name == "llm" else 0
        assert len(weight_gemms) == 4 * layers + 1 - float_gemms, (name, len(weight_gemms))
        splits = sum(n.op_type == "Split" and n.name.endswith(".packed.split") for n in model.graph.node)
        attention = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
        if name == "llm_ort":  # attention reads the packed QKV itself: only gate/up is split
            assert splits == layers and len(attention) == layers
            assert all(n.input[1] == n.input[2] == "" and produced[n.input[0]] in ("MatMul", "MatMulNBits")
                       for n in attention)
        else:
            assert splits == 2 * layers


def test_int8_keeps_the_mlp_down_and_attention_output_projections_float_in_both_llm_forms(quantized, tiny_ref):
    # With --keep-float down,o the GEMMs reading silu(gate) * up and those reading attention's output stay float
    # (float weight, float input); every other LLM GEMM is W8A8 (lm_head: weight-only).
    from jflow.calibration.llm_graph import attention_projections
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    for name in ("llm", "llm_ort"):
        model = _graph(quantized["int8-static"], name)
        inits = {i.name for i in model.graph.initializer}
        produced = {o: n for n in model.graph.node for o in n.output}
        float_gemms = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
        assert len(float_gemms) == 2 * layers, (name, [n.name for n in float_gemms])
        attention = set(attention_projections(model))
        assert len(attention) == layers and attention <= {n.name for n in float_gemms}, (name, attention)
        for node in float_gemms:
            if node.name in attention:
                continue
            made = produced[node.input[0]]
            assert made.op_type == "Mul" and any(produced[i].op_type == "Split" for i in made.input), node.name
    q = Manifest.load(quantized["int8-static"]).data["quantization"]
    assert q["int8"]["llm_float_gemms"]["count"] == {"llm": 2 * layers, "llm_ort": 2 * layers}
    assert "the LLM's attention output projections (int8)" in q["kept_float"]
    assert "the LLM's MLP down projections (int8)" in q["kept_float"]
    q = Manifest.load(quantized["int8"]).data["quantization"]  # blockwise: the ORT form keeps none float
    assert q["int8"]["llm_float_gemms"]["count"] == {"llm": len(q["int8"]["llm_float_gemms"]["gemms"]), "llm_ort": 0}


def test_both_llm_forms_share_their_quantized_weights(quantized):
    # (the blockwise ORT form of int8 holds its own block-wise weights: test_int8_ort_form_is_blockwise...)
    for art in (quantized["int4"], quantized["int8-static"]):
        fused = onnx.load(str(art / "onnx" / "llm_ort.onnx"), load_external_data=False)
        locations = {e.value for i in fused.graph.initializer for e in i.external_data if e.key == "location"}
        weights = [i for i in fused.graph.initializer if i.name.endswith(("_quantized", "_DQ_Q4"))]
        assert weights and all({e.value for e in w.external_data if e.key == "location"} == {"llm.onnx.data"}
                               for w in weights if w.data_location == onnx.TensorProto.EXTERNAL)
        assert "llm.onnx.data" in locations


def test_verify_passes_and_catches_tampering(quantized, tmp_path):
    for art in quantized.values():
        assert verify_artifact(art).ok
    copy = shutil.copytree(quantized["int8"], tmp_path / "tampered")
    data = copy / "onnx" / "gen_decoder.onnx.data"
    data.write_bytes(data.read_bytes()[:-16] + b"\x7f" * 16)
    report = verify_artifact(copy)
    assert not report.ok and "onnx/gen_decoder.onnx.data: altered" in report.error


def test_generate_and_chat_run_on_quantized_artifacts(quantized, photo, tmp_path):
    for precision, art in quantized.items():
        with Pipeline.load(art) as pipe:
            latents = pipe.generate_latents("a lighthouse", steps=2, seed=0)
            assert latents.shape == (1, 4, 48, 48) and np.isfinite(latents).all()
            assert len(pipe.answer_tokens(photo, "what is this?", max_new_tokens=3)[0]) >= 1
        result = CliRunner().invoke(main, ["generate", str(art), "a cat", "-o", str(tmp_path / f"{precision}.png"),
                                           "--steps", "1", "--seed", "0"])
        assert result.exit_code == 0 and (tmp_path / f"{precision}.png").is_file(), result.output


def test_bad_input_is_one_line_and_writes_nothing(tiny_artifact, quantized, photos, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(quantized["int8"]), "--precision", "int4"], "is a int8 artifact; quantize reads an fp32 one"),
        ([str(tiny_artifact), "--precision", "int8", "--calib", str(empty)], "holds no images"),
        ([str(tiny_artifact), "--precision", "int8", "--calib", str(tmp_path / "nope")], "not a folder of images"),
        ([str(tiny_artifact), "--precision", "int8", "--samples", "0"], "Invalid value for '--samples'"),
        ([str(tiny_artifact), "--precision", "int8", "--method", "magic"], "Invalid value for '--method'"),
        ([str(tiny_artifact), "--precision", "int2"], "Invalid value for '--precision'"),
        ([str(tiny_artifact), "--precision", "int8", "--keep-float", "down,qkv"], "--keep-float takes roles among"),
        ([str(tiny_artifact), "--precision", "int8", "--keep-float", "down,layers.99.o"],
         "--keep-float: this LLM has no GEMM named 'layers.99.o'"),
        ([str(tiny_artifact), "--precision", "int8", "--float-budget", "2"], "Invalid value for '--float-budget'"),
        ([str(tmp_path / "missing"), "--precision", "int8"], "not a jflow artifact"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["quantize", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    linked = tmp_path / "linked"
    shutil.copytree(tiny_artifact, linked, copy_function=os.link)
    result = CliRunner().invoke(main, ["quantize", str(linked), "--precision", "int8", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "has other hard links" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    shutil.rmtree(linked)
    result = CliRunner().invoke(main, ["quantize", str(tiny_artifact), "--precision", "int8",
                                       "--out", str(quantized["int4"])])
    assert result.exit_code == 1 and "already exists" in result.output
    assert json.loads((quantized["int4"] / "manifest.json").read_text())["precision"] == "int4"  # untouched
