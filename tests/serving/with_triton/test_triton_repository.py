"""`jflow-export triton` on the tiny artifact: every config.pbtxt parses into tritonclient's ModelConfig (unknown
fields fail), its names, dtypes and dims equal the ONNX graph's own I/O (read with onnx), and bad input is
one clear line that leaves nothing behind."""

import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

pytest.importorskip("tritonclient.grpc", reason="needs the triton extra: pip install -e '.[triton]'")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402

from jflow.artifact.contract import GRAPH_NAMES  # noqa: E402
from jflow.artifact.manifest import Manifest, sha256_file  # noqa: E402
from jflow.artifact.writer import ArtifactWriter  # noqa: E402
from jflow.cli import main  # noqa: E402
from jflow.engines.profiles import profiles_for_manifest  # noqa: E402
from jflow.errors import OutputError  # noqa: E402
from jflow.serving.triton.model import TASKS  # noqa: E402
from jflow.serving.triton.repository import export_repository  # noqa: E402

NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32}


def parse(path):
    return text_format.Parse(path.read_text(), pb.ModelConfig())  # ParseError on any field Triton does not know


def onnx_io(path):
    """{name: (numpy dtype, dims with -1 for named axes, first axis name)} of a graph's inputs and outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}

    def describe(values):
        out = {}
        for v in values:
            if v.name in weights:
                continue
            dims = v.type.tensor_type.shape.dim
            out[v.name] = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)),
                           [d.dim_value if d.HasField("dim_value") else -1 for d in dims],
                           dims[0].dim_param if dims else None)
        return out
    return describe(graph.input), describe(graph.output)


def assert_config_matches_graph(config, graph_file):
    inputs, outputs = onnx_io(graph_file)
    batched = all(first == "batch" for _, _, first in [*inputs.values(), *outputs.values()])
    assert (config.max_batch_size > 0) == batched, config.name  # Triton batches only rows that are independent
    for declared, actual in ((config.input, inputs), (config.output, outputs)):
        assert [d.name for d in declared] == list(actual), config.name
        for d in declared:
            dtype, dims, _ = actual[d.name]
            assert np.dtype(NUMPY[pb.DataType.Name(d.data_type)]) == dtype, (config.name, d.name)
            assert list(d.dims) == (dims[1:] if batched else dims), (config.name, d.name)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def repo(tiny_artifact, tmp_path_factory):
    return export_repository(tiny_artifact, tmp_path_factory.mktemp("triton") / "repo", log=lambda _: None)


def test_onnxruntime_configs_equal_the_graphs(repo, tiny_artifact):
    manifest = Manifest.load(tiny_artifact)
    for name in GRAPH_NAMES:
        config = parse(repo / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert_config_matches_graph(config, repo / name / "1" / "model.onnx")
        graph = manifest.graph(name)["file"]  # the graph and its weights, byte for byte
        assert sha256_file(repo / name / "1" / "model.onnx") == manifest.files[graph]
        assert sha256_file(repo / name / "1" / f"{graph.split('/')[-1]}.data") == manifest.files[f"{graph}.data"]
        group, = config.instance_group
        assert group.count == 1 and group.kind == pb.ModelInstanceGroup.KIND_AUTO and not group.profile


def test_batching_only_where_rows_are_independent(repo):
    configs = {name: parse(repo / name / "config.pbtxt") for name in GRAPH_NAMES}
    # max_batch 3 in the tiny artifact; the llm takes 2x rows (guidance)
    assert {n: c.max_batch_size for n, c in configs.items()} == \
        {"siglip": 3, "llm": 6, "gen_encoder": 0, "gen_decoder": 0, "vae_decoder": 3}
    for name, config in configs.items():
        batching = config.WhichOneof("scheduling_choice")
        assert batching == ("dynamic_batching" if config.max_batch_size else None), name
        if batching:
            assert config.dynamic_batching.max_queue_delay_microseconds == 100


def test_unknown_fields_fail_to_parse(repo):
    text = (repo / "siglip" / "config.pbtxt").read_text()
    with pytest.raises(text_format.ParseError, match="max_batch"):
        text_format.Parse(text + "\nmax_batch: 4\n", pb.ModelConfig())


@pytest.mark.parametrize("variant", ["bls", "local"])
def test_python_models(tiny_artifact, tmp_path, variant):
    repo = export_repository(tiny_artifact, tmp_path / "repo", variant=variant, instances=2, log=lambda _: None)
    graphs = {p.parent.name for p in repo.glob("*/config.pbtxt")} - {"janusflow_generate", "janusflow_answer"}
    assert graphs == (set(GRAPH_NAMES) if variant == "bls" else set())  # local: no graph models at all
    for task, (inputs, outputs) in TASKS.items():
        folder = repo / f"janusflow_{task}"
        config = parse(folder / "config.pbtxt")
        assert config.backend == "python" and config.max_batch_size == 0
        assert {k: v.string_value for k, v in config.parameters.items()} == {"task": task, "runner": variant}
        assert config.model_transaction_policy.decoupled == (task == "answer")  # answers stream
        assert [(i.name, pb.DataType.Name(i.data_type), not i.optional) for i in config.input] == \
            [(n, kind, required) for n, (kind, required) in inputs.items()]
        assert [(o.name, pb.DataType.Name(o.data_type)) for o in config.output] == list(outputs.items())
        group, = config.instance_group
        assert group.count == 2 and group.kind == pb.ModelInstanceGroup.KIND_CPU
        assert "JanusFlowModel" in (folder / "1" / "model.py").read_text()
        copied = Manifest.load(folder / "1" / "artifact", check_files="none")
        present = [rel for rel in copied.files if (copied.root / rel).is_file()]
        if variant == "local":  # the whole artifact, intact
            Manifest.load(copied.root, check_files="full")
            assert sorted(present) == sorted(copied.files)
        else:  # host files only: the graphs are the other models
            assert not any(rel.startswith(("onnx/", "reference/")) for rel in present)
            assert {"tokenizer.json", "embeddings/embed_tokens.npy"} <= set(present)


@pytest.fixture(scope="module")
def with_engines(tiny_artifact, tmp_path_factory):
    """A copy of the tiny artifact with an engines.tensorrt section as `build --target tensorrt` writes it.
    The plans are PLACEHOLDER bytes: TensorRT cannot run here, so these configs are checked for structure only."""
    art = tmp_path_factory.mktemp("trt") / "art"
    shutil.copytree(tiny_artifact, art)
    data = Manifest.load(art).data
    profiles = profiles_for_manifest(data, list(GRAPH_NAMES))
    graphs = {}
    for name in GRAPH_NAMES:
        plan = art / "engines" / f"{name}-placeholder" / "engine.plan"
        plan.parent.mkdir(parents=True)
        plan.write_bytes(f"placeholder plan for {name}".encode())
        graphs[name] = {"plan": plan.relative_to(art).as_posix(), "key": "placeholder", "profiles": profiles[name]}
    ArtifactWriter(art).update({"engines": {"tensorrt": {"tensorrt_version": "10.3.0", "gpu_name": "placeholder",
                                                         "compute_capability": "8.7", "graphs": graphs}}})
    return art, profiles


def test_tensorrt_configs_name_the_plans_and_their_profiles(with_engines, tmp_path):
    art, profiles = with_engines
    repo = export_repository(art, tmp_path / "repo", engines="tensorrt", instances=3, log=lambda _: None)
    for name in GRAPH_NAMES:
        config = parse(repo / name / "config.pbtxt")
        assert config.platform == "tensorrt_plan"
        assert (repo / name / "1" / "model.plan").read_bytes() == f"placeholder plan for {name}".encode()
        assert_config_matches_graph(config, art / "onnx" / f"{name}.onnx")  # TensorRT keeps the ONNX I/O
        group, = config.instance_group
        assert group.kind == pb.ModelInstanceGroup.KIND_GPU and group.count == 3
        assert list(group.profile) == [str(i) for i in range(len(profiles[name]))]  # Triton picks among them
    llm = parse(repo / "llm" / "config.pbtxt")
    assert len(llm.instance_group[0].profile) == 3 and llm.max_batch_size == 6  # prefill takes 2 x max_batch rows


def test_cli_writes_a_repository(tiny_artifact, tmp_path):
    result = _run("triton", tiny_artifact, "--out", tmp_path / "repo", "--max-queue-delay-us", 500)
    assert result.exit_code == 0, result.output
    assert "tritonserver --model-repository" in result.output
    assert parse(tmp_path / "repo" / "llm" / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 500


def test_bad_input_is_one_line_and_leaves_nothing(tiny_artifact, with_engines, tmp_path):
    partial = with_engines[0].parent / "partial"
    shutil.copytree(with_engines[0], partial)  # engines for siglip only, as `build --components siglip` leaves it
    data = Manifest.load(partial).data
    ArtifactWriter(partial).update({"engines": {"tensorrt": {**data["engines"]["tensorrt"],
                                                             "graphs": {"siglip": data["engines"]["tensorrt"]["graphs"]["siglip"]}}}})
    out = tmp_path / "repo"
    cases = [
        (("--engines", "tensorrt"), "has no TensorRT engines; build them with `jflow-export build "),
        (("--engines", "cuda"), "Invalid value for '--engines'"),
        (("--variant", "gpu"), "Invalid value for '--variant'"),
        (("--instances", 0), "Invalid value for '--instances'"),
        (("--max-queue-delay-us", -1), "Invalid value for '--max-queue-delay-us'"),
        (("--variant", "local", "--engines", "tensorrt"), "--engines tensorrt needs --variant bls"),
    ]
    for args, message in cases:
        result = _run("triton", tiny_artifact, "--out", out, *args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    result = _run("triton", partial, "--out", out, "--engines", "tensorrt")
    assert result.exit_code == 1 and "no TensorRT engine for llm, gen_encoder, gen_decoder, vae_decoder" in result.output
    result = _run("triton", tmp_path / "missing", "--out", out)
    assert result.exit_code == 1 and "not a jflow artifact" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no repository, no partial folder

    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = _run("triton", tiny_artifact, "--out", out)
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in result.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    result = _run("triton", tiny_artifact, "--out", out, "--force")  # --force replaces only what jflow wrote
    assert result.exit_code == 1 and "not written by jflow" in result.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    out = tmp_path / "repo2"
    assert _run("triton", tiny_artifact, "--out", out).exit_code == 0
    (out / "llm" / "config.pbtxt").write_text("stale")
    assert _run("triton", tiny_artifact, "--out", out, "--force").exit_code == 0
    assert (out / "llm" / "config.pbtxt").read_text() != "stale"


def test_a_failed_write_publishes_nothing(tiny_artifact, tmp_path, monkeypatch):
    import jflow.serving.triton.repository as triton_repo
    written = []

    def fail_third(folder, config):
        if len(written) == 2:
            raise OutputError("disk full (simulated)")
        written.append(folder.name)
        real(folder, config)
    real = triton_repo.write_config
    monkeypatch.setattr(triton_repo, "write_config", fail_third)
    with pytest.raises(OutputError, match="disk full"):
        export_repository(tiny_artifact, tmp_path / "repo", log=lambda _: None)
    assert written == ["siglip", "llm"] and list(tmp_path.iterdir()) == []
