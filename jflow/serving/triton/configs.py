"""Triton model configurations, built as tritonclient's ModelConfig protobuf from the artifact's manifest and
written as config.pbtxt (protobuf text format), so a field Triton does not know cannot be written.

Graph models take the graph contract's names, dtypes and dims. Triton batches a model only when
max_batch_size > 0: it then concatenates requests whose other dims match along the first axis and
splits every output by the same row counts. That is right only where every input and output starts
with the graph's independent `batch` axis: siglip, vae_decoder, and the portable llm (each row has
its own attention mask and positions, so rows of two requests never mix). gen_encoder emits 2*batch
rows (cond, then uncond) and gen_decoder takes dt and cfg_weight of shape [1], so they are not batched.
"""

from __future__ import annotations

from jflow.errors import JFlowError
from jflow.serving.triton.model import DECOUPLED, MODEL_NAMES, TASKS

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
PLATFORMS = {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx"}
MODEL_FILES = {"tensorrt": "model.plan", "onnxruntime": "model.onnx"}
BATCH_AXIS = "batch"


def model_config_pb2():
    """tritonclient's model_config_pb2 module, or one clear line saying how to install it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise JFlowError(f"writing Triton configs needs tritonclient ({exc}); install it with "
                         "pip install -e '.[triton]'") from None
    return model_config_pb2


def batches_rows(entry: dict) -> bool:
    """Whether Triton may concatenate requests of this graph along the first axis (see the module doc)."""
    tensors = entry["inputs"] + entry["outputs"]
    return all(t["shape"] and t["shape"][0] == BATCH_AXIS for t in tensors)


def max_batch(entry: dict, profiles: list[dict] | None) -> int:
    """The largest batch the graph takes: its manifest range, and for a TensorRT plan also its profiles."""
    largest = int(entry["ranges"][BATCH_AXIS]["max"])
    if profiles:
        largest = min(largest, max(shapes[2][0] for p in profiles for shapes in p["shapes"].values()))
    return largest


def graph_config(name: str, entry: dict, engine: str, instances: int, max_queue_delay_us: int,
                 profiles: list[dict] | None = None):
    """The ModelConfig of one graph run by Triton's TensorRT or ONNX Runtime backend. `profiles`: the plan's
    optimization profiles (TensorRT), all offered to every instance so Triton picks the one a request fits."""
    pb = model_config_pb2()
    config = pb.ModelConfig(name=name, platform=PLATFORMS[engine])
    batched = batches_rows(entry)
    if batched:
        config.max_batch_size = max_batch(entry, profiles)
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    for side, field in (("inputs", config.input), ("outputs", config.output)):
        for tensor in entry[side]:
            dims = tensor["shape"][1:] if batched else tensor["shape"]
            field.add(name=tensor["name"], data_type=TRITON_DTYPES[tensor["dtype"]],
                      dims=[d if isinstance(d, int) else -1 for d in dims])
    # TensorRT plans need a GPU; ONNX Runtime models take the GPU where the server has one, else the CPU.
    kind = "KIND_GPU" if engine == "tensorrt" else "KIND_AUTO"
    group = config.instance_group.add(count=instances, kind=kind)
    group.profile.extend(str(i) for i in range(len(profiles or [])))
    return config


def python_config(task: str, runner: str, instances: int):
    """The ModelConfig of janusflow_generate or janusflow_answer (Python backend, see jflow.serving.triton.model)."""
    pb = model_config_pb2()
    inputs, outputs = TASKS[task]
    config = pb.ModelConfig(name=MODEL_NAMES[task], backend="python", max_batch_size=0)
    for name, (kind, required) in inputs.items():
        config.input.add(name=name, data_type=kind, dims=[1], optional=not required)
    for name, kind in outputs.items():
        config.output.add(name=name, data_type=kind, dims=[1])
    config.instance_group.add(count=instances, kind="KIND_CPU")  # the loop runs on the host; graphs run where Triton put them
    config.parameters["task"].string_value = task
    config.parameters["runner"].string_value = runner
    if task in DECOUPLED:
        config.model_transaction_policy.decoupled = True
    return config


def to_pbtxt(config) -> str:
    from google.protobuf import text_format
    return text_format.MessageToString(config)
