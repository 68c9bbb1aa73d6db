"""`jflow-export serve`: an OpenAI-compatible HTTP server and a small web page over one `Pipeline`.

Needs the `serve` extra (Starlette + uvicorn): `pip install -e ".[serve]"`. jflow.runtime never imports
this package, so a device that only embeds the runtime does not need it.

- `server.py`: bind, run uvicorn, stop cleanly on SIGTERM.
- `http_app.py`: the routes; `openai_schema.py` / `openai_responses.py`: OpenAI's request and response shapes;
  `data_url.py`: pictures sent inline; `api_errors.py`: OpenAI's error JSON.
- `request_queue.py`: the worker thread that owns the Pipeline, behind a bounded FIFO queue;
  `pipeline_work.py`: what a job does there.
- `static/index.html`: the page (no build step, no CDN).
- `triton/`: `jflow-export triton`, a Triton Inference Server model repository (the `triton` extra, not
  `serve`; the server's Python models need only jflow's runtime).
"""
