"""`jflow-export profile`: latency of every stage of both pipelines on the target, with warm-up.

Stages: SigLIP encode, understanding prefill, decode per token at a few context lengths, generation
prompt prefill, one ODE step split into gen_encoder / llm / gen_decoder, the whole generation, and the
VAE decode. Each is timed `warmup` times untimed, then `runs` times; p50 / p90 / min are reported.
"""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import numpy as np

from jflow.runtime.ode import initial_noise
from jflow.runtime.ode_loop import OdeLoop
from jflow.runtime.profiler import Tracer, device_memory_used_mib, peak_rss_mib, summarize

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
    """Time every stage through the runners the pipeline itself uses; returns the JSON-ready report."""
    llm, backend, stages = pipe.llm, pipe.backend, {}
    picture = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)

    from jflow.runtime.image_io import preprocess_images
    pixels = backend.upload(preprocess_images([picture], pipe.processor))
    siglip, embeds_out = pipe.runner("siglip"), pipe.output_buffers("siglip", {"batch": 1})
    stages["siglip_encode"] = _timed(lambda: siglip.infer({"pixel_values": pixels}, embeds_out), runs, warmup, tick)

    rows, _ = pipe.understanding_rows([picture], [QUESTION])
    stages["understanding_prefill"] = _timed(lambda: llm.prefill(llm.new_cache(1, len(rows[0])), rows),
                                             runs, warmup, tick)

    token = pipe.embed(np.array([[pipe.tokenizer.bos_id]]))
    for context in decode_contexts(int(pipe.limits["max_context"])):
        # The cost of a decode step depends on how many tokens it attends to, not on their values: a cache
        # of zeros that claims `context` tokens times it without prefilling them.
        cache = llm.new_cache(1, context + runs + warmup + 1)
        cache.claim(context)
        stages[f"decode_token@{context}"] = _timed(lambda: llm.decode_one(cache, token), runs, warmup, tick)

    # One prompt through the pipeline's own ODE loop; each part of a step timed at the middle step.
    loop = OdeLoop(pipe.session, [pipe.tokenizer.generation_ids(PROMPT)], initial_noise(0, 1, pipe.latent_size),
                   steps, cfg_weight=2.0)
    stages["generation_prefill"] = _timed(loop.prefill, runs, warmup, tick)
    loop.encode(steps // 2)
    loop.attend()
    stages["ode_step.gen_encoder"] = _timed(lambda: loop.encode(steps // 2), runs, warmup, tick)
    stages["ode_step.llm"] = _timed(loop.attend, runs, warmup, tick)
    stages["ode_step.gen_decoder"] = _timed(loop.update, runs, warmup, tick)
    stages["generation_total"] = _timed(lambda: pipe.generate_latents(PROMPT, steps=steps, seed=0),
                                        runs, min(warmup, 1), tick)
    vae, image_out = pipe.runner("vae_decoder"), pipe.output_buffers("vae_decoder", {"batch": 1})
    stages["vae_decode"] = _timed(lambda: vae.infer({"latent": loop.z}, image_out), runs, warmup, tick)
    return {"device": _device(pipe), "backend": pipe.backend.name, "llm_form": llm.graph_name,
            "threads": getattr(backend, "threads", None), "spin": getattr(backend, "spin", None),
            "precision": pipe.manifest.precision, "steps": steps, "runs": runs, "warmup": warmup, "stages": stages,
            "peak_host_rss_mib": round(peak_rss_mib(), 1),
            "device_memory_used_mib": None if pipe.backend.device == "cpu" else device_memory_used_mib(),
            "versions": _versions()}


def trace_requests(pipe, steps: int) -> Tracer:
    """One generation and one answer, every graph call a span, as a Chrome trace."""
    with pipe.tracing(Tracer()) as tracer:
        with tracer.span("request.generate", prompt=PROMPT, steps=steps):
            latents = pipe.generate_latents(PROMPT, steps=steps, seed=0)
            pipe.decode_latents(latents)
        picture = np.random.default_rng(1).integers(0, 256, (384, 384, 3), dtype=np.uint8)
        with tracer.span("request.answer", question=QUESTION):
            pipe.answer_tokens(picture, QUESTION, max_new_tokens=min(16, int(pipe.limits["max_new_tokens"])))
    return tracer


def cpu_model() -> str:
    """The CPU's model name and its widest SIMD (timings differ a lot between our machines)."""
    try:
        info = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx512_vnni", "avx512f", "avx_vnni", "avx2") if f in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'})"


def _device(pipe) -> dict:
    info = {"machine": platform.machine(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "backend_device": pipe.backend.device}
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
