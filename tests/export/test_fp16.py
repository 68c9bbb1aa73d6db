"""The fp16 artifact: strongly typed graphs with the policy's fp32 islands, runnable on ORT CPU."""

import numpy as np
import onnx
import pytest

from jflow.export.artifact import export_artifact
from jflow.artifact.spec import Limits
from jflow.artifact.manifest import Manifest
from jflow.runtime.verify import verify_artifact

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
# Ops whose inputs must be fp32 in an fp16 graph (the islands of jflow.artifact.precision).
ISLAND_OPS = {"Softmax", "ReduceL2", "Sin", "Cos", "Pow", "ReduceMean"}


@pytest.fixture(scope="module")
def artifact16(tmp_path_factory, tiny_ref):
    return export_artifact(tiny_ref, tmp_path_factory.mktemp("art16") / "tiny-fp16", precision="fp16",
                           limits=Limits(max_batch=2, max_context=800, max_new_tokens=8), log=lambda _: None)


def _typed_graph(path):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return model, types


def test_verify_passes_within_fp16_tolerance(artifact16):
    report = verify_artifact(artifact16)
    assert report.ok, report.error or [r for r in report.rows if not r.passed]
    assert all(r.nonfinite == 0 for r in report.rows)
    vae_rows = [r for r in report.rows if r.graph == "vae_decoder"]
    assert vae_rows and all(r.rel_l2 <= 1e-4 for r in vae_rows)  # the VAE is held to fp32


@pytest.mark.parametrize("graph", ["siglip", "llm", "gen_encoder", "gen_decoder"])
def test_fp16_weights_and_fp32_islands(artifact16, graph):
    model, types = _typed_graph(artifact16 / "onnx" / f"{graph}.onnx")
    # 2-D+ weights are fp16; the only fp32 table allowed is gen_encoder's folded sinusoid frequencies.
    big = [t for t in model.graph.initializer if len(t.dims) >= 2 and min(t.dims) > 1]
    assert big and all(t.data_type == FLOAT16 for t in big), graph  # matmul / conv weights are fp16
    islands = [n for n in model.graph.node if n.op_type in ISLAND_OPS]
    assert islands, graph
    for node in islands:
        assert types.get(node.input[0]) == FLOAT, (graph, node.op_type, node.name)


def test_io_dtypes_follow_the_policy(artifact16):
    m = Manifest.load(artifact16)
    dtypes = {(g, t["name"]): t["dtype"] for g, e in m.graphs.items() for t in e["inputs"] + e["outputs"]}
    assert dtypes[("gen_encoder", "z")] == "float32" and dtypes[("gen_encoder", "step_embeds")] == "float16"
    assert dtypes[("gen_decoder", "z_next")] == "float32" and dtypes[("gen_decoder", "hidden_states")] == "float16"
    assert dtypes[("llm", "past_key_0")] == "float16" and dtypes[("llm", "attention_mask")] == "int64"
    assert dtypes[("siglip", "pixel_values")] == "float32" and dtypes[("siglip", "image_embeds")] == "float16"
    assert all(dtypes[("vae_decoder", n)] == "float32" for n in ("latent", "image"))
    assert m.graphs["vae_decoder"]["precision"] == "fp32" and m.graphs["llm"]["precision"] == "fp16"
    vae = onnx.load(str(artifact16 / "onnx" / "vae_decoder.onnx"))
    assert all(t.data_type == FLOAT for t in vae.graph.initializer if t.data_type in (FLOAT, FLOAT16))
    assert np.load(artifact16 / "embeddings" / "embed_tokens.npy").dtype == np.float16


def test_fp16_pipeline_tracks_the_fp32_reference(artifact16, tiny_ref):
    from jflow.runtime.pipeline import Pipeline
    pipe = Pipeline.load(artifact16)
    ours = pipe.generate_latents("a red cube", steps=3, seed=2)
    ref = tiny_ref.generate("a red cube", steps=3, seed=2).latents
    assert np.isfinite(ours).all()
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= 2e-2
