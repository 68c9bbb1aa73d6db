"""Ours (ONNX Runtime CPU, fp32) vs the PyTorch eager reference (fp32, same algorithm, same inputs),
interleaved in one run, plus decode per token vs the memory-bandwidth floor.

    python -m benchmarks.speed.bench_vs_pytorch [--rounds 5] [--layers 2]

Uses the `bench` preset (jflow.modeling.presets.bench_config: real widths and vocabulary, few layers)
with random weights and a full-size SDXL-shaped VAE, exported once and cached (fixtures/bench_artifact.py);
our side runs through the runtime's own runners (the fused LLM form, its in-place KV cache). Writes
benchmarks/results/bench_vs_pytorch.json and a PNG chart. Ratios are PyTorch time / our time (> 1: we are faster); the floor ratio is our decode time /
(weight bytes read per token / measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import RESULTS


def copy_bandwidth(nbytes: int = 512 << 20, repeats: int = 5) -> float:
    """Bytes per second moved by a large numpy copy (read + write), best of `repeats`."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = min(_time(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * nbytes / best


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(pairs: dict, rounds: int) -> dict:
    """{stage: (torch_fn, ours_fn)} -> medians and ratio, alternating the two sides every round."""
    out = {}
    for stage, (torch_fn, ours_fn) in pairs.items():
        torch_fn(), ours_fn()  # warm-up
        t, o = [], []
        for _ in range(rounds):
            t.append(_time(torch_fn))
            o.append(_time(ours_fn))
        out[stage] = {"pytorch_ms": float(np.median(t) * 1e3), "ours_ms": float(np.median(o) * 1e3),
                      "speedup": float(np.median(t) / np.median(o))}
        print(f"{stage:<22} pytorch {out[stage]['pytorch_ms']:9.1f} ms  ours {out[stage]['ours_ms']:9.1f} ms  "
              f"x{out[stage]['speedup']:.2f}", flush=True)
    return out


def chart(results: dict, path: Path) -> None:
    """A bar chart of the speedups (PIL only, no plotting dependency)."""
    from PIL import Image, ImageDraw
    stages = list(results["stages"])
    width, bar, gap, top = 720, 34, 14, 60
    img = Image.new("RGB", (width, top + len(stages) * (bar + gap) + 40), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), "jflow (ONNX Runtime CPU, fp32) vs PyTorch eager: speedup (x)", fill="black")
    draw.text((10, 28), f"bench preset, {results['machine']['cpu_count']} cores; 1.0 = parity", fill="gray")
    scale = (width - 260) / max(2.0, max(s["speedup"] for s in results["stages"].values()))
    parity = 200 + scale
    for i, name in enumerate(stages):
        y = top + i * (bar + gap)
        s = results["stages"][name]["speedup"]
        draw.text((10, y + 10), name, fill="black")
        draw.rectangle([200, y, 200 + s * scale, y + bar], fill="#3b7dd8" if s >= 1 else "#d8703b")
        draw.text((205 + s * scale, y + 10), f"x{s:.2f}", fill="black")
    draw.line([parity, top - 5, parity, top + len(stages) * (bar + gap)], fill="black", width=1)
    img.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    threads = os.cpu_count()
    torch.set_num_threads(threads)

    from benchmarks.fixtures.bench_artifact import bench_artifact, bench_reference
    from jflow.modeling.understanding import understanding_embeddings
    from jflow.modeling.vae import vae_decode
    from jflow.runtime.batching import generation_batch, understanding_batch
    from jflow.runtime.image_io import preprocess_images
    from jflow.runtime.ode import initial_noise
    from jflow.runtime.pipeline import Pipeline

    ref = bench_reference(args.layers)
    config = ref.model.config
    pipe = Pipeline.load(bench_artifact(layers=args.layers, ref=ref), threads=threads, check_files=False)
    model, llm, backend = ref.model, pipe.llm, pipe.backend

    picture = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    pixels = preprocess_images([picture], ref.processor)
    und = understanding_batch([ref.tokenizer.understanding_ids("What is in this picture?")], ref.tokenizer.pad_id)
    with torch.no_grad():
        und_embeds = understanding_embeddings(ref, torch.from_numpy(pixels), torch.from_numpy(und.ids))
        _, _, und_kv = model.llm_step(und_embeds, torch.from_numpy(und.mask), torch.from_numpy(und.positions))
    context = und.ids.shape[1]
    token = torch.tensor([[7]])
    dec_mask, dec_pos = np.ones((1, context + 1), np.int64), np.array([[context]])
    # Ours: the runtime's own LLM runner; decode on a cache that holds the same prompt.
    und_rows = [und_embeds[0].numpy()]
    decode_cache = llm.new_cache(1, context + 64)
    llm.prefill(decode_cache, und_rows)

    def ours_decode():
        if decode_cache.lengths[0] >= decode_cache.capacity - 1:  # start again after 63 tokens
            decode_cache.lengths[:] = decode_cache.positions[:] = context
        return llm.decode_one(decode_cache, pipe.embed(np.array([[7]])))

    ids = ref.tokenizer.generation_ids("a red cube on a wooden table")
    gen = generation_batch([ids], ref.tokenizer.pad_id)
    with torch.no_grad():
        g_embeds = model.embed_tokens(torch.from_numpy(gen.ids))
        _, _, prompt_kv = model.llm_step(g_embeds, torch.from_numpy(gen.mask), torch.from_numpy(gen.positions),
                                         with_logits=False)
    new = 1 + config.num_gen_tokens
    step_mask = np.concatenate([gen.mask, np.ones((2, new), np.int64)], axis=1)
    step_pos = gen.next_positions(new)
    z = initial_noise(0, 1, config.latent_size)
    step_cache = llm.new_cache(2, len(ids) + new)
    llm.prefill(step_cache, [pipe.embed(ids), pipe.embed(ids[:1])], next_positions=[len(ids)] * 2)
    axes = {"batch": 1, "cfg_batch": 2}
    encoded, decoded = pipe.output_buffers("gen_encoder", axes), pipe.output_buffers("gen_decoder", axes)
    step_feeds = {"z": backend.upload(z), "t": backend.upload(np.full(1, 500.0, np.float32)),
                  "dt": backend.upload(np.array([0.0334], np.float32)), "cfg": backend.upload(np.array([2.0], np.float32))}

    @torch.no_grad()
    def torch_step():
        zt = torch.from_numpy(z)
        tokens, t_emb, skip = model.gen_encode(torch.cat([zt, zt]), torch.full((2,), 500.0))
        x = torch.cat([t_emb[:, None], tokens], 1)
        hidden, _, _ = model.llm_step(x, torch.from_numpy(step_mask), torch.from_numpy(step_pos), prompt_kv, False)
        v_c, v_u = model.gen_decode(hidden[:, 1:], skip, t_emb).chunk(2)
        return zt + 0.0334 * (2 * v_c - v_u)

    def ours_step():  # what the sampler does per step
        pipe.runner("gen_encoder").infer({"z": step_feeds["z"], "t": step_feeds["t"]}, encoded)
        hidden = llm.step(step_cache, encoded["step_embeds"])
        return pipe.runner("gen_decoder").infer({"hidden_states": hidden, "skip": encoded["skip"],
                                                 "t_emb": encoded["t_emb"], "z": step_feeds["z"],
                                                 "dt": step_feeds["dt"], "cfg_weight": step_feeds["cfg"]}, decoded)

    with torch.no_grad():
        pairs = {
            "siglip_encode": (lambda: model.encode_images(torch.from_numpy(pixels)),
                              lambda: pipe.runner("siglip").infer({"pixel_values": pixels}, ["image_embeds"])),
            "understanding_prefill": (
                lambda: model.llm_step(und_embeds, torch.from_numpy(und.mask), torch.from_numpy(und.positions)),
                lambda: llm.prefill(llm.new_cache(1, context), und_rows)),
            f"decode_token@{context}": (
                lambda: model.llm_step(model.embed_tokens(token), torch.from_numpy(dec_mask),
                                       torch.from_numpy(dec_pos), und_kv),
                ours_decode),
            "ode_step": (torch_step, ours_step),
            "vae_decode": (lambda: vae_decode(ref.vae, torch.from_numpy(z)),
                           lambda: pipe.runner("vae_decoder").infer({"latent": z}, ["image"])),
        }
        stages = interleaved(pairs, args.rounds)

    lm = model.language_model
    weight_bytes = 4 * (sum(p.numel() for p in lm.model.layers.parameters()) + lm.model.norm.weight.numel()
                        + lm.lm_head.weight.numel())  # read once per token; the embedding row is negligible
    bandwidth = copy_bandwidth()
    floor_ms = weight_bytes / bandwidth * 1e3
    decode_ms = stages[f"decode_token@{context}"]["ours_ms"]
    results = {
        "benchmark": "bench_vs_pytorch", "preset": {"llm_layers": args.layers, "vision_layers": 2, "vocab": 102400,
                                                    "hidden": 2048}, "rounds": args.rounds, "stages": stages,
        "bandwidth_floor": {"weight_bytes_per_token": weight_bytes, "copy_bandwidth_gb_s": bandwidth / 1e9,
                            "floor_ms": floor_ms, "ours_ms": decode_ms, "ratio_to_floor": decode_ms / floor_ms},
        "targets": {"decode_speedup": 2.0, "ode_step_speedup": 1.5, "decode_vs_floor": 1.2},
        "machine": {"cpu_count": threads, "cpu_model": _cpu_model(), "platform": platform.platform(),
                    "torch": torch.__version__,
                    "onnxruntime": __import__("onnxruntime").__version__},
    }
    print(f"decode per token {decode_ms:.2f} ms vs bandwidth floor {floor_ms:.2f} ms "
          f"({weight_bytes / 1e9:.2f} GB at {bandwidth / 1e9:.1f} GB/s): x{decode_ms / floor_ms:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_vs_pytorch.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, RESULTS / "bench_vs_pytorch.png")
    print(f"wrote {RESULTS / 'bench_vs_pytorch.json'} and bench_vs_pytorch.png")


def _cpu_model() -> str:
    from jflow.runtime.profile_stages import cpu_model
    return cpu_model()


if __name__ == "__main__":
    main()
