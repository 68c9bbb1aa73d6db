"""Reference inputs and outputs shipped in the artifact: per graph, and two end-to-end cases.

`jflow-export verify` (and the device) replays them through the exported graphs. Graph references come
from the same wrapper modules that were exported, run in PyTorch on fixed seeds; the VAE runs in
float64, because torch's own fp32 convolutions drift ~3e-5 from the exact result while ORT stays ~2e-6.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from jflow.modeling.understanding import answer_tokens
from jflow.runtime.ode import initial_noise

SEED = 1234
E2E_PROMPT = "a red cube on a wooden table"
E2E_QUESTION = "What is in this picture?"


def graph_reference(truth: torch.nn.Module, spec, example: dict, path: Path, float64: bool = False) -> None:
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
        array = tensor.detach().numpy()
        arrays[f"out.{out_spec.name}"] = array.astype(np.float32) if array.dtype.kind == "f" else array
    np.savez(path, **arrays)


def test_picture(size: int = 320) -> np.ndarray:
    """A deterministic non-square picture (gradients and a square) for the understanding case."""
    y, x = np.mgrid[0:size * 3 // 4, 0:size]
    image = np.stack([x * 255 // size, y * 255 // (size * 3 // 4), (x + y) % 256], axis=-1).astype(np.uint8)
    image[40:120, 60:140] = (200, 30, 30)
    return image


def generation_case(ref, path: Path, steps: int, cfg_weight: float = 2.0) -> None:
    noise = initial_noise(SEED, 1, ref.model.config.latent_size)
    result = ref.generate(E2E_PROMPT, steps=steps, cfg_weight=cfg_weight, noise=noise)
    np.savez(path, prompt=np.array(E2E_PROMPT), steps=np.array(steps), cfg_weight=np.array(cfg_weight, np.float32),
             noise=noise, prompt_ids=np.array(ref.tokenizer.generation_ids(E2E_PROMPT), np.int64),
             latents=result.latents, image=result.images)


def understanding_case(ref, path: Path, max_new_tokens: int) -> None:
    picture = test_picture()
    tokens = answer_tokens(ref, picture, E2E_QUESTION, max_new_tokens=max_new_tokens)[0]
    np.savez(path, image=picture, question=np.array(E2E_QUESTION), max_new_tokens=np.array(max_new_tokens),
             prompt_ids=np.array(ref.tokenizer.understanding_ids(E2E_QUESTION), np.int64),
             tokens=np.array(tokens, np.int64), text=np.array(ref.tokenizer.decode(tokens)))
