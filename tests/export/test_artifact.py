"""The ONNX artifact of the tiny model: every graph against PyTorch, a greedy decode and an ODE loop over
the exported graphs, the manifest contract, verify, and bad input."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from jflow.errors import InputError
from jflow.export import gen_decoder, gen_encoder, llm, siglip, vae_decoder
from jflow.export.artifact import GRAPHS, export_artifact
from jflow.artifact.spec import Limits
from jflow.modeling.understanding import answer_tokens, understanding_embeddings
from jflow.runtime.batching import generation_batch
from jflow.runtime.image_io import preprocess_images
from jflow.artifact.files import file_hashes
from jflow.artifact.manifest import Manifest
from jflow.runtime.ode import initial_noise, time_grid
from jflow.runtime.verify import verify_artifact

LIMITS = Limits(max_batch=3, max_context=1024, max_new_tokens=16)


@pytest.fixture(scope="module")
def artifact(tiny_artifact):
    return tiny_artifact  # exported in conftest with LIMITS


@pytest.fixture(scope="module")
def sessions(artifact):
    return {name: ort.InferenceSession(str(artifact / "onnx" / f"{name}.onnx")) for name in GRAPHS}


def _rel_l2(ours, ref):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def _check(session, graph, feeds):
    with torch.no_grad():
        want = graph(*[torch.from_numpy(np.asarray(v)) for v in feeds.values()])
    want = (want,) if isinstance(want, torch.Tensor) else want
    got = session.run(None, {k: np.asarray(v) for k, v in feeds.items()})
    for out, ours, ref in zip(session.get_outputs(), got, want):
        assert ours.shape == tuple(ref.shape), out.name
        assert _rel_l2(ours, ref) <= 1e-5, (out.name, _rel_l2(ours, ref))


@pytest.mark.parametrize("batch, seq, past", [(1, 7, 0), (3, 5, 4), (3, 1, 9), (1, 577, 12)])
def test_llm_matches_pytorch(sessions, tiny_ref, batch, seq, past):
    config = tiny_ref.model.config
    feeds = llm.example(config, torch.Generator().manual_seed(batch * 100 + seq + past), batch=batch, seq=seq, past=past)
    _check(sessions["llm"], llm.LlmGraph(tiny_ref.model), {k: v.numpy() for k, v in feeds.items()})


@pytest.mark.parametrize("module, wrapper, batch", [
    (siglip, siglip.SiglipGraph, 1), (siglip, siglip.SiglipGraph, 3),
    (gen_encoder, gen_encoder.GenEncoderGraph, 1), (gen_encoder, gen_encoder.GenEncoderGraph, 3),
    (gen_decoder, gen_decoder.GenDecoderGraph, 1), (gen_decoder, gen_decoder.GenDecoderGraph, 3),
])
def test_graph_matches_pytorch(sessions, tiny_ref, module, wrapper, batch):
    g = torch.Generator().manual_seed(batch)
    feeds = (module.example(tiny_ref.model.config, g) if module is siglip
             else module.example(tiny_ref.model.config, g, batch=batch))
    if module is siglip:
        feeds = {"pixel_values": torch.rand(batch, 3, 384, 384, generator=g) * 2 - 1}
    _check(sessions[module.NAME], wrapper(tiny_ref.model), {k: v.numpy() for k, v in feeds.items()})


def test_vae_matches_float64_pytorch(sessions, tiny_ref):
    latent = torch.randn(2, 4, 48, 48, generator=torch.Generator().manual_seed(5))
    graph64 = vae_decoder.VaeDecoderGraph(__import__("copy").deepcopy(tiny_ref.vae).double())
    with torch.no_grad():
        want = graph64(latent.double()).float()
    got = sessions["vae_decoder"].run(None, {"latent": latent.numpy()})[0]
    assert _rel_l2(got, want) <= 1e-5


def test_greedy_decode_over_exported_llm(artifact, sessions, tiny_ref, photo):
    tok = tiny_ref.tokenizer
    table = np.load(artifact / "embeddings" / "embed_tokens.npy")
    ids = tok.understanding_ids("what is in this picture?")
    pixels = preprocess_images([photo], tiny_ref.processor)
    image = sessions["siglip"].run(None, {"pixel_values": pixels})[0]
    embeds = table[np.array(ids)][None].copy()
    slots = np.flatnonzero((np.array(ids) == tok.image_id) | (np.array(ids) == tok.image_start_id))
    embeds[0, slots] = np.concatenate([np.load(artifact / "embeddings" / "beg_of_und_embed.npy"), image[0]])
    with torch.no_grad():  # the embedding assembly is what the reference does
        ref_embeds = understanding_embeddings(tiny_ref, torch.from_numpy(pixels), torch.tensor([ids]))
    assert _rel_l2(embeds, ref_embeds) <= 1e-5

    layers, kv, hd = llm.kv_geometry(tiny_ref.model.config)
    names = llm.kv_names(layers, "past")
    feeds = {n: np.zeros((1, kv, 0, hd), np.float32) for n in names}
    mask, pos, tokens = np.ones((1, len(ids)), np.int64), np.arange(len(ids))[None], []
    x = embeds
    for _ in range(10):
        out = sessions["llm"].run(None, {"inputs_embeds": x, "attention_mask": mask, "position_ids": pos, **feeds})
        tokens.append(int(out[1][0].argmax()))
        if tokens[-1] == tok.eos_id:
            break
        feeds = dict(zip(names, out[2:]))
        x, pos = table[[tokens[-1]]][None], pos[:, -1:] + 1
        mask = np.ones((1, mask.shape[1] + 1), np.int64)
    assert tokens == answer_tokens(tiny_ref, photo, "what is in this picture?", max_new_tokens=10)[0]


def test_ode_loop_over_exported_graphs(artifact, sessions, tiny_ref):
    # Prompt prefilled once, then gen_encoder -> llm (577 tokens on the prompt KV) -> gen_decoder per step.
    steps, noise = 3, initial_noise(21, 1, 48)
    batch = generation_batch([tiny_ref.tokenizer.generation_ids("a red cube")], tiny_ref.tokenizer.pad_id)
    table = np.load(artifact / "embeddings" / "embed_tokens.npy")
    layers, kv, hd = llm.kv_geometry(tiny_ref.model.config)
    empty = {n: np.zeros((2, kv, 0, hd), np.float32) for n in llm.kv_names(layers, "past")}
    prompt = sessions["llm"].run(None, {"inputs_embeds": table[batch.ids], "attention_mask": batch.mask,
                                        "position_ids": batch.positions, **empty})
    prompt_kv = dict(zip(llm.kv_names(layers, "past"), prompt[2:]))
    mask = np.concatenate([batch.mask, np.ones((2, 577), np.int64)], axis=1)
    t_grid, dt = time_grid(steps)
    z = noise
    for k in range(steps):
        step_embeds, t_emb, skip = sessions["gen_encoder"].run(None, {"z": z, "t": np.full(1, t_grid[k], np.float32)})
        hidden = sessions["llm"].run(["hidden_states"], {"inputs_embeds": step_embeds, "attention_mask": mask,
                                                         "position_ids": batch.next_positions(577), **prompt_kv})[0]
        z = sessions["gen_decoder"].run(["z_next"], {"hidden_states": hidden, "skip": skip, "t_emb": t_emb, "z": z,
                                                     "dt": np.array([dt], np.float32),
                                                     "cfg_weight": np.array([2.0], np.float32)})[0]
    expected = tiny_ref.generate("a red cube", steps=steps, noise=noise)
    assert np.abs(z - expected.latents).max() <= 1e-4
    image = sessions["vae_decoder"].run(None, {"latent": z})[0]
    from jflow.runtime.image_io import to_uint8
    assert np.abs(to_uint8(image).astype(int) - expected.images).max() <= 1


def test_manifest_contract(artifact, tiny_ref):
    m = Manifest.load(artifact)
    assert m.precision == "fp32" and m.limits == LIMITS.to_dict()
    assert set(m.graphs) == set(GRAPHS) | {"llm_ort"}
    for name, entry in m.graphs.items():
        session = ort.InferenceSession(str(artifact / entry["file"]))
        assert [i.name for i in session.get_inputs()] == [t["name"] for t in entry["inputs"]]
        assert [o.name for o in session.get_outputs()] == [t["name"] for t in entry["outputs"]]
        for io_value, declared in zip(session.get_inputs(), entry["inputs"]):
            assert list(io_value.shape) == declared["shape"], (name, io_value.name)
    assert m.graphs["llm"]["ranges"]["batch"] == {"min": 1, "opt": 1, "max": 6}  # guidance doubles rows
    assert m.graphs["llm"]["ranges"]["past"]["min"] == 0
    assert json.loads((artifact / "manifest.json").read_text())["special_tokens"] == tiny_ref.tokenizer.special_ids()
    e2e = np.load(artifact / "reference" / "e2e_understanding.npz")
    assert e2e["tokens"].tolist() == answer_tokens(tiny_ref, e2e["image"], str(e2e["question"]),
                                                   max_new_tokens=int(e2e["max_new_tokens"]))[0]


def test_verify_passes_then_catches_tampering(artifact, tmp_path):
    assert verify_artifact(artifact).ok
    altered = tmp_path / "altered"
    shutil.copytree(artifact, altered)
    data = altered / "onnx" / "llm.onnx.data"
    data.write_bytes(data.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    report = verify_artifact(altered)
    assert not report.ok and "onnx/llm.onnx.data" in report.error

    swapped = tmp_path / "swapped"
    shutil.copytree(artifact, swapped)
    shutil.copy(swapped / "onnx" / "gen_encoder.onnx", swapped / "onnx" / "siglip.onnx")
    shutil.copy(swapped / "onnx" / "gen_encoder.onnx.data", swapped / "onnx" / "siglip.onnx.data")
    manifest = json.loads((swapped / "manifest.json").read_text())
    manifest["files"] = file_hashes(swapped)  # hashes made consistent: only the graph itself is wrong
    (swapped / "manifest.json").write_text(json.dumps(manifest))
    report = verify_artifact(swapped)
    assert not report.ok and any(r.graph == "siglip" and not r.passed for r in report.rows)
    # Only siglip, and the understanding case that runs it, fail.
    assert all(r.passed for r in report.rows if r.graph not in ("siglip", "e2e:understanding"))


def test_existing_output_is_refused(artifact, tiny_ref):
    with pytest.raises(InputError, match="already exists"):
        export_artifact(tiny_ref, artifact, limits=LIMITS)


def test_bad_limits(tiny_ref, tmp_path):
    with pytest.raises(InputError, match="leaves no room for a prompt"):
        export_artifact(tiny_ref, tmp_path / "a", limits=Limits(max_context=300))
    with pytest.raises(InputError, match="cannot hold an image question.*use --max-context 7"):
        export_artifact(tiny_ref, tmp_path / "a", limits=Limits(max_context=700))
    assert not (tmp_path / "a").exists()


def test_unwritable_parent(tiny_ref, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="file is a file, not a folder"):  # found before any work
        export_artifact(tiny_ref, blocker / "art", limits=LIMITS)


def test_interrupted_export_leaves_nothing(tiny_ref, tmp_path, monkeypatch):
    import jflow.export.artifact as artifact_module

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the reference cases
    monkeypatch.setattr(artifact_module.reference_io, "generation_case", fail)
    with pytest.raises(KeyboardInterrupt):
        export_artifact(tiny_ref, tmp_path / "art", limits=LIMITS, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor its temporary folder


def _fake_write(ref, root, *args):
    (root / "manifest.json").write_text("{}")  # stands for the slow export


def test_export_removes_only_abandoned_partials_of_its_target(tiny_ref, tmp_path, monkeypatch, leftover_partial):
    import jflow.export.artifact as artifact_module
    monkeypatch.setattr(artifact_module, "_write", _fake_write)
    stale = leftover_partial(tmp_path, "art", "killed")
    kept = [leftover_partial(tmp_path, "art", "unmarked", owner="none"), leftover_partial(tmp_path, "other", "killed")]
    export_artifact(tiny_ref, tmp_path / "art", limits=LIMITS, log=lambda _: None)
    assert not stale.exists() and all(k.exists() for k in kept)
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [".jflow-output.json", "manifest.json"]


def test_export_never_replaces_a_target_that_appeared_meanwhile(tiny_ref, tmp_path, monkeypatch):
    import jflow.export.artifact as artifact_module
    out = tmp_path / "art"

    def racing(ref, root, *args):
        (root / "manifest.json").write_text("second")
        out.mkdir()  # a concurrent export to the same --out finished first
        (out / "manifest.json").write_text("first")
        from jflow.output_folders import mark_output
        mark_output(out, "artifact")  # it is jflow's: a later --force may replace it
    monkeypatch.setattr(artifact_module, "_write", racing)
    with pytest.raises(InputError, match="appeared while"):
        export_artifact(tiny_ref, out, limits=LIMITS, log=lambda _: None)
    assert (out / "manifest.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary folder left
    monkeypatch.setattr(artifact_module, "_write", _fake_write)
    export_artifact(tiny_ref, out, limits=LIMITS, force=True, log=lambda _: None)  # --force replaces
    assert (out / "manifest.json").read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["art"]


def test_a_failed_write_during_export_is_one_error_and_leaves_nothing(tiny_ref, tmp_path, monkeypatch):
    import errno

    import jflow.export.artifact as artifact_module

    def disk_full(ref, root, *args):
        (root / "onnx").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "onnx" / "llm.onnx.data"))
    monkeypatch.setattr(artifact_module, "_write", disk_full)
    with pytest.raises(InputError, match=r"writing .*art failed: .*No space left on device.*nothing was published"):
        export_artifact(tiny_ref, tmp_path / "art", limits=LIMITS, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_verify_runs_without_torch(artifact, tmp_path):
    # What a device runs: the CLI's verify with torch, transformers and diffusers impossible to import.
    import subprocess
    import sys
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for name in ("torch", "transformers", "diffusers"):
        (shadow / f"{name}.py").write_text("raise ImportError('not on this device')\n")
    out = subprocess.run([sys.executable, "-m", "jflow.cli", "verify", str(artifact)], capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(shadow), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "17 passed, 0 failed" in out.stdout


def test_missing_model_is_one_clear_line(tmp_path):
    from click.testing import CliRunner

    from jflow.cli import main
    result = CliRunner().invoke(main, ["onnx", str(tmp_path / "nope"), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "checkpoint folder not found" in result.output
    assert not (tmp_path / "a").exists()


def test_reference_inputs_are_what_a_real_request_feeds_each_graph(artifact, tiny_ref):
    # The per-graph cases are one real ODE step of the shipped generation case, not random tensors.
    ref = {n: np.load(artifact / "reference" / f"{n}.npz") for n in ("llm", "gen_encoder", "gen_decoder",
                                                                       "vae_decoder", "siglip")}
    gen = np.load(artifact / "reference" / "e2e_generation.npz")
    und = np.load(artifact / "reference" / "e2e_understanding.npz")
    # The llm's step input is what gen_encoder emits for that step; gen_decoder decodes the llm's output.
    assert np.allclose(ref["llm"]["in.inputs_embeds"], ref["gen_encoder"]["out.step_embeds"], atol=1e-6)
    assert np.allclose(ref["gen_decoder"]["in.hidden_states"], ref["llm"]["out.hidden_states"], atol=1e-6)
    # Its past is the prompts' real KV: two rows of different lengths, the guidance rows masked after BOS.
    mask = ref["llm"]["in.attention_mask"]
    assert mask.shape[0] == 2 * len(gen["prompts"]) and 0 < mask.sum() < mask.size
    assert ref["vae_decoder"]["in.latent"].tolist() == gen["latents"][:1].tolist()  # the case's final latent
    from jflow.runtime.image_io import preprocess_images
    assert np.array_equal(ref["siglip"]["in.pixel_values"], preprocess_images([und["image"]], tiny_ref.processor))
    # The step comes from a real trajectory (t after the first step), not the unit-variance noise of old.
    assert float(ref["gen_encoder"]["in.t"][0]) > 0
