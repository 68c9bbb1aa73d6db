"""TensorRT engine build, kept thin on polygraphy's loaders. Needs TensorRT and an NVIDIA GPU.

Strongly typed networks: the precision comes from the graph (fp16 graphs with fp32 islands), so no
precision flags are set (TensorRT 10 deprecated weak typing; TensorRT 11 removed the flags).
"""

from __future__ import annotations

import gc
from pathlib import Path


def build_plan(onnx_path: Path, profiles: list[dict], workspace_mib: int | None = None,
               opt_level: int | None = None, timing_cache: Path | None = None) -> bytes:
    """Serialized engine bytes for one graph with the given optimization profiles."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    trt_profiles = []
    for profile in profiles:
        p = Profile()
        for name, (low, opt, high) in profile["shapes"].items():
            p.add(name, min=low, opt=opt, max=high)
        trt_profiles.append(p)
    config = CreateConfig(
        profiles=trt_profiles,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace_mib << 20} if workspace_mib else None,
        builder_optimization_level=opt_level,
        load_timing_cache=str(timing_cache) if timing_cache is not None and timing_cache.exists() else None)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    build = EngineBytesFromNetwork(network, config=config,
                                   save_timing_cache=str(timing_cache) if timing_cache is not None else None)
    plan = bytes(build())
    del build, network, config
    gc.collect()  # one component at a time: release the builder's memory before the next graph
    return plan
