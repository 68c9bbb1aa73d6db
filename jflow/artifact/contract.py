"""What a manifest must say for the runtime to run the artifact: one set of rules, checked on every load.

`verify`, `build` and the runtime all load through `Manifest.load`, which applies these rules, so an
artifact that `verify` passes is one the runtime accepts, and a field the runtime needs can never be
missing, mistyped or pointing outside the folder without every command saying so at once.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

from jflow.artifact.brief import listing, quoted
from jflow.artifact.engines import EngineIdentity
from jflow.artifact.precision import PRECISIONS, QUANTIZED
from jflow.artifact.sections import Bound, Engines, OrtGraphs, Quantization, TensorRTEngines, TensorRTPlan, Tolerances
from jflow.errors import JFlowError

REEXPORT = "re-export it with `jflow-export onnx` or copy the whole artifact folder again"
REBUILD = "rebuild its engines with `jflow-export build DIR` or copy the whole artifact folder again"
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
# A quantized artifact may run the ODE steps on another ONNX Runtime form over the same cache (an int8 one's
# static W8A8 form, fast at many rows, beside a block-wise llm_ort for the text): the same tensors.
OPTIONAL_GRAPH_IO["llm_ort_step"] = OPTIONAL_GRAPH_IO["llm_ort"]
GRAPH_NAMES = tuple(GRAPH_IO)
# The rank of every tensor the runtime binds, and the axes whose sizes it reads (they must be numbers).
RANKS = {"pixel_values": 4, "image_embeds": 3, "inputs_embeds": 3, "attention_mask": 2, "position_ids": 2,
         "hidden_states": 3, "logits": 2, "z": 4, "t": 1, "step_embeds": 3, "t_emb": 2, "skip": 4, "dt": 1,
         "cfg_weight": 1, "z_next": 4, "velocity": 4, "latent": 4, "image": 4, "seqlens_k": 1, "query_seqlens": 1,
         "total_sequence_length": 0}
SIZED_AXES = {"inputs_embeds": (2,), "hidden_states": (2,), "logits": (1,), "kv": (1, 3)}

# Top-level keys and the JSON type each must hold. Export also writes special_tokens (the control ids, for
# people and older readers): nothing reads them (the hashed tokenizer files are the truth), so nothing checks
# them. The optional sections (engines, tolerances, quantization) are typed below.
REQUIRED_KEYS: dict[str, type] = {
    "schema_version": int, "jflow_version": str, "precision": str, "precision_policy": list, "model": dict,
    "limits": dict, "graphs": dict, "reference": dict, "tools": dict, "files": dict, "embeddings": dict,
    "generation": dict,
}
LIMITS = ("max_batch", "max_context", "max_new_tokens")
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
        raise ArtifactError(f"{source}: {where}: {'; '.join(bad)}, but its values must be whole numbers from {low} "
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
    forms_of(data["graphs"], source)
    read_tolerances(data, source)
    read_engines(data, source)
    read_quantization(data, source)
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
    if name in ("llm", "llm_ort", "llm_ort_step") and (not past or past != present):
        raise ArtifactError(f"{where}: the KV cache needs one present_* output per past_* input, got "
                            f"{len(past)} past and {len(present)} present; {REEXPORT}")


def disabled_optimizers(entry: dict) -> list[str]:
    """The ONNX Runtime optimizers a graph entry turns off (quantized graphs: CSE would merge their Q/DQ pairs)."""
    if "onnxruntime" not in entry:
        return []
    return list(entry["onnxruntime"].get("disabled_optimizers", []))


def forms_of(graphs: dict, source: str = "manifest.json") -> dict[str, str]:
    """{form: the graph it is a form of}: llm_ort is ONNX Runtime's form of llm (same weights, fused attention)."""
    forms = {name: g["form_of"] for name, g in graphs.items() if "form_of" in g}
    for form, base in forms.items():
        if not isinstance(base, str) or base == form or base not in graphs or base in forms:
            raise ArtifactError(f"{source}: graphs[{quoted(form)}].form_of is {quoted(base)}, but it must name "
                                f"another graph of the artifact that is no form itself; {REEXPORT}")
    return forms


def reference_files(ref: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(graph -> npz, end-to-end case -> npz) of the manifest's reference section; either may be absent."""
    return ref.get("graphs", {}), ref.get("end_to_end", {})


def _check_reference(ref: dict, source: str) -> None:
    graphs, e2e = reference_files(ref)
    if not isinstance(graphs, dict) or not isinstance(e2e, dict):
        raise ArtifactError(f"{source}: reference.graphs and reference.end_to_end must be objects; {REEXPORT}")
    for key, rel in {**graphs, **e2e}.items():
        safe_rel(rel, f"reference[{quoted(key)}]", source)


def used_paths(data: dict) -> list[str]:
    """Every file the runtime or `verify` opens, as named in the manifest."""
    ref = data["reference"]
    paths = [g["file"] for g in data["graphs"].values()]
    paths += [data["embeddings"][k] for k in EMBEDDINGS] + list(HOST_FILES)
    graphs, e2e = reference_files(ref)
    paths += list(graphs.values()) + list(e2e.values())
    return list(dict.fromkeys(paths))


# ---- the optional sections, as types (jflow.artifact.sections) ---------------------------------------------
def _object(value: Any, where: str, source: str, fix: str = REEXPORT) -> dict:
    if not isinstance(value, dict):
        raise ArtifactError(f"{source}: {where} must be an object, got {quoted(value)}; {fix}")
    return value


def _text(value: Any, where: str, source: str, fix: str = REEXPORT) -> str:
    if not isinstance(value, str):
        raise ArtifactError(f"{source}: {where} must be a string, got {quoted(value)}; {fix}")
    return value


def _bound(value: Any, where: str, source: str) -> Bound:
    rel_l2, cosine = (value.get(k) if isinstance(value, dict) else None for k in ("rel_l2", "cosine"))
    if not (_number(rel_l2) and rel_l2 >= 0 and _number(cosine) and -1 <= cosine <= 1):
        raise ArtifactError(f"{source}: {where} must hold rel_l2 >= 0 and cosine in [-1, 1], got {quoted(value)}; "
                            f"{REEXPORT}")
    return Bound(float(rel_l2), float(cosine))


def _number(value: Any) -> bool:
    """A finite JSON number (an int as large as 10**400 is no bound, and would not even convert to float)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SIZE


def read_tolerances(data: dict, source: str) -> Tolerances:
    """The tolerances section: a bound per precision, and measured bounds per graph under "overrides"."""
    if "tolerances" not in data:
        return Tolerances()
    stated = _object(data["tolerances"], "tolerances", source)
    unknown = [k for k in stated if k not in PRECISIONS and k != "overrides"]
    if unknown:
        raise ArtifactError(f"{source}: tolerances has unknown key(s) {listing(map(quoted, unknown))}; it holds a bound "
                            f"per precision ({', '.join(PRECISIONS)}) and overrides; {REEXPORT}")
    overrides = _object(stated.get("overrides", {}), "tolerances.overrides", source)
    return Tolerances({p: _bound(stated[p], f"tolerances.{p}", source) for p in PRECISIONS if p in stated},
                      {g: _bound(b, f"tolerances.overrides[{quoted(g)}]", source) for g, b in overrides.items()})


def read_engines(data: dict, source: str) -> Engines:
    """The engines section `jflow-export build` writes: ORT-optimized graphs and TensorRT plans."""
    if "engines" not in data:
        return Engines()
    section = _object(data["engines"], "engines", source, REBUILD)
    unknown = [k for k in section if k not in ("onnxruntime", "tensorrt")]
    if unknown:
        raise ArtifactError(f"{source}: engines has unknown target(s) {listing(map(quoted, unknown))}; the targets "
                            f"are onnxruntime and tensorrt; {REBUILD}")
    ort = trt = None
    if "onnxruntime" in section:
        where = "engines.onnxruntime"
        s = _object(section["onnxruntime"], where, source, REBUILD)
        files = {name: safe_rel(rel, f"{where}.graphs[{quoted(name)}]", source)
                 for name, rel in _built_graphs(s, where, data, source).items()}
        ort = OrtGraphs(_text(s.get("onnxruntime_version", ""), f"{where}.onnxruntime_version", source, REBUILD),
                        _text(s.get("level", ""), f"{where}.level", source, REBUILD), files)
    if "tensorrt" in section:
        where = "engines.tensorrt"
        s = _object(section["tensorrt"], where, source, REBUILD)
        identity = EngineIdentity(*(_text(s.get(k), f"{where}.{k}", source, REBUILD)
                                    for k in ("tensorrt_version", "gpu_name", "compute_capability")))
        plans = {name: _plan(entry, f"{where}.graphs[{quoted(name)}]", source)
                 for name, entry in _built_graphs(s, where, data, source).items()}
        trt = TensorRTEngines(identity, plans)
    return Engines(ort, trt)


def _built_graphs(section: dict, where: str, data: dict, source: str) -> dict:
    graphs = _object(section.get("graphs"), f"{where}.graphs", source, REBUILD)
    unknown = [n for n in graphs if n not in data["graphs"]]
    if unknown:
        raise ArtifactError(f"{source}: {where}.graphs names {listing(map(quoted, unknown))}, which the artifact does "
                            f"not have; {REBUILD}")
    return graphs


def _plan(entry: Any, where: str, source: str) -> TensorRTPlan:
    entry = _object(entry, where, source, REBUILD)
    profiles = entry.get("profiles")
    good = isinstance(profiles, list) and profiles and all(
        isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("shapes"), dict)
        and all(isinstance(s, list) and len(s) == 3 and all(isinstance(d, list) and all(_whole(x, 0) for x in d)
                                                             for d in s) for s in p["shapes"].values())
        for p in profiles)
    if not good:
        raise ArtifactError(f"{source}: {where}.profiles must be a list of {{name, shapes: {{input: [min, opt, max] "
                            f"shapes}}}}, got {quoted(profiles)}; {REBUILD}")
    return TensorRTPlan(safe_rel(entry.get("plan"), f"{where}.plan", source), _text(entry.get("key"), f"{where}.key",
                                                                                    source, REBUILD), profiles)


def read_quantization(data: dict, source: str) -> Quantization | None:
    """The quantization section `jflow-export quantize` writes (None for an exported artifact)."""
    if "quantization" not in data:
        return None
    q = _object(data["quantization"], "quantization", source)
    if data["precision"] not in QUANTIZED:
        raise ArtifactError(f"{source}: a {data['precision']} artifact states a quantization; only "
                            f"{' and '.join(QUANTIZED)} artifacts are quantized; {REEXPORT}")
    origin = _object(q.get("from"), "quantization.from", source)
    graphs = _object(q.get("graphs"), "quantization.graphs", source)
    for name, precision in graphs.items():
        entry = data["graphs"].get(name)
        stated = entry.get("precision", data["precision"]) if isinstance(entry, dict) else None
        if precision not in QUANTIZED or stated != precision:
            raise ArtifactError(f"{source}: quantization.graphs[{quoted(name)}] is {quoted(precision)}, but the graph "
                                f"{'is ' + quoted(stated) if stated else 'is not in the artifact'}; {REEXPORT}")
    measured = _object(q.get("measured", {}), "quantization.measured", source)
    return Quantization(_text(origin.get("precision"), "quantization.from.precision", source),
                        _text(origin.get("manifest_sha256"), "quantization.from.manifest_sha256", source),
                        dict(graphs),
                        {g: _bound(b, f"quantization.measured[{quoted(g)}]", source) for g, b in measured.items()},
                        {k: v for k, v in q.items() if k not in ("from", "graphs", "measured")})
