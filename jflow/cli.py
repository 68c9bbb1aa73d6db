"""`jflow-export`: the command line. Torch-side modules are imported inside the commands that need them,
so the device-side commands run on a machine without torch."""

from __future__ import annotations

import sys
import time

import click

from jflow import __version__
from jflow.artifact.precision import QUANTIZED
from jflow.calibration import METHODS
from jflow.calibration.recipe import ORT_INT8, QuantRecipe
from jflow import cli_legacy
from jflow.cli_options import (FORCE_HELP, LEGACY_MODEL, MODEL_ARGUMENT, REFERENCE_CHUNK, SAMPLING_OPTIONS,
                               generation_options, runtime_options, source_paths, load_pipeline)
from jflow.cli_serve import serve_command
from jflow.cli_types import Seed
from jflow.errors import JFlowError
from jflow.fsutil import atomic_write_bytes, check_new_dir, check_writable_dir, check_writable_file
from jflow.interrupts import stop_on_signals


class _Group(click.Group):
    """Turns jflow's input errors and bad option values into one clear line and exit code 1, never a
    traceback (a missing argument keeps click's usage text)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            if isinstance(exc, click.MissingParameter):
                raise
            raise click.ClickException(exc.format_message()) from exc
        except (JFlowError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc




@click.group(cls=_Group)
@click.version_option(__version__, prog_name="jflow-export")
@click.pass_context
def main(ctx):
    """Compile DeepSeek JanusFlow-1.3B to ONNX / TensorRT and run it.

    Inputs are arguments, outputs are --out (or -o for images)."""
    # SIGTERM unwinds like Ctrl-C, so temporary files and partial folders are removed on the way out.
    ctx.call_on_close(stop_on_signals())


@main.command(cls=cli_legacy.Command)
@click.argument("legacy_out", required=False, type=click.Path())
@click.option("--out", default=None, type=click.Path(), help="Checkpoint folder to create (required).")
@click.option("--seed", default=0, show_default=True, type=Seed(), help="Seed of the random weights.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.pass_context
def tiny(ctx, legacy_out, out, seed, force):
    """Write the tiny random-weight JanusFlow as a checkpoint folder OUT in the official format."""
    out = cli_legacy.one_of(ctx, "out", legacy_out, "tiny OUT", "tiny --out OUT")
    check_new_dir(out, "the checkpoint folder", replace=force)  # before torch loads
    from jflow.modeling import write_tiny_checkpoint
    path = write_tiny_checkpoint(out, seed=seed, overwrite=force)
    click.echo(f"wrote tiny JanusFlow checkpoint to {path}")


def _load_reference(model: str, vae: str | None, load_vae: bool):
    from jflow.modeling import build_tiny, load_janusflow
    if model == "tiny":
        return build_tiny(seed=0, with_vae=load_vae)
    started = time.perf_counter()
    ref = load_janusflow(model, vae_path=vae, load_vae=load_vae)
    click.echo(f"loaded {model} in {time.perf_counter() - started:.1f}s", err=True)
    return ref


@main.command("onnx", cls=cli_legacy.Command)
@MODEL_ARGUMENT
@LEGACY_MODEL
@click.option("--out", required=True, type=click.Path(), help="Artifact folder to create.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--max-batch", default=4, show_default=True, type=click.IntRange(1),
              help="Images or questions per call (generation runs twice the rows).")
@click.option("--max-context", default=1024, show_default=True, type=click.IntRange(2),
              help="Prompt + generated tokens the LLM must hold (generation needs prompt + 577).")
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(1))
@click.option("--vae", default=None, help="SDXL VAE folder (default: MODEL/vae).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.pass_context
def onnx_command(ctx, model, legacy_model, out, precision, max_batch, max_context, max_new_tokens, vae, force):
    """Export the five graphs, reference I/O and manifest of MODEL (a checkpoint folder, or 'tiny' for the
    test model) to the artifact folder OUT."""
    from jflow.export.artifact import export_artifact
    from jflow.artifact.spec import Limits
    model, = cli_legacy.shifted(ctx, ["model"], legacy_model, "onnx --model MODEL", "onnx MODEL")
    check_new_dir(out, "the artifact folder", replace=force, sources=source_paths(model, vae))  # before loading
    ref = _load_reference(model, vae, load_vae=True)
    started = time.perf_counter()
    click.echo(f"exporting {model} ({precision}) to {out}", err=True)
    export_artifact(ref, out, precision=precision, force=force,
                    limits=Limits(max_batch=max_batch, max_context=max_context, max_new_tokens=max_new_tokens),
                    log=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {out} in {time.perf_counter() - started:.1f}s; check it with: jflow-export verify {out}")


@main.command("quantize")
@click.argument("src", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Quantized artifact folder to create.")
@click.option("--precision", type=click.Choice(QUANTIZED), required=True,
              help="int8: W8A8 QDQ on every compute graph; int4: LLM weights int4 (blocks), the rest int8.")
@click.option("--calib", default=None, type=click.Path(),
              help="Folder of your own photographs (default: scikit-image's, `pip install jflow[calib]`).")
@click.option("--samples", default=QuantRecipe.samples, show_default=True, type=click.IntRange(1),
              help="Prompts (each a 30-step generation) and questions (each with a photograph) to calibrate on.")
@click.option("--method", type=click.Choice(METHODS), default=QuantRecipe.method,
              show_default=True, help="How activation ranges are calibrated.")
@click.option("--block-size", default=QuantRecipe.block_size, show_default=True, type=click.IntRange(16),
              help="int4: weights per quantization block along the input dimension.")
@click.option("--steps", default=QuantRecipe.steps, show_default=True, type=click.IntRange(1),
              help="ODE steps of each calibration generation (samples are spread over all of them).")
@click.option("--smooth", default=QuantRecipe.smooth, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="int8: SmoothQuant migration strength for the LLM's GEMMs, folded into its weights (0: off).")
@click.option("--keep-float", default=",".join(QuantRecipe.keep_float), show_default=True,
              help="int8: LLM GEMMs left float, by role, comma-separated: down (the MLP down projections: their "
                   "input silu(gate)*up is too heavy-tailed for one int8 scale), o (attention output projections), "
                   "or none; or GEMM names as the manifest lists them (layers.3.down, lm_head); or measured: those "
                   "most sensitive to W8A8 (KL of the next-token distributions) within --float-budget. The static "
                   "forms only (the portable one, TensorRT's; llm_ort_step), and llm_ort with --ort-int8 static.")
@click.option("--float-budget", default=QuantRecipe.float_budget, show_default=True, type=click.FloatRange(0, 1),
              help="int8, --keep-float measured: the most of the LLM's GEMM weights the float GEMMs may hold.")
@click.option("--ort-int8", type=click.Choice(ORT_INT8), default=QuantRecipe.ort_int8, show_default=True,
              help="int8: the ONNX Runtime LLM form's GEMMs. blockwise: int8 weights in blocks, activations "
                   "quantized per block in the kernel (MatMulNBits: close to fp32, slow at many rows); static: the "
                   "portable form's W8A8 QDQ (fast, less accurate); split: blockwise for the text, a static form "
                   "for the ODE steps.")
@click.option("--int8-budget", default=QuantRecipe.int8_budget, show_default=True, type=click.FloatRange(1, 2),
              help="int4: LLM GEMMs most sensitive to int4 (measured) held at int8 while the LLM's GEMM bytes stay "
                   "within this many times plain int4's (1: plain int4).")
@click.option("--int8-gemms", default=None,
              help="int4: hold exactly these LLM GEMMs at int8 instead of measuring (comma-separated names as the "
                   "manifest lists them, e.g. lm_head,layers.0.down; none: plain int4).")
@click.option("--awq/--no-awq", default=QuantRecipe.awq, show_default=True,
              help="int4: AWQ's activation-aware scales, searched on the int4 grid written, folded in first.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def quantize_command(src, out, precision, calib, samples, method, block_size, steps, smooth, keep_float, float_budget,
                     ort_int8, int8_budget, int8_gemms, awq, force):
    """Quantize the fp32 artifact SRC into a new INT8 or INT4 artifact OUT, calibrated on this runtime's own
    inputs (cached under $JFLOW_CACHE/calibration, by default ~/.cache/jflow/calibration)."""
    from jflow.calibration.quantize import quantize_artifact
    check_new_dir(out, "the quantized artifact folder", replace=force, sources=[src])  # before any work
    recipe = QuantRecipe(precision, method=method, smooth=smooth, keep_float=None if keep_float.strip() == "measured"
                         else _roles(keep_float), float_budget=float_budget, block_size=block_size,
                         samples=samples, steps=steps, ort_int8=ort_int8, int8_budget=int8_budget,
                         int8_gemms=None if int8_gemms is None else _roles(int8_gemms), awq=awq)
    quantize_artifact(src, out, recipe, calib=calib, force=force, log=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {out}; check it with: jflow-export verify {out}")


def _roles(value: str) -> tuple[str, ...]:
    """A comma list option ("none": empty); QuantRecipe or quantize checks the names."""
    return () if value.strip() == "none" else tuple(r.strip() for r in value.split(",") if r.strip())


@main.command("build", cls=cli_legacy.Command)
@click.argument("artifact", required=False, metavar="ARTIFACT", type=click.Path())
@click.option("--out", "legacy_out", default=None, hidden=True, type=click.Path())
@click.option("--model", default=None,
              help="Checkpoint folder or 'tiny'; needed only when ARTIFACT does not exist yet (it is exported first).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp16", show_default=True)
@click.option("--target", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto", show_default=True,
              help="auto: TensorRT when TensorRT and a GPU are here, else ONNX Runtime.")
@click.option("--components", default=None, help="Comma-separated graphs to build (default: all).")
@click.option("--max-batch", default=4, show_default=True, type=click.IntRange(1))
@click.option("--max-context", default=1024, show_default=True, type=click.IntRange(2))
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(1))
@click.option("--workspace", "workspace_mib", default=None, type=click.IntRange(1), help="TensorRT workspace cap, MiB.")
@click.option("--opt-level", default=None, type=click.IntRange(0, 5), help="TensorRT builder optimization level.")
@click.option("--timing-cache", default=None, type=click.Path(), help="TensorRT timing cache file (reused, updated).")
@click.pass_context
def build_command(ctx, artifact, legacy_out, model, precision, target, components, max_batch, max_context,
                  max_new_tokens, workspace_mib, opt_level, timing_cache):
    """Build engines for the target into the artifact folder ARTIFACT, exporting the ONNX artifact there first
    (from --model) when it does not exist yet."""
    from pathlib import Path

    from jflow.engines.build import build
    from jflow.engines.targets import choose_target, tensorrt_status
    from jflow.artifact.manifest import MANIFEST_NAME
    out = cli_legacy.one_of(ctx, "artifact", legacy_out, "build --out DIR", "build DIR")
    out_path = Path(out)
    has_artifact = (out_path / MANIFEST_NAME).is_file()
    if has_artifact:  # engines are written into it
        check_writable_dir(out_path, "the artifact folder")
    else:  # exported first
        check_new_dir(out_path, "the artifact folder", sources=source_paths(model))
    if timing_cache:
        check_writable_file(timing_cache, "the timing cache", example="timing.cache")
    status = tensorrt_status() if target != "onnxruntime" else None
    choose_target(target, out, status, artifact_ready=has_artifact)  # fail fast, before any export
    if has_artifact:
        click.echo(f"using the ONNX artifact in {out}", err=True)
    else:
        if model is None:
            raise click.ClickException(f"{out} holds no artifact yet: pass --model PATH (or tiny) to export one")
        from jflow.export.artifact import export_artifact
        from jflow.artifact.spec import Limits
        ref = _load_reference(model, None, load_vae=True)
        click.echo(f"exporting {model} ({precision}) to {out}", err=True)
        export_artifact(ref, out_path, precision=precision, log=lambda line: click.echo(line, err=True),
                        limits=Limits(max_batch=max_batch, max_context=max_context, max_new_tokens=max_new_tokens))
        del ref
    started = time.perf_counter()
    chosen = build(out_path, target=target, components=components.split(",") if components else None,
                   workspace_mib=workspace_mib, opt_level=opt_level,
                   timing_cache=Path(timing_cache) if timing_cache else None,
                   log=lambda line: click.echo(line, err=True), status=status)
    click.echo(f"built the {chosen} target in {out} in {time.perf_counter() - started:.1f}s")


@main.command("triton")
@click.argument("artifact", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Model repository folder to create.")
@click.option("--engines", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="Graph models as ONNX (Triton's onnxruntime backend) or as the artifact's TensorRT plans "
                   "(built first with `jflow-export build --target tensorrt`).")
@click.option("--variant", type=click.Choice(["bls", "local"]), default="bls", show_default=True,
              help="bls: one model per graph, driven by Python models through BLS (GPU servers); local: Python "
                   "models that run the whole artifact on ONNX Runtime themselves (CPU servers).")
@click.option("--instances", default=1, show_default=True, type=click.IntRange(1), help="Instances of every model.")
@click.option("--max-queue-delay-us", default=100, show_default=True, type=click.IntRange(0),
              help="How long Triton may hold a request to batch it with others (batched graphs only).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def triton_command(artifact, out, engines, variant, instances, max_queue_delay_us, force):
    """Write a Triton Inference Server model repository OUT for ARTIFACT."""
    from jflow.serving.triton.repository import export_repository
    check_new_dir(out, "the model repository", replace=force, sources=[artifact])  # before the artifact is read
    started = time.perf_counter()
    path = export_repository(artifact, out, engines=engines, variant=variant, instances=instances,
                             max_queue_delay_us=max_queue_delay_us, force=force,
                             log=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {path} in {time.perf_counter() - started:.1f}s; serve it with: "
               f"tritonserver --model-repository {path}")


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt", "auto"]), default="onnxruntime",
              show_default=True, help="Where to run the graphs (tensorrt needs engines built on this device).")
@click.option("--graph", "graphs", multiple=True,
              help="Check only this graph or end-to-end case (generation, understanding); repeatable.")
def verify(artifact, backend, graphs):
    """Check ARTIFACT's contract and files, run every graph on its shipped reference inputs, and replay the
    end-to-end cases through the runtime; exit 1 on any FAIL."""
    from jflow.runtime.verify import format_table, verify_artifact
    report = verify_artifact(artifact, backend=backend, graphs=list(graphs) or None)
    click.echo(format_table(report))
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("artifact", type=click.Path())
@click.argument("prompt")
@generation_options
@runtime_options
def generate(artifact, prompt, out, steps, cfg_weight, seed, count, backend, threads, spin, check_files):
    """Text to image with an exported ARTIFACT (no torch needed)."""
    from jflow.runtime.image_io import check_output_images, images_to_files
    from jflow.runtime.requests import check_generation_args
    check_generation_args(steps, cfg_weight)  # fail before loading anything
    paths = check_output_images(out, count)
    pipe = load_pipeline(artifact, backend, threads, spin, check_files)
    pipe.preload("generate")  # the VAE from the checked files too, not opened after sampling
    started = time.perf_counter()
    with click.progressbar(length=steps * count, label="sampling", file=sys.stderr) as bar:
        def render(noise):  # one chunk of the artifact's max_batch images, written before the next starts
            base = bar.pos
            latents = pipe.generate_latents(prompt, steps=steps, cfg_weight=cfg_weight, noise=noise,
                                            num_images=len(noise),
                                            progress=lambda done, total: bar.update(base + done - bar.pos))
            return pipe.decode_latents(latents)
        for path in images_to_files(paths, int(pipe.limits["max_batch"]), seed, pipe.latent_size, render):
            click.echo(f"wrote {path}")
    click.echo(f"{count} image(s), {steps} steps in {time.perf_counter() - started:.1f}s", err=True)


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--image", required=True, type=click.Path(), help="The picture to ask about.")
@click.argument("question")
@click.option("--max-new-tokens", default=None, type=click.IntRange(1),
              help="Default: 512, or the artifact's limit if lower.")
@SAMPLING_OPTIONS
@runtime_options
def chat(artifact, image, question, max_new_tokens, temperature, top_p, seed, backend, threads, spin, check_files):
    """Answer QUESTION about an image with an exported ARTIFACT, streaming the text to stdout."""
    from jflow.runtime.image_io import load_image
    from jflow.terminal import terminal_safe
    picture = load_image(image)  # fail before loading anything
    pipe = load_pipeline(artifact, backend, threads, spin, check_files)
    for piece in pipe.answer_stream(picture, question, max_new_tokens=max_new_tokens, temperature=temperature,
                                    top_p=top_p, seed=seed):
        click.echo(terminal_safe(piece), nl=False)  # control characters escaped; the API's text is exact
        sys.stdout.flush()
    click.echo()


@main.command("profile")
@click.argument("artifact", type=click.Path())
@runtime_options
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1), help="Timed runs per stage.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed runs first.")
@click.option("--steps", default=30, show_default=True, type=click.IntRange(1), help="ODE steps of a generation.")
@click.option("--json", "json_path", default=None, type=click.Path(), help="Write the results as JSON.")
@click.option("--trace", "trace_path", default=None, type=click.Path(),
              help="Write a Chrome trace of one generation and one answer (open it in Perfetto).")
def profile_command(artifact, backend, threads, spin, check_files, runs, warmup, steps, json_path, trace_path):
    """Latency of every stage on this machine: p50 / p90 / min per stage, peak memory."""
    import json

    from jflow.runtime.profile_stages import profile, stage_plan, trace_requests
    for path, what, example in ((json_path, "the --json file", "profile.json"),
                                (trace_path, "the --trace file", "trace.json")):
        if path:
            check_writable_file(path, what, example=example)  # before minutes of profiling
    pipe = load_pipeline(artifact, backend, threads, spin, check_files)
    with click.progressbar(length=len(stage_plan(pipe)) * runs, label="profiling", file=sys.stderr) as bar:
        report = profile(pipe, runs=runs, warmup=warmup, steps=steps, tick=lambda: bar.update(1))
    click.echo(f"{'stage':<24} {'p50 ms':>10} {'p90 ms':>10} {'min ms':>10}")
    for name, s in report["stages"].items():
        click.echo(f"{name:<24} {s['p50_ms']:>10.2f} {s['p90_ms']:>10.2f} {s['min_ms']:>10.2f}")
    click.echo(f"peak host RSS {report['peak_host_rss_mib']:.0f} MiB; backend {report['backend']} "
               f"({report['device']['backend_device']}), {report['precision']}")
    if json_path:
        atomic_write_bytes(json_path, json.dumps(report, indent=2).encode("utf-8"))
        click.echo(f"wrote {json_path}")
    if trace_path:
        trace_requests(pipe, steps).write_chrome_trace(trace_path, {"artifact": str(artifact),
                                                                    "backend": report["backend"]})
        click.echo(f"wrote {trace_path} (open it at ui.perfetto.dev)")


@main.group(cls=_Group)
def reference():
    """Run the PyTorch reference (the oracle) directly, on the CPU."""


@reference.command("generate", cls=cli_legacy.Command)
@MODEL_ARGUMENT
@click.argument("prompt", required=False, metavar="PROMPT")
@LEGACY_MODEL
@generation_options
@click.option("--vae", default=None, help="SDXL VAE folder (default: MODEL/vae).")
@click.pass_context
def reference_generate(ctx, model, prompt, legacy_model, out, steps, cfg_weight, seed, count, vae):
    """Text to image with the reference model MODEL (a checkpoint folder, or 'tiny')."""
    from jflow.runtime.image_io import check_output_images, images_to_files
    from jflow.runtime.requests import check_generation_args
    model, prompt = cli_legacy.shifted(ctx, ["model", "prompt"], legacy_model,
                                       "reference generate --model MODEL PROMPT", "reference generate MODEL PROMPT")
    check_generation_args(steps, cfg_weight)  # fail before loading a model
    paths = check_output_images(out, count)
    ref = _load_reference(model, vae, load_vae=True)
    started = time.perf_counter()
    chunks = len(range(0, count, REFERENCE_CHUNK))
    with click.progressbar(length=steps * chunks, label="sampling", file=sys.stderr) as bar:
        def render(noise):
            return ref.generate([prompt] * len(noise), steps=steps, cfg_weight=cfg_weight, noise=noise,
                                progress=lambda done, total: bar.update(1)).images
        for path in images_to_files(paths, REFERENCE_CHUNK, seed, ref.model.config.latent_size, render):
            click.echo(f"wrote {path}")
    click.echo(f"{count} image(s), {steps} steps in {time.perf_counter() - started:.1f}s", err=True)


@reference.command("chat", cls=cli_legacy.Command)
@MODEL_ARGUMENT
@click.option("--image", required=True, type=click.Path(), help="The picture to ask about.")
@click.argument("question", required=False, metavar="QUESTION")
@LEGACY_MODEL
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(1))
@SAMPLING_OPTIONS
@click.pass_context
def reference_chat(ctx, model, image, question, legacy_model, max_new_tokens, temperature, top_p, seed):
    """Answer QUESTION about an image with the reference model MODEL (a checkpoint folder, or 'tiny')."""
    from jflow.runtime.image_io import load_image
    model, question = cli_legacy.shifted(ctx, ["model", "question"], legacy_model,
                                         "reference chat --model MODEL ... QUESTION",
                                         "reference chat MODEL --image IMG QUESTION")
    picture = load_image(image)  # fail before loading a model
    ref = _load_reference(model, None, load_vae=False)
    from jflow.terminal import terminal_safe
    click.echo(terminal_safe(ref.answer(picture, question, max_new_tokens=max_new_tokens, temperature=temperature,
                                        top_p=top_p, seed=seed)))


main.add_command(serve_command)  # in its own module: the HTTP server is an optional extra

if __name__ == "__main__":
    main()
