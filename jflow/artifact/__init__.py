"""The artifact contract, torch-free: the manifest's one reader and writer, graph I/O specs, the precision
policy and the TensorRT engine identity. Export writes through it; runtime, engines and verify read
through it, so what `verify` passes is exactly what the runtime loads."""
