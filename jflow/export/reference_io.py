"""Reference inputs and outputs shipped in the artifact: per graph, and two end-to-end cases.

`jflow-export verify` (and the device) replays them. The inputs are what a real request feeds each
graph, taken from the reference's own end-to-end runs: the llm, gen_encoder and gen_decoder cases are
the last ODE step of the generation case (real prompt embeddings and their KV, real latents and
times), the VAE decodes that case's final latent, SigLIP sees the understanding case's picture. A
trained model never sees unit-variance noise, and tolerances judged on noise say little about it.
Graph references come from the same wrapper modules that were exported, run in PyTorch; the VAE runs
in float64, because torch's own fp32 convolutions drift ~3e-5 from the exact result while ORT stays ~2e-6.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from jflow.modeling.understanding import answer_tokens, understanding_embeddings
from jflow.runtime.batching import understanding_batch
from jflow.runtime.image_io import preprocess_images
from jflow.runtime.ode import initial_noise

SEED = 1234
E2E_PROMPTS = ("a red cube on a wooden table", "a cat")  # two lengths: padding and guidance rows are exercised
E2E_QUESTION = "What is in this picture?"


def graph_reference(truth: torch.nn.Module, spec, example: dict, path: Path, float64: bool = False,
                    keep: set[str] | None = None) -> None:
    """Run the fp32 (or fp64) wrapper `truth` on `example` and write in.<name> / out.<name> to `path`.

    Inputs are stored in the graph's contract dtypes and the truth runs on exactly those values (an fp16
    input is widened, not re-drawn), so verify measures the graph's own error. Float outputs are stored
    as float32 whatever the graph's output dtype: they are the accurate answer.
    """
    wide = torch.float64 if float64 else torch.float32
    module = copy.deepcopy(truth).double() if float64 else truth
    args = [example[n].to(wide) if example[n].is_floating_point() else example[n] for n in spec.input_names]
    with torch.no_grad():
        outputs = module(*args)
    outputs = (outputs,) if isinstance(outputs, torch.Tensor) else outputs
    arrays = {f"in.{n}": example[n].numpy() for n in spec.input_names}
    for out_spec, tensor in zip(spec.outputs, outputs):
        if keep is not None and out_spec.name not in keep:
            continue
        array = tensor.detach().numpy()
        arrays[f"out.{out_spec.name}"] = array.astype(np.float32) if array.dtype.kind == "f" else array
    np.savez(path, **arrays)


def test_picture(size: int = 320) -> np.ndarray:
    """A deterministic non-square picture (gradients and a square) for the understanding case."""
    y, x = np.mgrid[0:size * 3 // 4, 0:size]
    image = np.stack([x * 255 // size, y * 255 // (size * 3 // 4), (x + y) % 256], axis=-1).astype(np.uint8)
    image[40:120, 60:140] = (200, 30, 30)
    return image


def generation_case(ref, path: Path, steps: int, cfg_weight: float = 2.0) -> dict:
    """Generate E2E_PROMPTS with the reference; save the case and return the last step's tensors."""
    noise = initial_noise(SEED, len(E2E_PROMPTS), ref.model.config.latent_size)
    captured = {}
    result = ref.generate(list(E2E_PROMPTS), steps=steps, cfg_weight=cfg_weight, noise=noise,
                          on_step=captured.update)
    np.savez(path, prompts=np.array(E2E_PROMPTS), steps=np.array(steps), cfg_weight=np.array(cfg_weight, np.float32),
             noise=noise, latents=result.latents, image=result.images)
    return {**captured, "latents": torch.from_numpy(result.latents)}


@torch.no_grad()
def understanding_case(ref, path: Path, max_new_tokens: int) -> torch.Tensor:
    """Answer E2E_QUESTION about the test picture greedily; save the tokens and, for teacher-forced checks,
    the logits the reference gives before each of them. Returns the picture as SigLIP input."""
    picture = test_picture()
    tokens = answer_tokens(ref, picture, E2E_QUESTION, max_new_tokens=max_new_tokens)[0]
    pixels = torch.from_numpy(preprocess_images([picture], ref.processor)).to(ref.dtype)
    prompt = ref.tokenizer.understanding_ids(E2E_QUESTION)
    batch = understanding_batch([prompt + tokens[:-1]], ref.tokenizer.pad_id)
    embeds = understanding_embeddings(ref, pixels, torch.from_numpy(batch.ids))
    out = ref.model.language_model.model(inputs_embeds=embeds, attention_mask=torch.from_numpy(batch.mask),
                                         position_ids=torch.from_numpy(batch.positions))
    logits = ref.model.language_model.lm_head(out.last_hidden_state[0, len(prompt) - 1:])
    np.savez(path, image=picture, question=np.array(E2E_QUESTION), max_new_tokens=np.array(max_new_tokens),
             prompt_ids=np.array(prompt, np.int64), tokens=np.array(tokens, np.int64),
             logits=logits.float().numpy(), text=np.array(ref.tokenizer.decode(tokens)))
    return pixels


def kept_outputs(name: str, layers: int) -> set[str] | None:
    """The outputs a graph's reference stores. The llm's present KV of a real step is hundreds of MB at full
    size; its first and last layers (with the hidden states and logits) show the same errors."""
    if name != "llm":
        return None
    return {"hidden_states", "logits"} | {f"present_{kind}_{i}" for i in {0, layers - 1} for kind in ("key", "value")}


def real_examples(step: dict, pixels: torch.Tensor, layers: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per-graph inputs from real runs: the captured ODE step, its final latent and the picture."""
    past = {}
    for i, (key, value) in enumerate(step["prompt_kv"][:layers]):
        past[f"past_key_{i}"], past[f"past_value_{i}"] = key, value
    z, n = step["z"].float(), step["z"].shape[0]
    return {
        "siglip": {"pixel_values": pixels},
        "llm": {"inputs_embeds": step["step_embeds"], "attention_mask": step["step_mask"],
                "position_ids": step["step_pos"], **past},
        "gen_encoder": {"z": z, "t": torch.full((n,), step["t"])},
        "gen_decoder": {"hidden_states": step["hidden"], "skip": step["skip"], "t_emb": step["t_emb"], "z": z,
                        "dt": torch.tensor([step["dt"]]), "cfg_weight": torch.tensor([float(step["cfg_weight"])])},
        # One VAE image suffices (its float64 activations at 384x384 are the export's memory peak).
        "vae_decoder": {"latent": step["latents"][:1]},
    }
