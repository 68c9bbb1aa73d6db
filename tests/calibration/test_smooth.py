"""SmoothQuant-style smoothing: found where it should be, exact in float, identical in both LLM forms."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from jflow.artifact.manifest import Manifest
from jflow.calibration import SMOOTH_ALPHA
from jflow.calibration.collect import SampleReader
from jflow.calibration.llm_graph import pack_siblings
from jflow.calibration.smooth import channel_maxima, find_pairs, smooth


def _packed(art, name):
    model = onnx.load(str(art / "onnx" / f"{name}.onnx"), load_external_data=True)
    pack_siblings(model)
    return model


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def test_smoothing_finds_the_norm_gains_and_up_proj_of_every_layer(tiny_artifact, tiny_ref):
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    for name in ("llm", "llm_ort"):
        kinds = [p.kind for p in find_pairs(_packed(tiny_artifact, name))]
        # input norm -> qkv and post-attention norm -> gate_up (gains), up_proj -> down_proj (columns);
        # o_proj (attention output) and lm_head (after the final hidden states) are not smoothable.
        assert kinds.count("gain") == 2 * layers and kinds.count("columns") == layers, (name, kinds)


def test_smoothing_is_exact_in_float_and_identical_in_both_forms(tiny_artifact, recorded_samples, portable_samples):
    maxima = channel_maxima(_packed(tiny_artifact, "llm_ort"), tiny_artifact / "onnx" / "llm_ort.onnx",
                            recorded_samples / "llm_ort")
    assert maxima and all(np.all(m >= 0) and m.max() > 0 for m in maxima.values())
    smoothed_weights = {}
    for name in ("llm", "llm_ort"):
        before, after = _packed(tiny_artifact, name), _packed(tiny_artifact, name)
        pairs = find_pairs(after)
        assert smooth(after, maxima, alpha=0.5) == len(pairs) == len(maxima)
        inits = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
        original = {i.name: numpy_helper.to_array(i) for i in before.graph.initializer}
        assert all(not np.array_equal(inits[p.weight], original[p.weight]) for p in pairs)  # it did rescale
        smoothed_weights[name] = {inits[p.weight].tobytes() for p in pairs} | {inits[p.source].tobytes()
                                                                              for p in pairs}
        samples = portable_samples / "llm" if name == "llm" else recorded_samples / name
        reader = SampleReader(samples, [i.name for i in before.graph.input])
        for _ in range(2):
            feeds = reader.get_next()
            for ref, got in zip(_run(before, feeds), _run(after, feeds)):
                rel = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)
                assert rel < 1e-5, (name, rel)
    assert smoothed_weights["llm"] == smoothed_weights["llm_ort"]  # so the quantized forms still share bytes


def test_the_int8_manifest_records_the_smoothing_and_int4_has_none(quantized, tiny_ref):
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    q = Manifest.load(quantized["int8"]).data["quantization"]["int8"]
    # Q/K/V, gate/up and down of every layer (o: not smoothable), but the GEMMs kept float (not smoothed: nothing
    # to gain); llm_ort: block-wise, unsmoothed
    kept = [g for g in q["llm_float_gemms"]["gemms"] if not g.endswith(".o")]
    assert q["smoothing"]["alpha"] == SMOOTH_ALPHA and q["smoothing"]["gemms"] == {"llm": 3 * layers - len(kept)}
    # --keep-float down,o: Q/K/V and gate/up of every layer
    static = Manifest.load(quantized["int8-static"]).data["quantization"]["int8"]["smoothing"]
    assert static["gemms"] == {"llm": 2 * layers, "llm_ort": 2 * layers}
    assert Manifest.load(quantized["int4"]).data["quantization"]["int8"]["smoothing"] is None  # LLM is int4
