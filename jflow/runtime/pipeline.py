"""`Pipeline`: what an embedded app imports. Text to image and image + question to text, over an
exported artifact, with numpy + onnxruntime (or TensorRT) + tokenizers + pillow only.

    from jflow.runtime.pipeline import Pipeline
    with Pipeline.load("janusflow-fp16") as pipe:
        pipe.generate("a red cube", seed=0)[0].save("cube.png")
        for piece in pipe.answer_stream("photo.jpg", "What is in this picture?"):
            print(piece, end="", flush=True)
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from jflow.artifact.manifest import ArtifactError, Manifest
from jflow.errors import InputError, JFlowError
from jflow.runtime.backends import NUMPY_DTYPES, make_backend
from jflow.runtime.decoder import decode_steps
from jflow.runtime.image_io import preprocess_images, to_uint8
from jflow.runtime.llm_runner import llm_runner
from jflow.runtime.ode import LATENT_CHANNELS, initial_noise
from jflow.runtime.processor_config import ProcessorSettings
from jflow.runtime.requests import check_generation_args, check_noise, pair_images_questions, prompt_list
from jflow.runtime.sampler import sample_latents
from jflow.runtime.sampling import check_sampling
from jflow.runtime.tokenizer import JanusFlowTokenizer, TextStream

DEFAULT_MAX_NEW_TOKENS = 512


class _Traced:
    """A runner whose calls become spans while the pipeline has a tracer (see `Pipeline.tracing`)."""

    def __init__(self, inner, pipe: "Pipeline"):
        self.inner, self.pipe, self.name = inner, pipe, inner.name

    def activate(self):
        self.inner.activate()

    def deactivate(self):
        self.inner.deactivate()

    def infer(self, feeds, outputs=None):
        tracer = self.pipe.tracer
        if tracer is None:
            return self.inner.infer(feeds, outputs)
        with tracer.span(f"graph.{self.name}"):
            return self.inner.infer(feeds, outputs)

    def prepare(self, feeds, outputs):
        return self.inner.prepare(feeds, outputs)

    def run(self, prepared):
        tracer = self.pipe.tracer
        if tracer is None:
            return self.inner.run(prepared)
        with tracer.span(f"graph.{self.name}"):
            return self.inner.run(prepared)


class Pipeline:
    def __init__(self, manifest: Manifest, backend, tokenizer: JanusFlowTokenizer, processor: ProcessorSettings):
        self.manifest, self.backend, self.tokenizer, self.processor = manifest, backend, tokenizer, processor
        self.limits = manifest.limits
        self.tracer = None
        self._runners: dict = {}
        self.llm = llm_runner(_TracingBackend(backend, self), manifest)
        self.embed_dtype = self.llm.dtype
        emb = manifest.data["embeddings"]
        # Memory-mapped: a device pages in only the rows it looks up.
        self.table = np.load(manifest.path(emb["embed_tokens"]), mmap_mode="r")
        self.beg_of_und = np.load(manifest.path(emb["beg_of_und_embed"])).astype(self.embed_dtype)
        hidden = self.llm.hidden_size
        if self.table.ndim != 2 or self.table.shape[1] != hidden or self.beg_of_und.shape != (1, hidden) \
                or tokenizer.vocab_size > self.table.shape[0]:
            raise ArtifactError(f"{manifest.root}: the embedding table {list(self.table.shape)} and beg_of_und_embed "
                                f"{list(self.beg_of_und.shape)} do not fit an LLM of width {hidden} and a tokenizer of "
                                f"{tokenizer.vocab_size} tokens; re-export the artifact with `jflow-export onnx`")
        self.latent_size = int(manifest.data["generation"]["latent_size"])
        self.num_gen_tokens = int(manifest.data["generation"]["num_gen_tokens"])
        self._closed = False

    @classmethod
    def load(cls, artifact: str | Path, backend: str = "auto", providers: list[str] | None = None,
             threads: int | None = None, spin: bool = True, check_files: bool | str = True) -> "Pipeline":
        """Read and check the artifact (schema, contract, every file's sha256 or its verified stamp) and pick
        a backend. threads/spin: ONNX Runtime's intra-op threads per session and whether its workers spin
        during a run (spin=False: they always sleep, for cores shared with other processes)."""
        manifest = Manifest.load(artifact, check_files=check_files)
        processor = ProcessorSettings.from_dir(manifest.root)
        backend = make_backend(backend, providers, threads, manifest.data.get("engines"), spin)
        return cls(manifest, backend, JanusFlowTokenizer.from_dir(manifest.root, processor), processor)

    # --- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every session and engine; later calls raise a clear error."""
        for runner in self._runners.values():
            runner.deactivate()
        self.llm.deactivate()
        self._runners.clear()
        self._closed = True

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise JFlowError("this Pipeline was closed; load the artifact again with Pipeline.load(...)")

    @contextmanager
    def tracing(self, tracer):
        """Record every graph call as a span of `tracer` inside the block (profile's Chrome trace)."""
        self.tracer = tracer
        try:
            yield tracer
        finally:
            self.tracer = None

    # --- graphs ----------------------------------------------------------------------------------
    def runner(self, name: str):
        """The runner of one graph (activated on first use, so an answer-only app never loads the VAE)."""
        self._check_open()
        if name not in self._runners:
            self._runners[name] = _Traced(self.backend.runner(name, self.graph_path(name),
                                                              self.manifest.graph(name)), self)
        return self._runners[name]

    def graph_path(self, name: str) -> Path:
        """The graph's file: the one `build --target onnxruntime` saved after ORT's offline optimization when
        this onnxruntime made it, else the exported one."""
        optimized = self.manifest.data.get("engines", {}).get("onnxruntime", {})
        if self.backend.name == "onnxruntime" and name in optimized.get("graphs", {}) \
                and optimized.get("onnxruntime_version") == self.backend.ort.__version__:
            return self.manifest.path(optimized["graphs"][name])
        return self.manifest.graph_path(name)

    def output_buffers(self, name: str, axes: dict[str, int]) -> dict:
        """One pre-allocated buffer per output of a graph, axis names replaced by `axes`."""
        return {t["name"]: self.backend.empty([axes.get(d, d) if isinstance(d, str) else d for d in t["shape"]],
                                              NUMPY_DTYPES[t["dtype"]])
                for t in self.manifest.graph(name)["outputs"]}

    def embed(self, ids) -> np.ndarray:
        return np.asarray(self.table[np.asarray(ids)], dtype=self.embed_dtype)

    # --- text to image ----------------------------------------------------------------------------
    def generate(self, prompt, steps: int = 30, cfg_weight: float = 2.0, seed: int | None = None,
                 noise: np.ndarray | None = None, num_images: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> list[Image.Image]:
        """One PIL image per (prompt, image) pair, prompts in order. `noise` [N*num_images, 4, s, s] overrides seed."""
        latents = self.generate_latents(prompt, steps, cfg_weight, seed, noise, num_images, progress)
        return [Image.fromarray(image) for image in self.decode_latents(latents)]

    def generate_latents(self, prompt, steps: int = 30, cfg_weight: float = 2.0, seed: int | None = None,
                         noise: np.ndarray | None = None, num_images: int = 1,
                         progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        self._check_open()
        prompts = prompt_list(prompt)  # a str or a list of str; errors name `prompt`
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
        noise = check_noise(noise, shape)  # the right shape, finite
        chunk = int(self.limits["max_batch"])  # the artifact's batch limit: larger requests run in chunks
        starts = range(0, len(id_lists), chunk)
        out = []
        for i, start in enumerate(starts):
            report = None if progress is None else (
                lambda k, _, done=i * steps: progress(done + k, steps * len(starts)))
            out.append(sample_latents(self, id_lists[start:start + chunk], noise[start:start + chunk], steps,
                                      cfg_weight, report))
        return np.concatenate(out)

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        """Latents [N, 4, s, s] -> images [N, 8s, 8s, 3] uint8 through the VAE decoder graph."""
        vae, chunk = self.runner("vae_decoder"), int(self.limits["max_batch"])
        latents = np.asarray(latents, np.float32)
        images = [self.backend.download(vae.infer({"latent": latents[i:i + chunk]}, ["image"])["image"])
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

    def understanding_rows(self, images, questions) -> tuple[list[np.ndarray], int]:
        """Each question's prompt embeddings [n_i, H] with its image in place (start tag -> beg_of_und_embed,
        placeholders -> SigLIP's image embeddings), and the longest n_i."""
        id_lists = [self.tokenizer.understanding_ids(q) for q in questions]
        pixels = preprocess_images(images, self.processor)  # reads and checks every image first
        longest, context = max(map(len, id_lists)), int(self.limits["max_context"])
        if longest >= context:
            raise InputError(f"the question and image take {longest} tokens; this artifact holds {context}: "
                             "shorten the question, or re-export with a larger --max-context")
        image_embeds = self.backend.download(
            self.runner("siglip").infer({"pixel_values": pixels}, ["image_embeds"])["image_embeds"])
        rows = []
        for ids, image in zip(id_lists, image_embeds):
            ids = np.asarray(ids)
            row = self.embed(ids)
            row[np.flatnonzero((ids == self.tokenizer.image_id) | (ids == self.tokenizer.image_start_id))] = \
                np.concatenate([self.beg_of_und, image.astype(self.embed_dtype)])
            rows.append(row)
        return rows, longest

    def _decode(self, images, questions, max_new_tokens, temperature, top_p, seed):
        self._check_open()
        check_sampling(temperature, top_p)
        limit = int(self.limits["max_new_tokens"])
        if max_new_tokens is None:
            max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, limit)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or not 1 <= max_new_tokens <= limit:
            raise InputError(f"max_new_tokens must be a whole number in 1..{limit} (this artifact's "
                             f"--max-new-tokens), got {max_new_tokens!r}")
        rows, longest = self.understanding_rows(images, questions)
        context = int(self.limits["max_context"])
        # The answer stops where the context is full (EOS usually comes first).
        yield from decode_steps(self, rows, min(max_new_tokens, context - longest), temperature, top_p, seed)


class _TracingBackend:
    """The pipeline's backend as the LLM runner sees it: its runners are traced like the others."""

    def __init__(self, backend, pipe: Pipeline):
        self._backend, self._pipe = backend, pipe

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def runner(self, name, path, entry):
        return _Traced(self._backend.runner(name, path, entry), self._pipe)
