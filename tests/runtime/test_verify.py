"""`verify` on the tiny artifact: it passes a good artifact, fails on anything the runtime would refuse,
judges numbers by the manifest's tolerances, and replays the end-to-end cases through the runtime."""

import json
import shutil

import numpy as np
import pytest

from jflow.artifact.writer import ArtifactWriter
from jflow.errors import InputError, JFlowError
from jflow.runtime.pipeline import Pipeline
from jflow.runtime.verify import compare, format_table, verify_artifact


@pytest.fixture
def art(tiny_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("JFLOW_CACHE", str(tmp_path / "cache"))
    return shutil.copytree(tiny_artifact, tmp_path / "art")


def _edit_manifest(root, change):
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))


def _edit_npz(root, rel, **arrays):
    """Replace arrays of a reference file and re-hash it, so only the numbers are wrong."""
    with np.load(root / rel) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    np.savez(root / rel, **data)
    ArtifactWriter(root).update({}, rehash=[rel])
    return data


def test_a_good_artifact_passes_with_every_graph_and_both_end_to_end_cases(tiny_artifact):
    report = verify_artifact(tiny_artifact)
    assert report.ok and report.error is None
    graphs = {r.graph for r in report.rows}
    assert graphs == {"siglip", "llm", "gen_encoder", "gen_decoder", "vae_decoder", "e2e:generation",
                      "e2e:understanding"}
    assert {(r.graph, r.output) for r in report.rows} >= {("e2e:generation", "latents"), ("e2e:generation", "image"),
                                                          ("e2e:understanding", "tokens"),
                                                          ("e2e:understanding", "logits")}
    table = format_table(report)
    for col in ("graph", "output", "max abs err", "rel L2", "cosine", "NaN/Inf", "tolerance", "result"):
        assert col in table
    assert "llm_ort (the onnxruntime form of llm" in table and "FAIL" not in table
    assert table.splitlines()[-1] == f"{len(report.rows)} passed, 0 failed"


def test_a_perturbed_reference_fails_on_numbers_and_the_manifest_states_the_bound(art):
    with np.load(art / "reference" / "gen_decoder.npz") as z:
        out = z["out.velocity"]
    _edit_npz(art, "reference/gen_decoder.npz", **{"out.velocity": out * np.float32(1.001)})
    report = verify_artifact(art, graphs=["gen_decoder"])
    row = next(r for r in report.rows if r.output == "velocity")
    assert not report.ok and not row.passed and row.rel_l2 == pytest.approx(1e-3, rel=1e-2)
    assert "rel L2 over tolerance" in row.note and "0 failed" not in format_table(report)
    _edit_manifest(art, lambda d: d["tolerances"]["fp32"].update(rel_l2=1e-2))  # bounds are the manifest's
    ArtifactWriter(art).update({})
    assert verify_artifact(art, graphs=["gen_decoder"]).ok


def test_an_edited_input_dtype_fails_verify_and_is_one_clear_error_in_the_runtime(art):
    _edit_manifest(art, lambda d: d["graphs"]["gen_encoder"]["inputs"][0].update(dtype="float16"))
    report = verify_artifact(art, graphs=["gen_encoder", "generation"])
    assert not report.ok
    assert all("does not match manifest.json" in r.note and "input z is float32" in r.note for r in report.rows)
    with Pipeline.load(art) as pipe, pytest.raises(JFlowError, match="graph gen_encoder.*re-export"):
        pipe.generate_latents("a cat", steps=1, seed=0)


def test_an_unloadable_graph_is_a_fail_row(art):
    (art / "onnx" / "gen_decoder.onnx").write_bytes(b"not an onnx model")
    ArtifactWriter(art).update({}, rehash=["onnx/gen_decoder.onnx"])
    report = verify_artifact(art, graphs=["gen_decoder"])
    assert not report.ok and "graph gen_decoder: onnxruntime cannot open gen_decoder.onnx" in report.rows[0].note


def test_nan_in_a_reference_fails(art):
    with np.load(art / "reference" / "siglip.npz") as z:
        out = z["out.image_embeds"].copy()
    out.flat[0] = np.nan
    _edit_npz(art, "reference/siglip.npz", **{"out.image_embeds": out})
    row = verify_artifact(art, graphs=["siglip"]).rows[0]
    assert not row.passed and "the reference itself holds NaN/Inf" in row.note


def test_the_end_to_end_cases_are_replayed_through_the_runtime(art):
    with np.load(art / "reference" / "e2e_generation.npz") as z:
        latents = z["latents"]
    _edit_npz(art, "reference/e2e_generation.npz", latents=latents * np.float32(1.01))
    report = verify_artifact(art, graphs=["generation", "understanding"])
    failed = {(r.graph, r.output) for r in report.rows if not r.passed}
    assert failed == {("e2e:generation", "latents")}
    with np.load(art / "reference" / "e2e_understanding.npz") as z:
        tokens = z["tokens"]
    _edit_npz(art, "reference/e2e_understanding.npz", tokens=np.roll(tokens, 1))
    rows = verify_artifact(art, graphs=["understanding"]).rows
    assert [r.passed for r in rows] == [False, False]  # greedy tokens differ, and so do teacher-forced logits


@pytest.mark.parametrize("change, message", [
    (lambda d: d["graphs"].pop("llm"), "graphs lacks llm"),
    (lambda d: d["graphs"].pop("vae_decoder"), "graphs lacks vae_decoder"),
    (lambda d: d["embeddings"].update(embed_tokens="../outside.npy"), "inside the artifact"),
])
def test_verify_refuses_what_the_runtime_refuses(art, change, message):
    _edit_manifest(art, change)
    report = verify_artifact(art)
    assert not report.ok and report.rows == [] and message in report.error
    with pytest.raises(JFlowError, match=message):
        Pipeline.load(art)
    assert "artifact not verified" in format_table(report).splitlines()[-1]


def test_a_wrong_embedding_table_is_refused_by_both(art):
    np.save(art / "embeddings" / "beg_of_und_embed.npy", np.zeros((1, 7), np.float32))
    ArtifactWriter(art).update({}, rehash=["embeddings/beg_of_und_embed.npy"])
    assert "do not fit an LLM of width 64" in verify_artifact(art).error


def test_sha_mismatch_names_the_file(art):
    with open(art / "reference" / "llm.npz", "ab") as f:
        f.write(b"junk")
    report = verify_artifact(art)
    assert not report.ok and report.rows == [] and "reference/llm.npz: altered (sha256 mismatch)" in report.error


def test_missing_artifact_bad_backend_and_graph_names(tiny_artifact, tmp_path):
    assert "not a jflow artifact" in verify_artifact(tmp_path / "missing").error
    with pytest.raises(InputError, match="unknown verify backend 'tensorflow'"):
        verify_artifact(tiny_artifact, backend="tensorflow")
    with pytest.raises(InputError, match="'unet'.*siglip.*generation, understanding"):
        verify_artifact(tiny_artifact, graphs=["unet"])
    report = verify_artifact(tiny_artifact, graphs=["siglip"])
    assert report.ok and {r.graph for r in report.rows} == {"siglip"}


def test_compare_metrics():
    ref = np.array([3.0, 4.0], dtype=np.float32)
    max_abs, rel, cos, bad = compare(ref * 1.1, ref)
    assert max_abs == pytest.approx(0.4) and rel == pytest.approx(0.1) and cos == pytest.approx(1.0) and bad == 0
    assert compare(np.array([np.nan, 1.0]), ref)[3] == 1
    assert compare(np.zeros(2), np.zeros(2))[1:3] == (0.0, 1.0)
