"""`jflow-export triton`: a Triton Inference Server model repository over an artifact.

- `repository.py`: writes the repository (one model per graph plus the two Python models, or the Python
  models alone for `--variant local`), staged and published in one rename.
- `configs.py`: each model's config.pbtxt, built as tritonclient's ModelConfig protobuf.
- `model.py`: the Python-backend models (generate, answer) that run jflow's own loops inside the server;
  with `--variant bls` their graphs are the repository's other models, called through BLS
  (the runner in `bls_backend.py`).

Writing a repository needs the `triton` extra (tritonclient); the server side needs only jflow's runtime.
"""
