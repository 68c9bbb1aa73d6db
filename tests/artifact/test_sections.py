"""The manifest's optional sections, typed: engines, tolerances, quantization and graph forms are read as
the contract checked them, a bad one is one line, and manifests in today's format (schema 2, as export,
build and quantize have always written them) load, read and verify unchanged."""

import copy
import json
import shutil

import pytest

from jflow.artifact.engines import EngineIdentity
from jflow.artifact.manifest import ArtifactError, Manifest
from jflow.artifact.precision import TOLERANCES
from jflow.artifact.sections import Bound, OrtGraphs, TensorRTEngines, TensorRTPlan
from jflow.artifact.spec import GraphSpec, Limits
from jflow.artifact.writer import ArtifactWriter

PROFILE = [{"name": "default", "shapes": {"pixel_values": [[1, 3, 384, 384], [1, 3, 384, 384], [3, 3, 384, 384]]}}]
# The sections as today's writers put them in manifest.json (build's two targets; quantize's provenance).
TODAY_ENGINES = {
    "onnxruntime": {"onnxruntime_version": "1.0.0-another", "level": "extended",
                    "graphs": {"siglip": "ort/siglip.onnx", "gen_encoder": "ort/gen_encoder.onnx"}},
    "tensorrt": {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
                 "graphs": {"siglip": {"plan": "engines/siglip-0123/engine.plan", "key": "0123456789abcdef",
                                       "profiles": PROFILE}}},
}
TODAY_QUANTIZATION = {
    "from": {"precision": "fp32", "manifest_sha256": "ab" * 32},
    "graphs": {"siglip": "int8", "llm": "int8", "llm_ort": "int8", "gen_encoder": "int8", "gen_decoder": "int8"},
    "int8": {"weights": "per-channel symmetric int8", "activations": "per-tensor symmetric int8",
             "calibration": "minmax", "format": "QDQ (zero point 0)", "smoothing": None, "llm_float_gemms": None},
    "int4": None, "kept_float": ["GRN"], "calibration_set": {"prompts": 2}, "samples": {"llm_ort": 8},
    "llm_calibrated_on": "llm_ort", "ode_steps": [0, 29], "decode_positions": [1, 8],
    "tools": {"onnxruntime": "1.22.0", "onnx": "1.18.0"},
    "measured": {"siglip": {"rel_l2": 0.012, "cosine": 0.9999}, "e2e:generation": {"rel_l2": 0.31, "cosine": 0.95}},
}
TODAY_TOLERANCES_QUANTIZED = {**TOLERANCES, "overrides": {"e2e:generation": {"rel_l2": 0.465, "cosine": 0.925}}}


@pytest.fixture
def art(tiny_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("JFLOW_CACHE", str(tmp_path / "cache"))
    return shutil.copytree(tiny_artifact, tmp_path / "art")


def _quantized(data: dict) -> dict:
    """`data` as quantize writes an int8 artifact's manifest (the graphs themselves are not quantized here)."""
    data = copy.deepcopy(data)
    data["precision"] = "int8"
    for name, precision in TODAY_QUANTIZATION["graphs"].items():
        data["graphs"][name]["precision"] = precision
    data.update(tolerances=TODAY_TOLERANCES_QUANTIZED, quantization=TODAY_QUANTIZATION)
    return data


def test_a_manifest_of_todays_format_reads_typed(art):
    data = json.loads((art / "manifest.json").read_text())
    data["engines"] = TODAY_ENGINES  # written into the file as an earlier jflow did, by hand
    (art / "manifest.json").write_text(json.dumps(data))
    m = Manifest.load(art, check_files=False)
    assert m.engines.onnxruntime == OrtGraphs("1.0.0-another", "extended", TODAY_ENGINES["onnxruntime"]["graphs"])
    assert m.engines.tensorrt == TensorRTEngines(EngineIdentity("10.3.0", "Orin", "8.7"), {
        "siglip": TensorRTPlan("engines/siglip-0123/engine.plan", "0123456789abcdef", PROFILE)})
    assert m.engines.to_dict() == TODAY_ENGINES  # the typed form writes back the same JSON
    assert m.engines.optimized_graph("siglip", "1.0.0-another") == "ort/siglip.onnx"
    assert m.engines.optimized_graph("siglip", "1.22.0") is None  # another onnxruntime: the exported graph
    assert m.forms == {"llm_ort": "llm"} and m.form_of("llm_ort") == "llm" and m.form_of("llm") is None
    assert m.tolerances.for_graph("siglip", "fp32") == Bound(**TOLERANCES["fp32"]) and m.quantization is None
    assert m.tolerance("e2e:generation") == TOLERANCES["fp32"]
    assert m.spec("llm").input_names[0] == "inputs_embeds" and Limits.from_dict(m.limits) == Limits(3, 1024, 16)


def test_a_manifest_without_sections_reads_empty_ones(art):
    data = json.loads((art / "manifest.json").read_text())
    for key in ("engines", "tolerances", "quantization", "special_tokens"):
        data.pop(key, None)  # special_tokens: written for people, never read, so never required
    m = Manifest.from_dict(data, art)
    assert m.engines.onnxruntime is None and m.engines.tensorrt is None and m.engines.to_dict() == {}
    assert m.tolerances.for_graph("llm", "fp16") == Bound(**TOLERANCES["fp16"]) and m.quantization is None


def test_a_quantized_manifest_of_todays_format_reads_typed(art):
    m = Manifest.from_dict(_quantized(json.loads((art / "manifest.json").read_text())), art)
    q = m.quantization
    assert q.source_precision == "fp32" and q.graphs == TODAY_QUANTIZATION["graphs"]
    assert q.measured["e2e:generation"] == Bound(0.31, 0.95) and q.provenance["llm_calibrated_on"] == "llm_ort"
    assert m.tolerances.for_graph("e2e:generation", "int8") == Bound(0.465, 0.925)  # quantize's measured bound
    assert m.tolerance("siglip") == TOLERANCES["int8"] and m.tolerance("vae_decoder") == TOLERANCES["fp32"]


def test_verify_passes_an_artifact_with_todays_sections(art):
    from jflow.runtime.verify import verify_artifact
    data = json.loads((art / "manifest.json").read_text())
    data["engines"] = {"onnxruntime": TODAY_ENGINES["onnxruntime"]}  # optimized by another onnxruntime: unused
    (art / "manifest.json").write_text(json.dumps(data))
    report = verify_artifact(art, graphs=["siglip", "gen_encoder", "generation"])
    assert report.ok, report.rows


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(engines=[]), "engines must be an object, got \\[\\]; rebuild its engines"),
    (lambda d: d.update(engines={"cuda": {}}), "engines has unknown target\\(s\\) 'cuda'"),
    (lambda d: d.update(engines={"onnxruntime": {"graphs": {"unet": "ort/unet.onnx"}}}),
     "engines.onnxruntime.graphs names 'unet', which the artifact does not have"),
    (lambda d: d.update(engines={"onnxruntime": {"graphs": {"siglip": "../x.onnx"}}}), "inside the artifact"),
    (lambda d: d.update(engines={"tensorrt": {**TODAY_ENGINES["tensorrt"], "gpu_name": 7}}),
     "engines.tensorrt.gpu_name must be a string, got 7"),
    (lambda d: d.update(engines={"tensorrt": {**TODAY_ENGINES["tensorrt"], "graphs": {"siglip": {
        "plan": "engines/p", "key": "k", "profiles": [{"name": "default", "shapes": {"x": [[1], [2]]}}]}}}}),
     "engines.tensorrt.graphs\\['siglip'\\].profiles must be a list"),
    (lambda d: d["tolerances"].update(fp32={"rel_l2": "1e-4", "cosine": 0.9}), "tolerances.fp32 must hold rel_l2"),
    (lambda d: d["tolerances"].update(fp61={"rel_l2": 1, "cosine": 0.9}), "tolerances has unknown key\\(s\\) 'fp61'"),
    (lambda d: d["tolerances"].update(int8={"rel_l2": 10**400, "cosine": 0.9}), "tolerances.int8 must hold rel_l2"),
    (lambda d: d["graphs"]["siglip"].update(onnxruntime={"disabled_optimizers": "CSE"}),
     "onnxruntime must be an object whose disabled_optimizers is a list of names"),
    (lambda d: d["tolerances"].update(overrides={"siglip": {"rel_l2": 0.1, "cosine": 2}}),
     "tolerances.overrides\\['siglip'\\] must hold rel_l2 >= 0 and cosine in \\[-1, 1\\]"),
    (lambda d: d["graphs"]["llm_ort"].update(form_of="llm_ort"), "graphs\\['llm_ort'\\].form_of is 'llm_ort'"),
    (lambda d: d["graphs"]["llm_ort"].update(form_of="unet"), "must name another graph of the artifact"),
    (lambda d: d.update(quantization=TODAY_QUANTIZATION), "a fp32 artifact states a quantization"),
])
def test_a_bad_section_is_one_line(art, change, message):
    data = json.loads((art / "manifest.json").read_text())
    change(data)
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message) as e:
        Manifest.load(art, check_files=False)
    assert "\n" not in str(e.value)


def test_quantization_must_match_the_graphs_precisions(art):
    data = _quantized(json.loads((art / "manifest.json").read_text()))
    data["graphs"]["siglip"]["precision"] = "fp32"
    with pytest.raises(ArtifactError, match="quantization.graphs\\['siglip'\\] is 'int8', but the graph is 'fp32'"):
        Manifest.from_dict(data, art)


def test_graph_specs_read_back_as_export_wrote_them(art):
    m = Manifest.load(art, check_files=False)
    for name in m.graphs:
        spec = m.spec(name)
        assert isinstance(spec, GraphSpec) and spec.to_manifest(m.graph(name)["file"]).items() <= m.graph(name).items()


def test_the_writer_drafts_checks_and_writes_once(art):
    writer = ArtifactWriter(art)
    before = (art / "manifest.json").read_bytes()
    draft = writer.revise({"engines": {"onnxruntime": TODAY_ENGINES["onnxruntime"]}})
    assert (art / "manifest.json").read_bytes() == before  # a draft is not written
    assert Manifest.load(draft, check_files="full") is draft and draft.engines.onnxruntime.level == "extended"
    with pytest.raises(ArtifactError, match="being updated.*engines has unknown target"):
        writer.revise({"engines": {"cuda": {}}})
    written = writer.write(draft)
    assert (art / "manifest.json").read_bytes() == draft.to_bytes() and Manifest.load(art).digest == written.digest
    assert (art / "manifest.json").read_bytes().startswith(b'{\n  "schema_version": 2,\n  "jflow_version": ')
