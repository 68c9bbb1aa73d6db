"""The ONNX Runtime GenAI peer: the same real LLM built by its model builder and decoded greedily.

Benchmark-only (the `bench` extra: onnxruntime-genai 0.18.0, which runs on our own onnxruntime 1.32.0).
The model comes from `real_checkpoint.hf_llm_folder()`, so both sides decode the same weights:

    <cache>/smollm2/genai-fp32/, <cache>/smollm2/genai-int4/   (builder output, built once)

    python benchmarks/genai_peer.py                  # build fp32 + int4, smoke-check both
    python benchmarks/genai_peer.py --precision fp32 --new-tokens 16

The smoke numbers are single runs on a shared 2-core machine: they show the code works, not speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_checkpoint import PARAGRAPH, cache_dir, hf_llm_folder  # noqa: E402

# int4 as the issue asks: MatMulNBits with blocks of 32 and int8 activations (accuracy level 4).
# 0.18 spells these without the deprecated `int4_` prefix.
BUILDER_OPTIONS = {"fp32": [], "int4": ["--extra_options", "block_size=32", "accuracy_level=4"]}
# genai stops at eos and wants an eos inside the vocabulary. To decode exactly new_tokens steps (as our
# timing loop does) with untouched argmax, eos becomes a token prose never produces: SmolLM2's
# <empty_output>, a notebook marker. Hitting it anyway raises rather than returning a short run.
STOP_ID = 16


def build_genai_model(precision: str = "fp32", cache=None, model: str = "smollm2") -> Path:
    """Run `onnxruntime_genai.models.builder` on the HF folder for the CPU EP; cached, atomic."""
    out = cache_dir(cache) / model / f"genai-{precision}"
    if (out / "genai_config.json").is_file():
        return out
    hf = hf_llm_folder(cache, model)
    tmp = Path(tempfile.mkdtemp(prefix=f".genai-{precision}.", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix=".genai-scratch.", dir=out.parent))
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(tmp),
           "-p", precision, "-e", "cpu", "-c", str(scratch)] + BUILDER_OPTIONS[precision]
    try:
        log = subprocess.run(cmd, capture_output=True, text=True)
        (tmp / "builder.log").write_text(log.stdout + log.stderr, encoding="utf-8")
        if log.returncode != 0:
            raise RuntimeError(f"genai builder failed ({' '.join(cmd)}):\n{(log.stdout + log.stderr)[-3000:]}")
        from jflow.fsutil import publish_dir
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def genai_decode(model_dir, prompt_ids: list[int], new_tokens: int, threads: int = 2,
                 stop_id: int = STOP_ID) -> dict:
    """Greedy decode of exactly `new_tokens` tokens after `prompt_ids`, each step timed.

    append_tokens runs the prompt and the first generate_next_token only picks from its logits, so
    prefill_ms covers both (the first token); each later generate_next_token is one decode step
    (run the previous token, pick the next) and gives one entry of per_token_ms.
    """
    import onnxruntime_genai as og
    config = og.Config(str(model_dir))
    config.overlay(json.dumps({"model": {
        "eos_token_id": stop_id,
        "decoder": {"session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, num_beams=1, repetition_penalty=1.0, min_length=0,
                              max_length=len(prompt_ids) + new_tokens)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    generator.generate_next_token()
    prefill_ms = (time.perf_counter() - start) * 1e3
    tokens = [int(generator.get_next_tokens()[0])]
    per_token_ms = []
    for _ in range(new_tokens - 1):
        if generator.is_done():
            raise RuntimeError(f"genai stopped after {len(tokens)} tokens: the model produced stop_id {stop_id}")
        start = time.perf_counter()
        generator.generate_next_token()
        per_token_ms.append((time.perf_counter() - start) * 1e3)
        tokens.append(int(generator.get_next_tokens()[0]))
    return {"tokens": tokens, "per_token_ms": per_token_ms, "prefill_ms": prefill_ms}


def hf_greedy(hf_folder, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """transformers' greedy tokens from the same ids, with no stop on eos (as genai_decode)."""
    import torch
    from transformers import LlamaForCausalLM
    lm = LlamaForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32).eval()
    tokens, past, step = [], None, torch.tensor([prompt_ids])
    with torch.no_grad():  # a plain argmax loop: generate() would stop at the checkpoint's eos
        for _ in range(new_tokens):
            out = lm(step, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tokens.append(int(out.logits[0, -1].argmax()))
            step = torch.tensor([[tokens[-1]]])
    return tokens


def prompt_of(length: int, cache=None, model: str = "smollm2") -> list[int]:
    """BOS + English text, exactly `length` ids (the paragraph repeated with a counter for long prompts)."""
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(hf_llm_folder(cache, model) / "tokenizer.json"))
    text = " ".join(f"Part {i}. {PARAGRAPH}" for i in range(1, 2 + length // 40))
    return [0] + tokenizer.encode(text, add_special_tokens=False).ids[:length - 1]  # 0 = <|endoftext|>


def smoke(precisions=("fp32", "int4"), lengths=(52, 900), new_tokens: int = 16, threads: int = 2,
          cache=None) -> list[dict]:
    hf = hf_llm_folder(cache)
    rows = []
    for length in lengths:
        ids = prompt_of(length, cache)
        reference = hf_greedy(hf, ids, new_tokens)
        for precision in precisions:
            start = time.perf_counter()
            model_dir = build_genai_model(precision, cache)
            built_s = time.perf_counter() - start
            result = genai_decode(model_dir, ids, new_tokens, threads)
            agree = next((i for i, (a, b) in enumerate(zip(result["tokens"], reference)) if a != b), new_tokens)
            rows.append({"precision": precision, "prompt": len(ids), "new_tokens": new_tokens,
                         "prefill_ms": round(result["prefill_ms"], 1),
                         "decode_ms_median": round(float(np.median(result["per_token_ms"])), 2),
                         "leading_tokens_equal_hf": agree, "build_or_cache_s": round(built_s, 1)})
            print(json.dumps(rows[-1]), flush=True)
            if precision == "fp32":
                assert agree >= min(8, new_tokens), (result["tokens"], reference)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None)
    parser.add_argument("--precision", choices=["fp32", "int4"], action="append")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    smoke(tuple(args.precision or ("fp32", "int4")), new_tokens=args.new_tokens, threads=args.threads,
          cache=args.cache)


if __name__ == "__main__":
    main()
