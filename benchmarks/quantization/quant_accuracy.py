"""Accuracy of the int8 and int4 artifacts against fp32, on real trained LLM weights, through our runtime.

    python -m benchmarks.quantization.quant_accuracy [--artifacts fp32=DIR int8=DIR int4=DIR] [--steps 30]

Defaults to the real-weights checkpoint's artifacts (fixtures/real_checkpoint.py; quantize them first with
`jflow-export quantize`). Reports, per quantized artifact:
- per graph: rel-L2 and cosine vs the fp32 reference on the artifact's held-out reference inputs (`verify`);
- LLM: teacher-forced top-1 agreement and mean KL(fp32 || quantized) over the tokens of
  benchmarks/data/english.txt (public-domain text, held out from calibration), perplexity on it, and
  greedy answers to a few text prompts side by side;
- generation: final-latent rel-L2 vs fp32 for the same seed and prompt (prompts not used in calibration).
Writes benchmarks/results/quant_accuracy.json. Targets (issue 11, not test assertions): int8 top-1 >= 97%,
perplexity within 3% of fp32; int4 top-1 >= 90%, perplexity within 10%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks import DATA, RESULTS
from benchmarks.quantization.scoring import score, teacher_forced  # teacher_forced: quant_methods imports it here

TEXT = DATA / "english.txt"
PROMPTS = ("The capital of France is", "Water boils at a temperature of", "The three primary colors are",
           "A good way to learn a new language is")
GEN_PROMPTS = ("a lighthouse on a rocky island under a full moon", "a bicycle leaning against a brick wall",
               "a bowl of cherries on a blue tablecloth", "a mountain lake reflecting pine trees")


def greedy(pipe, prompt: str, tokens: int = 24) -> str:
    ids = pipe.tokenizer.encode(prompt)
    llm = pipe.llm
    cache = llm.new_cache(1, len(ids) + tokens)
    logits, out = llm.prefill(cache, [pipe.embed(ids)]), []
    for _ in range(tokens):
        out.append(int(np.argmax(pipe.backend.download(logits)[0])))
        logits = llm.decode_one(cache, pipe.embed([[out[-1]]]))
    return pipe.tokenizer.decode(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", nargs="*", default=None, help="name=DIR pairs; the first is the fp32 one")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    from benchmarks.fixtures.real_checkpoint import cache_dir
    from jflow.runtime.pipeline import Pipeline
    from jflow.runtime.profile_stages import cpu_model
    from jflow.runtime.verify import verify_artifact
    base = cache_dir() / "smollm2"
    artifacts = dict(a.split("=", 1) for a in args.artifacts) if args.artifacts else {
        "fp32": str(base / "artifact-fp32-schema2"), "int8": str(base / "artifact-int8"),
        "int4": str(base / "artifact-int4")}
    names = list(artifacts)
    pipes = {n: Pipeline.load(a, check_files="none") for n, a in artifacts.items()}
    ids = pipes[names[0]].tokenizer.tokenizer.encode(TEXT.read_text(encoding="utf-8"), add_special_tokens=False).ids
    ids = [pipes[names[0]].tokenizer.bos_id] + ids
    targets = np.array(ids[1:])
    logp = {n: teacher_forced(p, ids) for n, p in pipes.items()}
    ref = logp[names[0]]
    results = {"machine": {"cpu_model": cpu_model()}, "text_tokens": len(targets),
               "weights": "SmolLM2-135M-Instruct LLM (trained; its GGUF was Q4_1, so int4 figures flatter us), "
                          "seeded random vision and generation parts", "artifacts": {}}
    latents = {n: p.generate_latents(list(GEN_PROMPTS), steps=args.steps, seed=7) for n, p in pipes.items()}
    for name, pipe in pipes.items():
        metrics = score(ref, logp[name], targets)  # the scoring peer_recipes uses for both sides
        row = {"perplexity": metrics["perplexity"],
               "greedy": {prompt: greedy(pipe, prompt) for prompt in PROMPTS}}
        if name != names[0]:
            for key in ("top1_agreement", "mean_kl", "perplexity_vs_fp32"):
                row[key] = metrics[key]
            row["latent_rel_l2"] = [float(np.linalg.norm(a - b) / np.linalg.norm(b))
                                    for a, b in zip(latents[name], latents[names[0]])]
            report = verify_artifact(artifacts[name])
            graphs = {}
            for r in report.rows:
                if r.rel_l2 is not None:
                    g = graphs.setdefault(r.graph, {"rel_l2": 0.0, "cosine": 1.0})
                    g["rel_l2"], g["cosine"] = max(g["rel_l2"], r.rel_l2), min(g["cosine"], r.cosine)
            row["graphs_vs_fp32_reference"] = graphs
            row["quantization"] = json.loads((Path(artifacts[name]) / "manifest.json").read_text())["quantization"]
        results["artifacts"][name] = row
        print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                     if k in ("perplexity", "top1_agreement", "mean_kl", "perplexity_vs_fp32")}, flush=True)
    path = RESULTS / "quant_accuracy.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
