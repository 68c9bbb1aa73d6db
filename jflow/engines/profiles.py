"""TensorRT optimization profiles derived from the manifest's graph contracts and limits.

Each profile gives every dynamic axis a (min, opt, max); input shapes follow by substitution. The LLM
gets three, one per way it is called: prefill (a prompt on an empty cache), gen_step (577 tokens on the
prompt's KV, guidance rows) and decode (one token on a growing cache). Stored in the manifest as JSON and
read back by the runtime's TensorRT backend to pick the profile that fits a call.
"""

from __future__ import annotations

AxisRanges = dict[str, tuple[int, int, int]]


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def llm_profiles(limits: dict, gen_tokens: int) -> dict[str, AxisRanges]:
    batch, ctx = int(limits["max_batch"]), int(limits["max_context"])
    step = 1 + gen_tokens  # t_emb token + latent tokens
    prompt_opt = _clamp(640, 1, ctx)  # an image question: 578 image tokens + the template and question
    profiles = {
        "prefill": {"batch": (1, 1, 2 * batch), "seq": (1, prompt_opt, ctx), "past": (0, 0, 0)},
        "gen_step": {"batch": (2, 2, 2 * batch), "seq": (step, step, step), "past": (1, 32, ctx - step)},
        "decode": {"batch": (1, 1, batch), "seq": (1, 1, 1), "past": (1, _clamp(700, 1, ctx - 1), ctx - 1)},
    }
    for axes in profiles.values():  # total = past + seq, never above the context
        axes["total"] = tuple(min(p + s, ctx) for p, s in zip(axes["past"], axes["seq"]))
    return profiles


def graph_profiles(name: str, entry: dict, limits: dict, gen_tokens: int) -> dict[str, AxisRanges]:
    """Named profiles (axis ranges) for one graph of the manifest."""
    if name == "llm":
        return llm_profiles(limits, gen_tokens)
    axes = {axis: (r["min"], r["opt"], r["max"]) for axis, r in entry.get("ranges", {}).items()}
    if "cfg_batch" in axes and "batch" in axes:  # guidance rows are exactly twice the batch
        axes["cfg_batch"] = tuple(2 * v for v in axes["batch"])
    return {"default": axes}


def input_shapes(entry: dict, axes: AxisRanges) -> dict[str, list[list[int]]]:
    """{input: [min_shape, opt_shape, max_shape]} for one profile."""
    shapes = {}
    for tensor in entry["inputs"]:
        unknown = [d for d in tensor["shape"] if isinstance(d, str) and d not in axes]
        if unknown:
            raise ValueError(f"input {tensor['name']} has axes {unknown} with no range in the profile")
        shapes[tensor["name"]] = [[axes[d][i] if isinstance(d, str) else d for d in tensor["shape"]]
                                  for i in range(3)]
    return shapes


def profiles_for_manifest(manifest_data: dict, graphs: list[str]) -> dict[str, list[dict]]:
    """{graph: [{"name", "shapes"}]}: what is built and written to the manifest."""
    gen_tokens = int(manifest_data["generation"]["num_gen_tokens"])
    out = {}
    for name in graphs:
        entry = manifest_data["graphs"][name]
        out[name] = [{"name": pname, "shapes": input_shapes(entry, axes)}
                     for pname, axes in graph_profiles(name, entry, manifest_data["limits"], gen_tokens).items()]
    return out
