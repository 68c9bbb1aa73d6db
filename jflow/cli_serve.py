"""`jflow-export serve`: the local OpenAI-compatible HTTP server (jflow.serving, the optional `serve` extra)."""

from __future__ import annotations

import click

from jflow.cli_options import load_pipeline, runtime_options
from jflow.cli_types import FiniteFloat
from jflow.runtime.image_io import MAX_IMAGE_PIXELS
from jflow.serving.limits import MIB, ServeLimits  # stdlib only: the extra is not needed to parse options


@click.command("serve")
@click.argument("artifact", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Only this device can connect by default; 0.0.0.0 serves every network "
                   "interface (add --api-key).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--queue", default=ServeLimits.queue, show_default=True, type=click.IntRange(0),
              help="Requests that may wait behind the running one; more get 503 with Retry-After.")
@click.option("--api-key", default=None, envvar="JFLOW_API_KEY",
              help="Require 'Authorization: Bearer KEY' on /v1/* (or set JFLOW_API_KEY, which keeps it out of ps).")
@click.option("--max-body-mib", default=ServeLimits.max_body_bytes // MIB, show_default=True,
              type=click.IntRange(1, 1024),
              help="Largest request body (a base64 picture is 4/3 of its file); larger ones get 413.")
@click.option("--max-image-pixels", default=ServeLimits.max_image_pixels, show_default=True,
              type=click.IntRange(1, MAX_IMAGE_PIXELS),
              help="Largest picture (width x height), checked before decoding; larger ones get 413.")
@click.option("--grace", default=30.0, show_default=True, type=FiniteFloat(0),
              help="Seconds a running request may take to finish after SIGTERM before it is cancelled.")
@runtime_options
def serve_command(artifact, host, port, queue, api_key, max_body_mib, max_image_pixels, grace, backend, threads, spin,
                  check_files):
    """Serve ARTIFACT over HTTP with OpenAI's API (chat with a picture, image generation) and a web page at /."""
    from pathlib import Path

    from jflow.artifact.manifest import Manifest
    try:
        from jflow.serving.server import serve
    except ImportError as exc:
        raise click.ClickException(f"serve needs the serve extra ({exc.name} is missing): "
                                   "pip install -c constraints-cpu.txt -e \".[serve]\"") from None
    if api_key is not None and not api_key.strip():
        raise click.BadParameter("the key is empty", param_hint="'--api-key'")
    Manifest.load(artifact, check_files=False)  # a wrong folder fails here, before the port is taken
    limits = ServeLimits(queue=queue, max_body_bytes=max_body_mib * MIB, max_image_pixels=max_image_pixels)
    # Every graph opened at start-up from the checked files: no request opens one later, and /health says
    # ready only when all of them load.
    def load():
        return load_pipeline(artifact, backend, threads, spin, check_files).preload()
    serve(load, Path(artifact).resolve().name,
          host, port, limits, api_key=api_key, grace_s=grace, say=lambda line: click.echo(line, err=True))

