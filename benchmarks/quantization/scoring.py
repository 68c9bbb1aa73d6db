"""One teacher-forced scoring for every build: ours through our runtime, ONNX Runtime GenAI's through its model.

Both sides cut the ids the same way: windows of WINDOW + 1 ids, the next window starting on the id the
last one ended with, each window starting from an empty KV cache. Every window gives the log-probabilities
of its ids 1.. given the ones before it in the window, so the rows line up with `ids[1:]` on both sides.
`score` then compares a build's rows with its own side's fp32 rows.

    from benchmarks.quantization.scoring import genai_logprobs, score, teacher_forced
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WINDOW = 960  # tokens per teacher-forced window (our artifacts hold 1024)


def window_starts(n_ids: int, window: int = WINDOW) -> range:
    """Where each window begins: the window holds ids[start:start + window + 1]."""
    return range(0, n_ids - 1, window)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Normalised log-probabilities in float64 (the scores are differences of near-equal numbers)."""
    x = np.asarray(logits, dtype=np.float64)
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def teacher_forced(pipe, ids: list[int], window: int = WINDOW) -> np.ndarray:
    """Our runtime (a jflow Pipeline): log-probabilities [T-1, V] of ids 1..T-1, one decode step each."""
    llm, out = pipe.llm, []
    for start in window_starts(len(ids), window):
        chunk = ids[start:start + window + 1]
        cache = llm.new_cache(1, len(chunk))
        logits = pipe.backend.download(llm.prefill(cache, [pipe.embed(chunk[:1])]))
        rows = [logits[0]]
        for token in chunk[1:-1]:
            rows.append(pipe.backend.download(llm.decode_one(cache, pipe.embed([[token]])))[0])
        out.append(log_softmax(np.stack(rows)))
    return np.concatenate(out)


def genai_logprobs(model_dir, ids: list[int], window: int = WINDOW, threads: int = 2,
                   token_steps: bool = False) -> np.ndarray:
    """A GenAI build's model.onnx, run directly by ONNX Runtime: log-probabilities [T-1, V] of ids 1..T-1.

    Default: one prefill per window with an empty past (the builder's logits output covers every prompt
    position). token_steps: one step a token with the KV cache instead, as our side decodes (slower; its
    MatMulNBits run their one-row kernels). Same windows as `teacher_forced`; the inputs are the ones
    genai_config.json names.
    """
    import onnxruntime as ort
    decoder = json.loads((Path(model_dir) / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
    names, outputs = decoder["inputs"], decoder["outputs"]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(Path(model_dir) / decoder["filename"]), options,
                                   providers=["CPUExecutionProvider"])
    graph_inputs = {i.name: i for i in session.get_inputs()}
    float_type = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    layers = range(decoder["num_hidden_layers"])
    past_names = [names[kind] % i for i in layers for kind in ("past_key_names", "past_value_names")]
    present_names = [outputs[kind] % i for i in layers for kind in ("present_key_names", "present_value_names")]
    empty_kv = {name: np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]),
                               dtype=float_type[graph_inputs[name].type]) for name in past_names}

    def run(tokens: list[int], past: dict, done: int) -> list[np.ndarray]:
        """tokens after `done` cached ones: logits [len(tokens), V] and the presents."""
        feed = {names["input_ids"]: np.asarray([tokens], dtype=np.int64),
                names["attention_mask"]: np.ones((1, done + len(tokens)), dtype=np.int64), **past}
        if "position_ids" in names:
            feed[names["position_ids"]] = np.arange(done, done + len(tokens), dtype=np.int64)[None]
        unasked = sorted(set(graph_inputs) - set(feed))
        if unasked:
            raise RuntimeError(f"{model_dir}: model.onnx wants inputs this scorer does not feed: {unasked}")
        result = session.run([outputs["logits"]] + (present_names if token_steps else []), feed)
        if result[0].shape[:2] != (1, len(tokens)):
            raise RuntimeError(f"{model_dir}: logits {result[0].shape} do not cover the {len(tokens)} positions")
        return result

    out = []
    for start in window_starts(len(ids), window):
        chunk = ids[start:start + window + 1][:-1]  # the last id is only a target
        if not token_steps:
            out.append(log_softmax(run(chunk, empty_kv, 0)[0][0]))
            continue
        past, rows = empty_kv, []
        for done, token in enumerate(chunk):
            logits, *presents = run([token], past, done)
            rows.append(logits[0, -1])
            past = dict(zip(past_names, presents))
        out.append(log_softmax(np.stack(rows)))
    return np.concatenate(out)


def score(ref_logp: np.ndarray, logp: np.ndarray, targets) -> dict:
    """A build's log-probabilities [T, V] against its side's fp32 ones, on the next-token targets [T].

    top1_agreement: how often both pick the same argmax; mean_kl: mean over positions of KL(ref || build);
    perplexity of the build on the targets, and perplexity_vs_fp32 = its ratio to the ref's, minus 1.
    """
    targets = np.asarray(targets)
    if not (ref_logp.shape == logp.shape and logp.shape[0] == len(targets)):
        raise ValueError(f"score: shapes differ: ref {ref_logp.shape}, build {logp.shape}, targets {targets.shape}")
    rows = np.arange(len(targets))
    perplexity = float(np.exp(-logp[rows, targets].mean()))
    ref_perplexity = float(np.exp(-ref_logp[rows, targets].mean()))
    return {"top1_agreement": float((logp.argmax(-1) == ref_logp.argmax(-1)).mean()),
            "mean_kl": float((np.exp(ref_logp) * (ref_logp - logp)).sum(-1).mean()),
            "perplexity": perplexity, "perplexity_vs_fp32": perplexity / ref_perplexity - 1}
