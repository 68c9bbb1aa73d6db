"""`Pipeline`: what an embedded app imports. Text to image and image + question to text, over an
exported artifact, with numpy + onnxruntime (or TensorRT) + tokenizers + pillow only.

    from jflow.runtime.pipeline import Pipeline
    with Pipeline.load("janusflow-fp16") as pipe:
        pipe.generate("a red cube", seed=0)[0].save("cube.png")
        for piece in pipe.answer_stream("photo.jpg", "What is in this picture?"):
            print(piece, end="", flush=True)

Thread safety: one Pipeline may be shared by threads (a local server's workers). Its requests run one
at a time under a re-entrant lock; a stream (answer_stream, answer_token_ids) holds it only while it
computes its next token, so streams and calls interleave between tokens, each with its own KV cache,
and a stream abandoned half-way holds nothing. Every graph a request needs is opened before its first
step, and only from the files checked at load (`jflow.runtime.sharing`): a replaced or edited artifact
folder is refused with an ArtifactError, never run. `close()` waits for another thread's running call;
called from inside one (a progress callback), that call ends with "this Pipeline was closed". The loops
run on the Pipeline's `Session` (backend, runners, LLM runner, embeddings; `jflow.runtime.session`);
the Pipeline adds the request handling. The lower-level pieces (`runner(...).infer`, `llm`) are not
serialised: the tools that use them (verify, profile) own their Pipeline.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from jflow.artifact.manifest import Manifest
from jflow.errors import InputError, JFlowError
from jflow.runtime.backends import Hook, make_backend
from jflow.runtime.decoder import decode_steps
from jflow.runtime.image_io import preprocess_images, to_uint8
from jflow.runtime.ode import LATENT_CHANNELS, initial_noise
from jflow.runtime.processor_config import ProcessorSettings
from jflow.runtime.requests import check_generation_args, check_noise, pair_images_questions, prompt_list
from jflow.runtime.requests import check_threads
from jflow.runtime.ode_loop import sample_latents
from jflow.runtime.token_sampling import check_sampling
from jflow.runtime.session import Session
from jflow.runtime.sharing import CLOSED, serialised
from jflow.runtime.tokenizer import JanusFlowTokenizer, TextStream

DEFAULT_MAX_NEW_TOKENS = 512
# The graphs each task runs besides the LLM: opened together before a request's first step.
TASK_GRAPHS = {"generate": ("gen_encoder", "gen_decoder", "vae_decoder"), "latents": ("gen_encoder", "gen_decoder"),
               "answer": ("siglip",)}



class PipelineGuard(Hook):
    """The Pipeline's own hook: a graph call on a closed Pipeline (closed from inside the running call, a
    progress callback) says so, and while `Pipeline.tracing` is on every call is a span."""

    def __init__(self, pipe: "Pipeline"):
        self.pipe = pipe

    def bind(self, runner, feeds) -> None:
        self.pipe.check_open()

    def call(self, runner, feeds):
        self.pipe.check_open()
        tracer = self.pipe.tracer
        return nullcontext() if tracer is None else tracer.span(f"graph.{runner.name}")


class Pipeline:
    def __init__(self, manifest: Manifest, backend, tokenizer: JanusFlowTokenizer, processor: ProcessorSettings,
                 llm_form: str | None = None, hooks: tuple[Hook, ...] | list[Hook] = ()):
        self._lock = threading.RLock()
        self._closed = False
        self.tracer = None
        self.tokenizer, self.processor = tokenizer, processor
        self.session = Session(manifest, backend, tokenizer.vocab_size, llm_form, (PipelineGuard(self), *hooks))
        self.session.pinned.check("loading it")  # the tokenizer, configs and tables read above are the checked files

    # The session's parts, read-only: a request's loops run on them (`verify` and `profile` drive them too).
    manifest = property(lambda self: self.session.manifest)
    backend = property(lambda self: self.session.backend)
    llm = property(lambda self: self.session.llm)
    limits = property(lambda self: self.session.manifest.limits)
    latent_size = property(lambda self: self.session.latent_size)
    num_gen_tokens = property(lambda self: self.session.num_gen_tokens)
    embed_dtype = property(lambda self: self.session.embed_dtype)

    @classmethod
    def load(cls, artifact: str | Path, backend: str = "auto", providers: list[str] | None = None,
             threads: int | None = None, spin: bool = True, check_files: bool | str = True,
             llm_form: str | None = None, hooks: tuple[Hook, ...] | list[Hook] = ()) -> "Pipeline":
        """Read and check the artifact (schema, contract, every file's sha256 or its verified stamp) and pick
        a backend. threads/spin: ONNX Runtime's intra-op threads per session and whether its workers spin
        during a run (spin=False: they always sleep, for cores shared with other processes). llm_form: the
        LLM graph to run, "llm_ort" or "llm" (default: llm_ort on ONNX Runtime when the artifact has it).
        hooks: watch every graph call and tensor (calibration records its samples this way)."""
        check_threads(threads)  # before any file is read: at most 4 per core
        manifest = Manifest.load(artifact, check_files=check_files)
        processor = ProcessorSettings.from_dir(manifest.root)
        backend = make_backend(backend, providers, threads, manifest.data.get("engines"), spin)
        return cls(manifest, backend, JanusFlowTokenizer.from_dir(manifest.root, processor), processor, llm_form, hooks)

    # --- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every session and engine; later calls raise a clear error. Waits for the running call
        of another thread; called from inside a call (a progress callback), that call ends with the
        same clear error at its next graph."""
        with self._lock:
            self._closed = True
            self.session.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_open(self) -> None:
        """JFlowError "this Pipeline was closed" once close() ran (the request lock and the guard hook ask)."""
        if self._closed:
            raise JFlowError(CLOSED)

    @serialised
    def preload(self, *tasks: str) -> "Pipeline":
        """Open now every graph of the given tasks ("generate", "answer"; default both), e.g. right after
        load in a server, so no request opens a file later."""
        unknown = [t for t in tasks if t not in TASK_GRAPHS]
        if unknown:
            raise InputError(f"preload takes {', '.join(TASK_GRAPHS)}, got {', '.join(map(repr, unknown))}")
        for task in tasks or ("generate", "answer"):
            self._open(task)
        return self

    def _open(self, task: str) -> None:
        self.session.open(TASK_GRAPHS[task])

    @contextmanager
    def tracing(self, tracer):
        """Record every graph call as a span of `tracer` inside the block (profile's Chrome trace); other
        threads' requests wait, so the trace holds this block's calls only."""
        with self._lock:
            self.tracer = tracer
            try:
                yield tracer
            finally:
                self.tracer = None

    # --- graphs ----------------------------------------------------------------------------------
    @serialised
    def runner(self, name: str):
        """The runner of one graph, opened on first use (an answer-only app never loads the VAE)."""
        return self.session.runner(name)

    def output_buffers(self, name: str, axes: dict[str, int]) -> dict:
        """One pre-allocated buffer per output of a graph, axis names replaced by `axes`."""
        return self.session.output_buffers(name, axes)

    def embed(self, ids) -> np.ndarray:
        return self.session.embed(ids)

    # --- text to image ----------------------------------------------------------------------------
    @serialised
    def generate(self, prompt, steps: int = 30, cfg_weight: float = 2.0, seed: int | None = None,
                 noise: np.ndarray | None = None, num_images: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> list[Image.Image]:
        """One PIL image per (prompt, image) pair, prompts in order. `noise` [N*num_images, 4, s, s] overrides seed."""
        self._open("generate")  # the VAE too, with the other graphs, before the first step
        latents = self.generate_latents(prompt, steps, cfg_weight, seed, noise, num_images, progress)
        return [Image.fromarray(image) for image in self.decode_latents(latents)]

    @serialised
    def generate_latents(self, prompt, steps: int = 30, cfg_weight: float = 2.0, seed: int | None = None,
                         noise: np.ndarray | None = None, num_images: int = 1,
                         progress: Callable[[int, int], None] | None = None) -> np.ndarray:
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
        self._open("latents")
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
            out.append(sample_latents(self.session, id_lists[start:start + chunk], noise[start:start + chunk], steps,
                                      cfg_weight, report))
        return np.concatenate(out)

    @serialised
    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        """Latents [N, 4, s, s] -> images [N, 8s, 8s, 3] uint8 through the VAE decoder graph."""
        vae, chunk = self.runner("vae_decoder"), int(self.limits["max_batch"])
        latents = np.asarray(latents, np.float32)
        images = [self.backend.download(vae.infer({"latent": latents[i:i + chunk]}, ["image"])["image"])
                  for i in range(0, len(latents), chunk)]
        return to_uint8(np.concatenate(images).astype(np.float32))

    # --- image + question to text ------------------------------------------------------------------
    @serialised
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

    @serialised
    def answer(self, images, questions, **kwargs):
        """The answer text: a str for one question, a list for a list of questions."""
        tokens = self.answer_tokens(images, questions, **kwargs)
        texts = [self.tokenizer.decode(t) for t in tokens]
        return texts[0] if isinstance(questions, str) else texts

    def answer_stream(self, image, question: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                      top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
        """Yield the answer's text pieces as tokens arrive (never a split multi-byte character)."""
        stream = TextStream(self.tokenizer)
        for token in self.answer_token_ids(image, question, max_new_tokens, temperature, top_p, seed):
            piece = stream.push(token)
            if piece:
                yield piece
        tail = stream.flush()
        if tail:
            yield tail

    def answer_token_ids(self, image, question: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                         top_p: float = 1.0, seed: int | None = None) -> Iterator[int]:
        """Yield the answer's token ids as they are chosen, the final EOS included when the answer ends by
        itself (a server needs the count and the reason it stopped; `TextStream` turns them into text).
        Closing the generator stops the decode at once."""
        for ids, _ in self._stepwise([image], [question], max_new_tokens, temperature, top_p, seed):
            yield int(ids[0])

    @serialised
    def understanding_rows(self, images, questions) -> tuple[list[np.ndarray], int]:
        """Each question's prompt embeddings [n_i, H] with its image in place (start tag -> beg_of_und_embed,
        placeholders -> SigLIP's image embeddings), and the longest n_i."""
        id_lists = [self.tokenizer.understanding_ids(q) for q in questions]
        pixels = preprocess_images(images, self.processor)  # reads and checks every image first
        longest, context = max(map(len, id_lists)), int(self.limits["max_context"])
        if longest >= context:
            # the prompt must leave at least one position of the context for the answer's first token
            raise InputError(f"the question and image take {longest} tokens, but this artifact allows at most "
                             f"{context - 1} (fewer than its max_context of {context}, to leave room for the "
                             f"answer): shorten the question by {longest - context + 1} token(s), or re-export "
                             "with a larger --max-context")
        image_embeds = self.backend.download(
            self.runner("siglip").infer({"pixel_values": pixels}, ["image_embeds"])["image_embeds"])
        rows = []
        for ids, image in zip(id_lists, image_embeds):
            ids = np.asarray(ids)
            row = self.embed(ids)
            row[self.tokenizer.image_slots(ids, 1 + len(image))] = \
                np.concatenate([self.session.beg_of_und, image.astype(self.embed_dtype)])
            rows.append(row)
        return rows, longest

    def _stepwise(self, images, questions, *args) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`_decode` for a generator its caller drives: the lock is held while each token is computed, not
        while the caller holds it, so a stream driven from any thread, paused or dropped, blocks no one."""
        steps = self._decode(images, questions, *args)
        try:
            while True:
                with self._lock:
                    self.check_open()
                    step = next(steps, None)
                if step is None:
                    return
                yield step
        finally:
            steps.close()  # an abandoned stream lets its KV cache go now

    def _decode(self, images, questions, max_new_tokens, temperature, top_p, seed):
        self.check_open()
        check_sampling(temperature, top_p)
        limit = int(self.limits["max_new_tokens"])
        if max_new_tokens is None:
            max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, limit)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or not 1 <= max_new_tokens <= limit:
            raise InputError(f"max_new_tokens must be a whole number in 1..{limit} (this artifact's "
                             f"--max-new-tokens), got {max_new_tokens!r}")
        self._open("answer")
        rows, longest = self.understanding_rows(images, questions)
        context = int(self.limits["max_context"])
        # The answer stops where the context is full (EOS usually comes first).
        yield from decode_steps(self.session, rows, self.tokenizer.eos_id, min(max_new_tokens, context - longest),
                                temperature, top_p, seed)
