"""`jflow-export profile`: latency of every stage of both pipelines on the target, with warm-up.

Stages: SigLIP encode, understanding prefill, decode per token at a few context lengths, generation
prompt prefill, one ODE step split into gen_encoder / llm / gen_decoder, the whole generation, and the
VAE decode. Each is timed `warmup` times untimed, then `runs` times; p50 / p90 / min are reported.
"""

from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import numpy as np

from jflow.runtime.batching import generation_batch, understanding_batch
from jflow.runtime.ode import initial_noise, time_grid
from jflow.runtime.profiler import TracedGraph, Tracer, device_memory_used_mib, peak_rss_mib, summarize

PROMPT = "a red cube on a wooden table, studio light"
QUESTION = "What is in this picture?"


def _timed(fn: Callable[[], object], runs: int, warmup: int, tick: Callable[[], None]) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        tick()
    return summarize(times)


def decode_contexts(max_context: int) -> list[int]:
    """Cache lengths at which one decode step is timed: an image question, and longer answers."""
    return sorted({c for c in (640, 1024, 2048, 4096) if c < max_context} or {max_context - 1})


def stage_plan(pipe) -> list[str]:
    contexts = decode_contexts(int(pipe.limits["max_context"]))
    return (["siglip_encode", "understanding_prefill"] + [f"decode_token@{c}" for c in contexts]
            + ["generation_prefill", "ode_step.gen_encoder", "ode_step.llm", "ode_step.gen_decoder",
               "generation_total", "vae_decode"])


def profile(pipe, runs: int = 5, warmup: int = 2, steps: int = 30, tick: Callable[[], None] = lambda: None) -> dict:
    """Time every stage; returns the JSON-ready report."""
    llm, rng = pipe.graph("llm"), np.random.default_rng(0)
    kv_dtype = pipe.embed_dtype
    stages = {}
    picture = rng.integers(0, 256, (384, 384, 3), dtype=np.uint8)

    from jflow.runtime.image_io import preprocess_images
    pixels = preprocess_images([picture], pipe.processor)
    stages["siglip_encode"] = _timed(lambda: pipe.graph("siglip").run({"pixel_values": pixels}), runs, warmup, tick)

    und = understanding_batch([pipe.tokenizer.understanding_ids(QUESTION)], pipe.tokenizer.pad_id)
    und_feeds = {"inputs_embeds": pipe.embed(und.ids), "attention_mask": und.mask, "position_ids": und.positions,
                 **pipe.empty_past(1)}
    stages["understanding_prefill"] = _timed(lambda: llm.run(und_feeds, ["logits"]), runs, warmup, tick)

    for context in decode_contexts(int(pipe.limits["max_context"])):
        past = np.zeros((1, pipe.kv_heads, context, pipe.head_dim), kv_dtype)
        feeds = {"inputs_embeds": pipe.embed(np.array([[1]])), "attention_mask": np.ones((1, context + 1), np.int64),
                 "position_ids": np.array([[context]]), **{n: past for n in pipe.past_names}}
        stages[f"decode_token@{context}"] = _timed(lambda: llm.run(feeds, ["logits"]), runs, warmup, tick)

    gen = generation_batch([pipe.tokenizer.generation_ids(PROMPT)], pipe.tokenizer.pad_id)
    gen_feeds = {"inputs_embeds": pipe.embed(gen.ids), "attention_mask": gen.mask, "position_ids": gen.positions,
                 **pipe.empty_past(2)}
    stages["generation_prefill"] = _timed(lambda: llm.run(gen_feeds, pipe.present_names), runs, warmup, tick)

    prefill = llm.run(gen_feeds, pipe.present_names)
    past = dict(zip(pipe.past_names, (prefill[n] for n in pipe.present_names)))
    new = 1 + pipe.num_gen_tokens
    z = initial_noise(0, 1, pipe.latent_size)
    t_grid, dt = time_grid(steps)
    enc_feeds = {"z": z, "t": np.full(1, t_grid[steps // 2], np.float32)}
    enc = pipe.graph("gen_encoder").run(enc_feeds)
    step_feeds = {"inputs_embeds": enc["step_embeds"], "position_ids": gen.next_positions(new),
                  "attention_mask": np.concatenate([gen.mask, np.ones((2, new), np.int64)], axis=1), **past}
    hidden = llm.run(step_feeds, ["hidden_states"])["hidden_states"]
    dec_feeds = {"hidden_states": hidden, "skip": enc["skip"], "t_emb": enc["t_emb"], "z": z,
                 "dt": np.array([dt], np.float32), "cfg_weight": np.array([2.0], np.float32)}
    stages["ode_step.gen_encoder"] = _timed(lambda: pipe.graph("gen_encoder").run(enc_feeds), runs, warmup, tick)
    stages["ode_step.llm"] = _timed(lambda: llm.run(step_feeds, ["hidden_states"]), runs, warmup, tick)
    stages["ode_step.gen_decoder"] = _timed(lambda: pipe.graph("gen_decoder").run(dec_feeds, ["z_next"]),
                                            runs, warmup, tick)
    stages["generation_total"] = _timed(lambda: pipe.generate_latents(PROMPT, steps=steps, seed=0),
                                        runs, min(warmup, 1), tick)
    latent = z.astype(np.float32)
    stages["vae_decode"] = _timed(lambda: pipe.graph("vae_decoder").run({"latent": latent}), runs, warmup, tick)
    return {"device": _device(pipe), "backend": pipe.backend.name, "precision": pipe.manifest.precision,
            "steps": steps, "runs": runs, "warmup": warmup, "stages": stages,
            "peak_host_rss_mib": round(peak_rss_mib(), 1),
            "device_memory_used_mib": None if pipe.backend.device == "cpu" else device_memory_used_mib(),
            "versions": _versions()}


def trace_requests(pipe, steps: int) -> Tracer:
    """One generation and one answer, every graph call a span, as a Chrome trace."""
    tracer = Tracer()
    for name in list(pipe.manifest.graphs):
        graph = pipe.graph(name)
        pipe._graphs[name] = TracedGraph(getattr(graph, "inner", graph), name, tracer)
    try:
        with tracer.span("request.generate", prompt=PROMPT, steps=steps):
            latents = pipe.generate_latents(PROMPT, steps=steps, seed=0)
            pipe.decode_latents(latents)
        picture = np.random.default_rng(1).integers(0, 256, (384, 384, 3), dtype=np.uint8)
        with tracer.span("request.answer", question=QUESTION):
            pipe.answer_tokens(picture, QUESTION, max_new_tokens=min(16, int(pipe.limits["max_new_tokens"])))
    finally:
        for name, graph in list(pipe._graphs.items()):
            pipe._graphs[name] = getattr(graph, "inner", graph)
    return tracer


def _device(pipe) -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": __import__("os").cpu_count(), "backend_device": pipe.backend.device}
    providers = getattr(pipe.backend, "providers", None)
    if providers:
        info["providers"] = providers
    return info


def _versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("jflow", "onnxruntime", "numpy", "tensorrt"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
