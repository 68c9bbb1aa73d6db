"""quantize's calibration runs each prompt's generation once, says only its own lines, and says what a
killed earlier run left behind."""

from __future__ import annotations

import re
import subprocess
import sys

from jflow.calibration.data import calibration_set
from jflow.calibration.quantize import quantize_artifact
from jflow.runtime.pipeline import Pipeline


def test_each_calibration_generation_runs_once(tiny_artifact, photos, tmp_path, monkeypatch):
    # Both LLM forms compute the same values at the same GEMMs: one trajectory per prompt serves both
    # (it ran once per form: twice the calibration time, 20 minutes for one 4-step sample at full size).
    generations = []
    real = Pipeline.generate_latents

    def counted(self, prompt, *args, **kwargs):
        generations.append(str(prompt))
        return real(self, prompt, *args, **kwargs)
    monkeypatch.setattr(Pipeline, "generate_latents", counted)
    quantize_artifact(tiny_artifact, tmp_path / "int8", "int8", calib=photos, samples=2, steps=3,
                      cache=tmp_path / "cache", log=lambda _: None)
    prompts = calibration_set(2, photos).prompts  # (verify replays the artifact's own cases too)
    assert [generations.count(p) for p in prompts] == [1, 1], generations
    folder = next((tmp_path / "cache").iterdir())
    recorded = {p.name for p in folder.iterdir() if p.is_dir()}
    assert (folder / "observed-llm_ort.npz").is_file() and "llm" not in recorded, recorded  # llm_ort, in the run


def test_quantize_prints_no_onnxruntime_warnings(tiny_artifact, photos, tmp_path):
    # onnxruntime's quantization tools logged "Please consider to run pre-processing..." per graph and "The
    # opset of the input model is under 21..." per int4 graph; its C++ log writes "[W:onnxruntime...]".
    # The CLI in its own process, as a user runs it (pytest would catch Python's log records itself), with
    # a fresh calibration cache: the calibration run is part of what is checked.
    for precision in ("int8", "int4"):
        run = subprocess.run([sys.executable, "-c", "from jflow.cli import main; main()", "quantize",
                              str(tiny_artifact), "--precision", precision, "--calib", str(photos), "--samples", "1",
                              "--steps", "2", "--out", str(tmp_path / precision)],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        lines = (run.stdout + run.stderr).splitlines()
        noise = [line for line in lines if re.search(r"W:onnxruntime|WARNING|pre-processing|opset|histogram", line)]
        assert not noise, noise
        assert any(line.startswith("wrote ") for line in lines), lines


def test_a_stale_partial_output_is_removed_and_reported_with_its_size(tiny_artifact, photos, quantized, tmp_path,
                                                                     leftover_partial):
    stale = leftover_partial(tmp_path, "int8", "k1ll3d00")
    (stale / "content" / "weights.data").write_bytes(b"\0" * 3 * 2**20)
    size = sum(f.stat().st_size for f in stale.rglob("*") if f.is_file())
    lines = []
    quantize_artifact(tiny_artifact, tmp_path / "int8", "int8", calib=photos, samples=2, steps=3,
                      cache=quantized["int8"].parent / "cache", log=lines.append)
    assert not stale.exists()
    assert lines[0].startswith(f"removed {stale}") and f"({size / 2**20:.1f} MiB)" in lines[0], lines[0]


def test_the_portable_form_takes_llm_orts_activation_ranges_by_weight(quantized):
    # Calibrated once, on llm_ort: each GEMM of the portable form gets the input scale of the llm_ort GEMM
    # with the same quantized weight bytes (they used to be measured apart, on a second calibration pass).
    import hashlib

    import onnx
    from onnx import numpy_helper

    def scales_by_weight(name):
        # (the static one: the block-wise llm_ort has no activation scales)
        model = onnx.load(str(quantized["int8-static"] / "onnx" / f"{name}.onnx"), load_external_data=True)
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        made = {o: n for n in model.graph.node for o in n.output}
        found = {}
        for node in model.graph.node:
            w, x = made.get(node.input[1]) if len(node.input) > 1 else None, made.get(node.input[0])
            if node.op_type in ("MatMul", "Gemm") and w is not None and w.op_type == "DequantizeLinear" \
                    and x is not None and x.op_type == "DequantizeLinear":
                found[hashlib.sha256(inits[w.input[0]].tobytes()).hexdigest()] = float(inits[x.input[1]])
        return found
    fused, portable = scales_by_weight("llm_ort"), scales_by_weight("llm")
    assert fused and portable == fused


def test_int8_reads_each_llm_weight_once_per_use(tiny_artifact, photos, quantized, tmp_path, monkeypatch):
    # Both fp32 LLM forms read their weights from one data file. The calibrated form was opened (every weight
    # hashed) and its smoothing scales computed to measure the ranges, then each form hashed the weights and
    # recomputed the scales again at its own turn: 8 reads of a smoothed weight (6.6 GB read and hashed three
    # times over at full size). Now: hashed once, read once for its smoothing scale, read by each form's writer:
    # 4 with the two static forms; the default split writes a third, block-wise form, which reads each once more;
    # --keep-float measured (float_choice) holds each in its measuring session: once more.
    import numpy as np
    from collections import Counter
    reads = Counter()
    real = np.fromfile

    def counted(file, *args, **kwargs):
        reads[(str(file), kwargs.get("offset", 0))] += 1
        return real(file, *args, **kwargs)
    monkeypatch.setattr(np, "fromfile", counted)
    for ort_int8, most, keep in (("static", 4, ("down", "o")), ("split", 5, ("down", "o")), ("split", 6, None)):
        reads.clear()
        quantize_artifact(tiny_artifact, tmp_path / f"{ort_int8}-{most}", "int8", calib=photos, samples=2, steps=3,
                          cache=quantized["int8"].parent / "cache", log=lambda _: None, ort_int8=ort_int8,
                          keep_float=keep)
        llm = {key: n for key, n in reads.items() if "/llm" in key[0]}
        assert llm, reads
        assert max(llm.values()) <= most, (ort_int8, sorted(llm.items(), key=lambda kv: -kv[1])[:3])
