"""`Pipeline`: what an embedded app imports. Text to image and image + question to text, over an
exported artifact, with numpy + onnxruntime + tokenizers + pillow only.

    from jflow.runtime import Pipeline
    pipe = Pipeline.load("janusflow-fp16")
    pipe.generate("a red cube", seed=0)[0].save("cube.png")
    for piece in pipe.answer_stream("photo.jpg", "What is in this picture?"):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from jflow.errors import InputError
from jflow.runtime.backends import NUMPY_DTYPES, make_backend
from jflow.runtime.batching import understanding_batch
from jflow.runtime.decoder import decode_steps
from jflow.runtime.image_io import preprocess_images, to_uint8
from jflow.runtime.manifest import ArtifactError, Manifest
from jflow.runtime.ode import LATENT_CHANNELS, initial_noise
from jflow.runtime.processor_config import ProcessorSettings
from jflow.runtime.requests import check_generation_args, pair_images_questions
from jflow.runtime.sampler import sample_latents
from jflow.runtime.sampling import check_sampling
from jflow.runtime.tokenizer import JanusFlowTokenizer, TextStream

DEFAULT_MAX_NEW_TOKENS = 512


class Pipeline:
    def __init__(self, manifest: Manifest, backend, tokenizer: JanusFlowTokenizer, processor: ProcessorSettings):
        self.manifest, self.backend, self.tokenizer, self.processor = manifest, backend, tokenizer, processor
        self.limits = manifest.limits
        absent = [k for k in ("embeddings", "generation", "special_tokens") if k not in manifest.data]
        if absent:
            raise ArtifactError(f"{manifest.root}/manifest.json lacks {', '.join(absent)}: it was not written by "
                                "`jflow-export onnx` of this jflow; re-export it")
        llm = manifest.graph("llm")
        inputs = {t["name"]: t for t in llm["inputs"]}
        self.embed_dtype = NUMPY_DTYPES[inputs["inputs_embeds"]["dtype"]]
        self.past_names = [t["name"] for t in llm["inputs"] if t["name"].startswith("past_")]
        self.present_names = [t["name"] for t in llm["outputs"] if t["name"].startswith("present_")]
        _, self.kv_heads, _, self.head_dim = inputs[self.past_names[0]]["shape"]
        emb = manifest.data["embeddings"]
        # Memory-mapped: a device pages in only the rows it looks up.
        self.table = np.load(manifest.path(emb["embed_tokens"]), mmap_mode="r")
        self.beg_of_und = np.load(manifest.path(emb["beg_of_und_embed"])).astype(self.embed_dtype)
        self.latent_size = int(manifest.data["generation"]["latent_size"])
        self.num_gen_tokens = int(manifest.data["generation"]["num_gen_tokens"])
        self._graphs: dict = {}

    @classmethod
    def load(cls, artifact: str | Path, backend: str = "auto", providers: list[str] | None = None,
             threads: int | None = None, check_files: bool = True) -> "Pipeline":
        """Read and check the artifact (schema version, sha256 of every file) and pick a backend."""
        manifest = Manifest.load(artifact, check_files=check_files)
        processor = ProcessorSettings.from_dir(manifest.root)
        return cls(manifest, make_backend(backend, providers, threads, manifest.data.get("engines")),
                   JanusFlowTokenizer.from_dir(manifest.root, processor), processor)

    def graph(self, name: str):
        """The opened graph (opened on first use, so an answer-only app never loads the VAE)."""
        if name not in self._graphs:
            path = self.manifest.graph_path(name)
            optimized = self.manifest.data.get("engines", {}).get("onnxruntime", {})
            if self.backend.name == "onnxruntime" and name in optimized.get("graphs", {}) \
                    and optimized.get("onnxruntime_version") == self.backend.ort.__version__:
                path = self.manifest.path(optimized["graphs"][name])  # saved after ORT's offline optimization
            self._graphs[name] = self.backend.open(path, self.manifest.graph(name))
        return self._graphs[name]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.table[np.asarray(ids)], dtype=self.embed_dtype)

    def empty_past(self, rows: int) -> dict[str, np.ndarray]:
        empty = np.zeros((rows, self.kv_heads, 0, self.head_dim), self.embed_dtype)
        return {name: empty for name in self.past_names}

    # --- text to image ----------------------------------------------------------------------------
    def generate(self, prompt, steps: int = 30, cfg_weight: float = 2.0, seed: int | None = None,
                 noise: np.ndarray | None = None, num_images: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> list[Image.Image]:
        """One PIL image per (prompt, image) pair, prompts in order. `noise` [N*num_images, 4, s, s] overrides seed."""
        latents = self.generate_latents(prompt, steps, cfg_weight, seed, noise, num_images, progress)
        return [Image.fromarray(image) for image in self.decode_latents(latents)]

    def generate_latents(self, prompt, steps: int = 30, cfg_weight: float = 2.0, seed: int | None = None,
                         noise: np.ndarray | None = None, num_images: int = 1,
                         progress: Callable[[int, int], None] | None = None, reuse_prompt_kv: bool = True):
        from jflow.runtime.requests import prompt_list  # a str or a list of str, errors name `prompt`
        prompts = prompt_list(prompt)
        if not isinstance(num_images, int) or num_images < 1:
            raise InputError(f"num_images must be a whole number >= 1, got {num_images!r}")
        check_generation_args(steps, cfg_weight)
        id_lists = [ids for p in prompts for ids in [self.tokenizer.generation_ids(p)] * num_images]
        room = int(self.limits["max_context"]) - 1 - self.num_gen_tokens
        for p, ids in zip(prompts, id_lists[::num_images]):
            if len(ids) > room:
                raise InputError(f"the prompt {p[:40]!r}... is {len(ids)} tokens; this artifact holds at most {room} "
                                 f"for generation (max_context {self.limits['max_context']} minus "
                                 f"{1 + self.num_gen_tokens} image tokens): shorten it, or re-export with a larger "
                                 "--max-context")
        shape = (len(id_lists), LATENT_CHANNELS, self.latent_size, self.latent_size)
        if noise is None:
            noise = initial_noise(seed, len(id_lists), self.latent_size)
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape != shape:
            raise InputError(f"noise must be {list(shape)}, got {list(noise.shape)}")
        chunk = int(self.limits["max_batch"])  # the artifact's batch limit: larger requests run in chunks
        starts = range(0, len(id_lists), chunk)
        out = []
        for i, start in enumerate(starts):
            report = None if progress is None else (
                lambda k, _, done=i * steps: progress(done + k, steps * len(starts)))
            out.append(sample_latents(self, id_lists[start:start + chunk], noise[start:start + chunk], steps,
                                      cfg_weight, report, reuse_prompt_kv))
        return np.concatenate(out)

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        """Latents [N, 4, s, s] -> images [N, 8s, 8s, 3] uint8 through the VAE decoder graph."""
        vae, chunk = self.graph("vae_decoder"), int(self.limits["max_batch"])
        images = [self.backend.to_host(vae.run({"latent": latents[i:i + chunk]})["image"])
                  for i in range(0, len(latents), chunk)]
        return to_uint8(np.concatenate(images).astype(np.float32))

    # --- image + question to text ------------------------------------------------------------------
    def answer_tokens(self, images, questions, max_new_tokens: int | None = None, temperature: float = 0.0,
                      top_p: float = 1.0, seed: int | None = None) -> list[list[int]]:
        images, questions = pair_images_questions(images, questions)
        out: list[list[int]] = []
        chunk = int(self.limits["max_batch"])
        for start in range(0, len(questions), chunk):
            rows = [[] for _ in questions[start:start + chunk]]
            for ids, done in self._decode(images[start:start + chunk], questions[start:start + chunk],
                                          max_new_tokens, temperature, top_p, seed):
                for row in np.flatnonzero(~done):
                    rows[row].append(int(ids[row]))
            out += rows
        return out

    def answer(self, images, questions, **kwargs):
        """The answer text: a str for one question, a list for a list of questions."""
        tokens = self.answer_tokens(images, questions, **kwargs)
        texts = [self.tokenizer.decode(t) for t in tokens]
        return texts[0] if isinstance(questions, str) else texts

    def answer_stream(self, image, question: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                      top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
        """Yield the answer's text pieces as tokens arrive (never a split multi-byte character)."""
        stream = TextStream(self.tokenizer)
        for ids, _ in self._decode([image], [question], max_new_tokens, temperature, top_p, seed):
            piece = stream.push(int(ids[0]))
            if piece:
                yield piece
        tail = stream.flush()
        if tail:
            yield tail

    def _decode(self, images, questions, max_new_tokens, temperature, top_p, seed):
        check_sampling(temperature, top_p)
        limit = int(self.limits["max_new_tokens"])
        if max_new_tokens is None:
            max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, limit)
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= limit:
            raise InputError(f"max_new_tokens must be a whole number in 1..{limit} (this artifact's "
                             f"--max-new-tokens), got {max_new_tokens!r}")
        id_lists = [self.tokenizer.understanding_ids(q) for q in questions]
        pixels = preprocess_images(images, self.processor)  # reads and checks every image first
        longest, context = max(map(len, id_lists)), int(self.limits["max_context"])
        if longest >= context:
            raise InputError(f"the question and image take {longest} tokens; this artifact holds {context}: "
                             "shorten the question, or re-export with a larger --max-context")
        batch = understanding_batch(id_lists, self.tokenizer.pad_id)
        image_embeds = self.backend.to_host(self.graph("siglip").run({"pixel_values": pixels})["image_embeds"])
        embeds = self.embed(batch.ids)
        slots = (batch.ids == self.tokenizer.image_id) | (batch.ids == self.tokenizer.image_start_id)
        for row in range(len(id_lists)):  # start tag -> beg_of_und_embed, placeholders -> the image
            embeds[row, np.flatnonzero(slots[row])] = np.concatenate([self.beg_of_und, image_embeds[row]])
        # The answer stops where the context is full (EOS usually comes first).
        yield from decode_steps(self, embeds, batch, min(max_new_tokens, context - longest), temperature, top_p, seed)

