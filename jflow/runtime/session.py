"""`Session`: what the loops run on, apart from request handling (`Pipeline`: locking, argument checks,
chunking). A backend; the graph runners, each opened from the files the load checked; the LLM runner of
one form; the token embedding table; and the buffers and lookups the loops share.

Hooks (`jflow.runtime.backends.Hook`) watch every graph call and tensor of the session's backend: the
Pipeline's own closed-check and tracing, calibration's recorder, the tests' counters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jflow.artifact.arrays import load_npy
from jflow.artifact.manifest import ArtifactError, Manifest
from jflow.runtime.backends import NUMPY_DTYPES, Backend, Hook
from jflow.runtime.llm_runner import LlmRunner, llm_runner
from jflow.runtime.sharing import PinnedFiles


class Session:
    def __init__(self, manifest: Manifest, backend: Backend, vocab_size: int, llm_form: str | None = None,
                 hooks: tuple[Hook, ...] | list[Hook] = ()):
        """vocab_size: the tokenizer's, which the embedding table must cover. llm_form: "llm_ort" or "llm"
        (default: the fused llm_ort on ONNX Runtime when the artifact has it)."""
        self.manifest, self.backend = manifest, backend
        self.pinned = PinnedFiles(manifest)
        for hook in hooks:
            backend.add_hook(hook)
        self.runners: dict[str, Any] = {}
        self.llm: LlmRunner = llm_runner(backend, manifest, llm_form)
        self.llm_opened = False
        self.embed_dtype = self.llm.dtype
        emb = manifest.data["embeddings"]
        # Memory-mapped: a device pages in only the rows it looks up.
        self.table = load_npy(manifest.path(emb["embed_tokens"]), "the token embedding table", mmap=True)
        self.beg_of_und = load_npy(manifest.path(emb["beg_of_und_embed"]), "beg_of_und_embed").astype(self.embed_dtype)
        hidden = self.llm.hidden_size
        if self.table.ndim != 2 or self.table.shape[1] != hidden or self.beg_of_und.shape != (1, hidden) \
                or vocab_size > self.table.shape[0]:
            raise ArtifactError(f"{manifest.root}: the embedding table {list(self.table.shape)} and beg_of_und_embed "
                                f"{list(self.beg_of_und.shape)} do not fit an LLM of width {hidden} and a tokenizer of "
                                f"{vocab_size} tokens; re-export the artifact with `jflow-export onnx`")
        self.latent_size = int(manifest.data["generation"]["latent_size"])
        self.num_gen_tokens = int(manifest.data["generation"]["num_gen_tokens"])

    def add_hook(self, hook: Hook) -> None:
        """Watch every graph call and tensor of this session from now on (also of runners already open)."""
        self.backend.add_hook(hook)

    def remove_hook(self, hook: Hook) -> None:
        self.backend.remove_hook(hook)

    # ---- graphs -------------------------------------------------------------------------------------
    def activate(self, runner) -> None:
        """Open a graph from the checked files only: they are the same before and after it is read."""
        self.pinned.check(f"opening graph {runner.name}")
        runner.activate()
        self.pinned.check(f"opening graph {runner.name}")

    def runner(self, name: str):
        """The runner of one graph, opened on first use (an answer-only app never loads the VAE)."""
        if name not in self.runners:
            runner = self.backend.runner(name, self.manifest)
            self.activate(runner)
            self.runners[name] = runner
        return self.runners[name]

    def open(self, names: tuple[str, ...]) -> None:
        """Open these graphs and the LLM now (a request opens all it needs before its first step)."""
        for name in names:
            self.runner(name)
        if not self.llm_opened:
            self.activate(self.llm.graph)
            self.llm_opened = True

    def close(self) -> None:
        """Release every session and engine."""
        for runner in self.runners.values():
            runner.deactivate()
        self.llm.deactivate()
        self.runners.clear()

    # ---- what the loops share -----------------------------------------------------------------------
    def output_buffers(self, name: str, axes: dict[str, int]) -> dict:
        """One pre-allocated buffer per output of a graph, axis names replaced by `axes`."""
        return {t["name"]: self.backend.empty([axes.get(d, d) if isinstance(d, str) else d for d in t["shape"]],
                                              NUMPY_DTYPES[t["dtype"]])
                for t in self.manifest.graph(name)["outputs"]}

    def embed(self, ids) -> np.ndarray:
        return np.asarray(self.table[np.asarray(ids)], dtype=self.embed_dtype)
