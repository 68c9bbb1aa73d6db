"""The artifact contract, torch-free: the manifest's one reader (`manifest.py`) and one writer (`writer.py`),
its rules and typed sections (`contract.py`, `sections.py`), graph I/O specs, the precision policy and the
TensorRT engine identity. Export, quantize and build write through it; runtime, engines and verify read
through it, so what `verify` passes is exactly what the runtime loads. It runs no programs (which TensorRT
and GPU this machine has is `jflow.engines.machine`'s question)."""
