"""What a manifest must say for the runtime to run the artifact: one set of rules, checked on every load.

`verify`, `build` and the runtime all load through `Manifest.load`, which applies these rules, so an
artifact that `verify` passes is one the runtime accepts, and a field the runtime needs can never be
missing, mistyped or pointing outside the folder without every command saying so at once.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from jflow.artifact.brief import listing, quoted
from jflow.artifact.precision import PRECISIONS
from jflow.errors import JFlowError

REEXPORT = "re-export it with `jflow-export onnx` or copy the whole artifact folder again"
DTYPES = ("float32", "float16", "int64", "int32")

# The graphs the runtime opens, with the tensor names it binds (more inputs/outputs are allowed).
GRAPH_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "siglip": (("pixel_values",), ("image_embeds",)),
    "llm": (("inputs_embeds", "attention_mask", "position_ids"), ("hidden_states", "logits")),
    "gen_encoder": (("z", "t"), ("step_embeds", "t_emb", "skip")),
    "gen_decoder": (("hidden_states", "skip", "t_emb", "z", "dt", "cfg_weight"), ("z_next", "velocity")),
    "vae_decoder": (("latent",), ("image",)),
}
# Other forms of a graph: the ONNX Runtime form of the llm (fused attention over an in-place cache).
OPTIONAL_GRAPH_IO = {
    "llm_ort": (("inputs_embeds", "position_ids", "seqlens_k", "query_seqlens", "total_sequence_length"),
                ("hidden_states", "logits")),
}
GRAPH_NAMES = tuple(GRAPH_IO)
# The rank of every tensor the runtime binds, and the axes whose sizes it reads (they must be numbers).
RANKS = {"pixel_values": 4, "image_embeds": 3, "inputs_embeds": 3, "attention_mask": 2, "position_ids": 2,
         "hidden_states": 3, "logits": 2, "z": 4, "t": 1, "step_embeds": 3, "t_emb": 2, "skip": 4, "dt": 1,
         "cfg_weight": 1, "z_next": 4, "velocity": 4, "latent": 4, "image": 4, "seqlens_k": 1, "query_seqlens": 1,
         "total_sequence_length": 0}
SIZED_AXES = {"inputs_embeds": (2,), "hidden_states": (2,), "logits": (1,), "kv": (1, 3)}

# Top-level keys and the JSON type each must hold.
REQUIRED_KEYS: dict[str, type] = {
    "schema_version": int, "jflow_version": str, "precision": str, "precision_policy": list, "model": dict,
    "limits": dict, "graphs": dict, "reference": dict, "tools": dict, "files": dict, "embeddings": dict,
    "special_tokens": dict, "generation": dict,
}
LIMITS = ("max_batch", "max_context", "max_new_tokens")
SPECIAL_TOKENS = ("bos", "eos", "pad", "image", "image_start", "image_end", "image_gen")
EMBEDDINGS = ("embed_tokens", "beg_of_und_embed")
HOST_FILES = ("tokenizer.json",)  # read by the runtime besides the graphs


class ArtifactError(JFlowError):
    """An artifact folder is missing, incomplete, altered, or written by an incompatible jflow."""


def safe_rel(rel: Any, what: str, source: str = "manifest.json") -> str:
    """A relative posix path that stays inside the artifact, or ArtifactError."""
    if not isinstance(rel, str) or not rel:
        raise ArtifactError(f"{source}: {what} must be a non-empty relative path, got {quoted(rel)}; {REEXPORT}")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise ArtifactError(f"{source}: {what} {quoted(rel)} must be a relative path inside the artifact "
                            f"(no absolute paths, no '..'); {REEXPORT}")
    return rel


MAX_SIZE = 2**31 - 1  # no axis, limit or token id of ours comes near it; a larger one is a broken manifest


def _whole(value: Any, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_SIZE


def _check_whole(section: dict, where: str, keys: tuple[str, ...], low: int, source: str) -> None:
    """ArtifactError naming each of `keys` that is not a whole number in low..MAX_SIZE, with its value."""
    bad = [f"{k} is missing" if k not in section else f"{k} is {quoted(section[k])}"
           for k in keys if not _whole(section.get(k), low)]
    if bad:
        what = "token ids" if where == "special_tokens" else "values"
        raise ArtifactError(f"{source}: {where}: {'; '.join(bad)}, but its {what} must be whole numbers from {low} "
                            f"to {MAX_SIZE}; {REEXPORT}")


def check_contract(data: dict, source: str) -> None:
    """ArtifactError naming the first rule the manifest breaks (the schema version is checked before)."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ArtifactError(f"{source} is missing required key(s): {', '.join(missing)}; {REEXPORT}")
    wrong = [f"{k} (expected {t.__name__}, got {type(data[k]).__name__})" for k, t in REQUIRED_KEYS.items()
             if not isinstance(data[k], t) or (t is int and isinstance(data[k], bool))]
    if wrong:
        raise ArtifactError(f"{source}: wrong type for {', '.join(wrong)}; {REEXPORT}")
    if data["precision"] not in PRECISIONS:
        raise ArtifactError(f"{source}: precision {quoted(data['precision'])} is not one of {', '.join(PRECISIONS)}; "
                            f"{REEXPORT}")
    _check_whole(data["limits"], "limits", LIMITS, 1, source)
    generation = data["generation"]
    _check_whole(generation, "generation", ("latent_size", "num_gen_tokens"), 1, source)
    if data["limits"]["max_context"] <= generation["num_gen_tokens"] + 1:
        raise ArtifactError(f"{source}: limits.max_context {data['limits']['max_context']} leaves no room for a "
                            f"prompt before the {generation['num_gen_tokens'] + 1} generation tokens; {REEXPORT}")
    _check_whole(data["special_tokens"], "special_tokens", SPECIAL_TOKENS, 0, source)
    absent = [g for g in GRAPH_NAMES if g not in data["graphs"]]
    if absent:
        raise ArtifactError(f"{source}: graphs lacks {', '.join(absent)}; the runtime needs all of "
                            f"{', '.join(GRAPH_NAMES)}; {REEXPORT}")
    for name, entry in data["graphs"].items():
        _check_graph(name, entry, source)
    for key in EMBEDDINGS:
        safe_rel(data["embeddings"].get(key), f"embeddings.{key}", source)
    for rel, digest in data["files"].items():
        safe_rel(rel, "files entry", source)
        if not (isinstance(digest, str) and len(digest) == 64):
            raise ArtifactError(f"{source}: files[{quoted(rel)}] is not a sha256 hex digest; {REEXPORT}")
    _check_reference(data["reference"], source)
    # Everything the runtime opens must be covered by a hash, or the sha256 check proves nothing.
    unhashed = [p for p in used_paths(data) if p not in data["files"]]
    if unhashed:
        raise ArtifactError(f"{source}: {len(unhashed)} file(s) are used but have no sha256 under \"files\": "
                            f"{listing(unhashed)}; {REEXPORT}")


def _check_graph(name: str, g: Any, source: str) -> None:
    where = f"{source}: graphs[{quoted(name)}]"
    if not isinstance(g, dict):
        raise ArtifactError(f"{where} must be an object; {REEXPORT}")
    missing = [k for k in ("file", "inputs", "outputs") if k not in g]
    if missing:
        raise ArtifactError(f"{where} is missing {', '.join(missing)}; {REEXPORT}")
    safe_rel(g["file"], f"graphs[{quoted(name)}].file", source)
    if g.get("precision", "fp32") not in PRECISIONS:
        raise ArtifactError(f"{where}.precision {quoted(g.get('precision'))} is not one of {', '.join(PRECISIONS)}; "
                            f"{REEXPORT}")
    for side in ("inputs", "outputs"):
        ios = g[side]
        if not isinstance(ios, list) or not ios:
            raise ArtifactError(f"{where}.{side} must be a non-empty list; {REEXPORT}")
        for io in ios:
            if not (isinstance(io, dict) and isinstance(io.get("name"), str) and io.get("dtype") in DTYPES
                    and isinstance(io.get("shape"), list)
                    and all(isinstance(d, str) or _whole(d) for d in io["shape"])):
                raise ArtifactError(f"{where}.{side} has a bad entry {quoted(io)} (needs name, dtype in {DTYPES}, "
                                    f"shape of axis names and sizes); {REEXPORT}")
    required = GRAPH_IO.get(name) or OPTIONAL_GRAPH_IO.get(name)
    if required:
        for side, names in zip(("inputs", "outputs"), required):
            have = {io["name"] for io in g[side]}
            lacking = [n for n in names if n not in have]
            if lacking:
                raise ArtifactError(f"{where}.{side} lacks {', '.join(lacking)}, which the runtime binds; {REEXPORT}")
        _check_shapes(name, g, where)
    if not isinstance(g.get("ranges", {}), dict):
        raise ArtifactError(f"{where}.ranges must be an object; {REEXPORT}")
    options = g.get("onnxruntime", {})
    disabled = options.get("disabled_optimizers", []) if isinstance(options, dict) else None
    if not (isinstance(disabled, list) and all(isinstance(o, str) for o in disabled)):
        raise ArtifactError(f"{where}.onnxruntime must be an object whose disabled_optimizers is a list of names; "
                            f"{REEXPORT}")


def _check_shapes(name: str, g: dict, where: str) -> None:
    """Ranks and the sizes the runtime reads; for the LLM, one present_* per past_* of the same shape."""
    tensors = {io["name"]: io for io in g["inputs"] + g["outputs"]}
    kv = [n for n in tensors if n.startswith(("past_", "present_"))]
    for tname, io in tensors.items():
        key = "kv" if tname in kv else tname
        rank = 4 if key == "kv" else RANKS.get(tname)
        shape = io["shape"]
        if rank is not None and len(shape) != rank:
            raise ArtifactError(f"{where}: {tname} has shape {shape}, but it has {rank} axes; {REEXPORT}")
        unsized = [i for i in SIZED_AXES.get(key, ()) if not _whole(shape[i])]
        if unsized:
            raise ArtifactError(f"{where}: {tname} needs fixed sizes on axes {unsized}, got {shape}; {REEXPORT}")
    past = sorted(n[len("past_"):] for n in kv if n.startswith("past_"))
    present = sorted(n[len("present_"):] for n in kv if n.startswith("present_"))
    if name in ("llm", "llm_ort") and (not past or past != present):
        raise ArtifactError(f"{where}: the KV cache needs one present_* output per past_* input, got "
                            f"{len(past)} past and {len(present)} present; {REEXPORT}")


def _check_reference(ref: dict, source: str) -> None:
    graphs, e2e = ref.get("graphs", {}), ref.get("end_to_end", {})
    if not isinstance(graphs, dict) or not isinstance(e2e, dict):
        raise ArtifactError(f"{source}: reference.graphs and reference.end_to_end must be objects; {REEXPORT}")
    for key, rel in {**graphs, **e2e}.items():
        safe_rel(rel, f"reference[{quoted(key)}]", source)


def used_paths(data: dict) -> list[str]:
    """Every file the runtime or `verify` opens, as named in the manifest."""
    ref = data["reference"]
    paths = [g["file"] for g in data["graphs"].values()]
    paths += [data["embeddings"][k] for k in EMBEDDINGS] + list(HOST_FILES)
    paths += list(ref.get("graphs", {}).values()) + list(ref.get("end_to_end", {}).values())
    return list(dict.fromkeys(paths))
