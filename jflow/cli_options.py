"""Options and arguments several `jflow-export` commands share (they stay in step by being defined once)."""

from __future__ import annotations

import time

import click

from jflow.cli_types import FiniteFloat, Seed, Threads
from jflow.runtime.image_io import MAX_IMAGES
from jflow.runtime.requests import MAX_CFG_WEIGHT


def _options(*options):
    """Apply several click options as one decorator (commands that share them stay in step)."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


generation_options = _options(
    click.option("-o", "--out", default="out.png", show_default=True, help="PNG file (out-1.png, ... for -n > 1)."),
    click.option("--steps", default=30, show_default=True, type=click.IntRange(1), help="Euler steps of the ODE."),
    click.option("--cfg", "cfg_weight", default=2.0, show_default=True, type=FiniteFloat(0, MAX_CFG_WEIGHT),
                 help=f"Guidance weight, 0 to {MAX_CFG_WEIGHT:g} (1 is no guidance)."),
    click.option("--seed", default=None, type=Seed(), help="Seed of the starting noise (random if not given)."),
    click.option("-n", "count", default=1, show_default=True, type=click.IntRange(1, MAX_IMAGES),
                 help=f"Images to make, 1 to {MAX_IMAGES}; each is written as soon as it is made."))
REFERENCE_CHUNK = 4  # images the reference makes at once for -n (the runtime uses the artifact's max_batch)
FORCE_HELP = ("Replace OUT if it exists and jflow wrote it (never a folder jflow did not write, the current or "
              "home folder, or a source).")

SAMPLING_OPTIONS = _options(
    click.option("--temperature", default=0.0, show_default=True, type=FiniteFloat(0), help="0 is greedy."),
    click.option("--top-p", default=1.0, show_default=True, type=FiniteFloat(0, 1, min_open=True),
                 help="Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1]."),
    click.option("--seed", default=None, type=Seed(), help="Seed for sampling."))


MODEL_ARGUMENT = click.argument("model", required=False, metavar="MODEL")  # a checkpoint folder, or 'tiny'
LEGACY_MODEL = click.option("--model", "legacy_model", default=None, hidden=True)


def source_paths(*paths):
    """The inputs an output folder must stay apart from ('tiny' is built in memory: no folder)."""
    return [p for p in paths if p is not None and p != "tiny"]


runtime_options = _options(
    click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto",
                 show_default=True, help="auto: TensorRT when the artifact has engines and TensorRT is installed, "
                                         "else onnxruntime (with its GPU provider when installed)."),
    click.option("--threads", default=None, type=Threads(), help="ONNX Runtime intra-op threads per session, "
                                                                 "at most 4 per core (default: one per core)."),
    click.option("--spin/--no-spin", default=True, show_default=True,
                 help="ONNX Runtime workers spin between the kernels of a run (fastest when the cores are yours) "
                      "or always sleep (--no-spin: better when other processes compete for the cores)."),
    click.option("--check-files", type=click.Choice(["stamp", "full"]), default="stamp", show_default=True,
                 help="stamp: re-hash only files changed since the last full check; full: hash every file."))


def load_pipeline(artifact: str, backend: str, threads: int | None, spin: bool, check_files: str):
    """Pipeline.load with the line every runtime command prints: what was loaded, on what, how fast."""
    from jflow.runtime.pipeline import Pipeline
    started = time.perf_counter()
    pipe = Pipeline.load(artifact, backend=backend, threads=threads, spin=spin, check_files=check_files)
    click.echo(f"{artifact}: {pipe.manifest.precision}, backend {pipe.backend.name} ({pipe.backend.device}), "
               f"llm form {pipe.llm.graph_name}, checked in {time.perf_counter() - started:.2f}s", err=True)
    return pipe
