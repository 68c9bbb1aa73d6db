"""Calibration samples: the inputs our own runtime feeds each graph on real requests, written to disk.

The fp32 artifact runs the calibration set through `Pipeline`, with a hook (`Recorder`) that records the
feeds of chosen calls: for every prompt, the prompt prefill and ODE steps spread over the whole
trajectory (t from noise to image); for every question, SigLIP, the prefill and a few decode
positions. Each generation runs once, on one LLM form (`calibrated_form`: the ORT form where the artifact
has it); the other form computes the same values at the same GEMMs and takes its ranges by weight
(gemms.py). With observe_llm (minmax), that form's calls are not saved: its runner taps the GEMM inputs and
their channel maxima are kept as it runs (observe.py). A cache row holds only the tokens written before the
call, so a sample keeps just those (the cache is re-padded when it is read back). Samples are seeded, written once per (artifact, set, settings)
under the cache folder, and reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np

from jflow.calibration.data import CalibrationSet
from jflow.calibration.observe import real_tokens
from jflow.fsutil import staged_dir
from jflow.runtime.backends import Hook

DONE = "complete.json"


class Recorder(Hook):
    """A hook that saves the feeds of chosen graph calls of a request as samples (chosen by each call's
    index within the request, per graph), one npz per call under `folder/<graph>`."""

    def __init__(self, folder: Path, observed: dict | None = None):
        """observed: graph -> ChannelMaxima, for a graph whose runner taps its GEMM inputs: its chosen calls
        are measured as they run (calibration.observe) instead of being saved."""
        self.folder, self.select = folder, lambda name, index: False
        self.index: dict[str, int] = defaultdict(int)
        self.count: dict[str, int] = defaultdict(int)
        self.observed = observed or {}
        self.pending: tuple[str, list | None] | None = None  # the chosen call being observed: its real rows

    def begin(self, select: Callable[[str, int], bool]) -> None:
        self.select, self.index = select, defaultdict(int)

    def call(self, runner, feeds: dict):
        name = runner.name
        index = self.index[name]
        self.index[name] += 1
        self.pending = None
        if self.select(name, index):
            host = {k: v if isinstance(v, np.ndarray) else runner.backend.download(v) for k, v in feeds.items()}
            if name in self.observed:
                self.pending = (name, real_tokens(host))
                self.count[name] += 1
            else:
                self.save(name, host)
        return nullcontext()

    def tapped(self, runner, values) -> None:
        if self.pending is not None and self.pending[0] == runner.name:
            self.observed[runner.name].add(values, self.pending[1])  # read one tensor at a time
            self.pending = None

    def save(self, name: str, feeds: dict) -> None:
        arrays = {k: np.array(v) for k, v in feeds.items()}  # np.array, not ascontiguousarray: 0-d stays 0-d
        if name == "llm_ort":
            arrays = compact_cache(arrays)
        (self.folder / name).mkdir(parents=True, exist_ok=True)
        np.savez(self.folder / name / f"{self.count[name]:05d}.npz", **arrays)
        self.count[name] += 1


def compact_cache(feeds: dict) -> dict:
    """An llm_ort sample keeps only the cache slots written before the call (the rest is never read)."""
    past = int((feeds["seqlens_k"].astype(np.int64) + 1 - feeds["query_seqlens"]).max())
    return {k: (v[:, :, :past] if k.startswith("past_") else v) for k, v in feeds.items()}


def split_rows(feeds: dict) -> list[dict]:
    """An LLM sample as one sample per batch row, each holding only that row's own tokens. Rows are
    right-padded to the longest (a guidance prefill: the prompt beside a lone BOS; the ODE steps after it
    inherit the padded cache). Padded query rows are never read by the runtime but would skew activation
    ranges: GroupQueryAttention (llm_ort) leaves them unwritten (garbage, NaN at times), and the portable
    form computes them from masked-out inputs (SmolLM2: channel maxima up to 2.5x the real tokens')."""
    if "query_seqlens" in feeds:
        return _split_fused(feeds)
    if "attention_mask" in feeds and "inputs_embeds" in feeds:
        return _split_masked(feeds)
    return [feeds]


def _row_count(z) -> int:
    """How many samples split_rows makes of the npz `z`, read from its small keys only."""
    if "query_seqlens" in z.files:
        return len(z["query_seqlens"])
    if "attention_mask" in z.files and "inputs_embeds" in z.files:
        return len(z["attention_mask"])
    return 1


def _split_fused(feeds: dict) -> list[dict]:
    rows = []
    for b, (new, last) in enumerate(zip(feeds["query_seqlens"].tolist(), feeds["seqlens_k"].tolist())):
        past = last + 1 - new
        row = {k: v[b:b + 1] for k, v in feeds.items() if v.ndim}
        row.update({"inputs_embeds": row["inputs_embeds"][:, :new], "position_ids": row["position_ids"][:, :new],
                    "total_sequence_length": np.array(last + 1, feeds["total_sequence_length"].dtype)})
        rows.append({k: (v[:, :, :past] if k.startswith("past_") else v) for k, v in row.items()})
    return rows


def _split_masked(feeds: dict) -> list[dict]:
    """The portable form: attention_mask [rows, past + new] says which cache slots and new tokens are real."""
    mask = feeds["attention_mask"].astype(bool)
    past = mask.shape[1] - feeds["inputs_embeds"].shape[1]
    rows = []
    for b in range(mask.shape[0]):
        old, new = mask[b, :past], mask[b, past:]
        row = {k: v[b:b + 1] for k, v in feeds.items()}
        row.update({"inputs_embeds": row["inputs_embeds"][:, new], "position_ids": row["position_ids"][:, new],
                    "attention_mask": np.ones((1, int(old.sum() + new.sum())), feeds["attention_mask"].dtype)})
        rows.append({k: (v[:, :, old] if k.startswith("past_") else v) for k, v in row.items()})
    return rows


def expand_cache(feeds: dict) -> dict:
    """The inverse of compact_cache: room for the call's new tokens after the kept ones (zeros beyond)."""
    if "query_seqlens" not in feeds:
        return feeds
    capacity = int(feeds["total_sequence_length"]) + int(feeds["inputs_embeds"].shape[1])
    out = dict(feeds)
    for k, v in feeds.items():
        if k.startswith("past_"):
            full = np.zeros(v.shape[:2] + (capacity,) + v.shape[3:], v.dtype)
            full[:, :, :v.shape[2]] = v
            out[k] = full
    return out


def trajectory_steps(steps: int, count: int = 6) -> set[int]:
    """ODE steps to sample, spread over the whole t range (the first and the last included)."""
    return set(np.linspace(0, steps - 1, min(count, steps)).round().astype(int).tolist())


def collect_samples(artifact: Path, cset: CalibrationSet, cache: Path, steps: int = 10,
                    decode_positions: tuple[int, ...] = (1, 8), log: Callable[[str], None] = print,
                    observe_llm: bool = False) -> Path:
    """The folder of samples (one subfolder per graph, one npz per call); collected unless cached.
    observe_llm: the calibrated LLM form's GEMM input statistics are taken in the run (observe.py), and its
    calls are not saved."""
    from jflow.artifact.manifest import Manifest
    manifest = Manifest.load(artifact, check_files=False)
    key = hashlib.sha256(json.dumps([manifest.digest, cset.digest, steps, list(decode_positions), 3,
                                     observe_llm]).encode())
    folder = cache / key.hexdigest()[:24]
    if (folder / DONE).is_file():
        log(f"calibration samples from the cache: {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier collection
    folder.parent.mkdir(parents=True, exist_ok=True)
    with staged_dir(folder, replace=True) as tmp:
        counts = _collect(artifact, cset, tmp, steps, decode_positions, log, observe_llm)
        (tmp / DONE).write_text(json.dumps({"samples": counts, "set": cset.to_manifest(), "steps": steps,
                                            "decode_positions": list(decode_positions)}, indent=1))
    return folder


def calibrated_form(manifest) -> str:
    """The LLM graph calibration runs (and records): llm_ort where the artifact has it, else llm."""
    return "llm_ort" if "llm_ort" in manifest.graphs else "llm"


def _collect(artifact, cset, folder, steps, positions, log, observe_llm) -> dict:
    from jflow.artifact.manifest import Manifest
    from jflow.calibration.observe import ChannelMaxima, gemm_inputs
    from jflow.runtime.pipeline import Pipeline
    manifest = Manifest.load(artifact, check_files=False)
    llm = calibrated_form(manifest)
    observed = {llm: ChannelMaxima()} if observe_llm else {}
    recorder = Recorder(folder, observed)
    keep = trajectory_steps(steps)
    with Pipeline.load(artifact, check_files=False, llm_form=llm, backend="onnxruntime", hooks=[recorder]) as pipe:
        if observe_llm:  # the exported graph's tensor names (a build's optimized graph may have others)
            pipe.llm.graph.tap(gemm_inputs(manifest.graph_path(llm)))
        for i, prompt in enumerate(cset.prompts):
            log(f"calibration: generation {i + 1}/{len(cset.prompts)}, {steps} steps")

            def gen(name, index):  # llm: 0 = prefill, i = step i-1; gen_*: index = step
                if name == llm:
                    return index == 0 or index - 1 in keep
                return name in ("gen_encoder", "gen_decoder") and index in keep
            recorder.begin(gen)
            pipe.generate_latents(prompt, steps=steps, seed=i)
        for i, (question, photo) in enumerate(zip(cset.questions, cset.photos)):
            log(f"calibration: question {i + 1}/{len(cset.questions)} about {photo.name}")
            recorder.begin(lambda name, index: (name == llm and (index == 0 or index in positions)) or name == "siglip")
            pipe.answer_tokens(str(photo), question, max_new_tokens=max(positions) + 1)  # greedy
    for name, maxima in observed.items():
        maxima.save(folder, name)
    return dict(recorder.count)


class SampleReader:
    """onnxruntime's CalibrationDataReader over one graph's sample files, one row (split_rows) a sample.
    Also sized and sliceable (len, set_range): quantize_static's strided calibration reads it a slice at
    a time."""

    def __init__(self, folder: Path, inputs: list[str]):
        self.files = sorted(folder.glob("*.npz"))
        self.inputs, self.index, self.loaded = inputs, None, (None, [])
        self.rewind()

    def _rows(self) -> list[tuple[int, int]]:
        """(file, row) of every sample, counted once from each file's small keys (npz reads lazily)."""
        if self.index is None:
            self.index = []
            for f, path in enumerate(self.files):
                with np.load(path) as z:
                    self.index += [(f, r) for r in range(_row_count(z))]
        return self.index

    def _split(self, f: int) -> list[dict]:
        if self.loaded[0] != f:
            with np.load(self.files[f]) as z:
                self.loaded = (f, split_rows({k: z[k] for k in z.files}))
        return self.loaded[1]

    def get_next(self):
        rows = self._rows()
        if self.position >= (len(rows) if self.end is None else min(self.end, len(rows))):
            return None
        f, r = rows[self.position]
        self.position += 1
        feeds = expand_cache(self._split(f)[r])
        return {k: feeds[k] for k in self.inputs}

    def __len__(self) -> int:
        return len(self._rows())

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, end_index

    def rewind(self) -> None:
        self.position, self.end = 0, None


def probe(source: Path, tensors: list[str], samples: Path):
    """For each calibration sample in `samples`, {tensor: value} for the named activations of the graph
    `source`, run unoptimized (every tensor as the graph writes it; weights read where they lie)."""
    import onnxruntime as ort
    from jflow.runtime.backends.onnxruntime import tapped_model
    graph = tapped_model(source, tensors)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(source.parent))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every X as it is
    options.log_severity_level = 3  # extra outputs are ours: no warnings about them
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    del graph
    inputs = {i.name for i in session.get_inputs()}
    reader = SampleReader(samples, sorted(inputs))
    computed = [t for t in tensors if t not in inputs]
    seen = False
    while (feeds := reader.get_next()) is not None:
        seen = True
        values = dict(zip(computed, session.run(computed, feeds))) if computed else {}
        yield {t: feeds[t] if t in inputs else values[t] for t in tensors}
    if tensors and not seen:
        raise ValueError(f"no calibration samples in {samples}")
