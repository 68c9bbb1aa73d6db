"""jflow: compile DeepSeek JanusFlow-1.3B to ONNX / TensorRT and run it on NVIDIA devices.

Importing the top-level package is cheap and torch-free; the PyTorch side lives in
`jflow.modeling` and `jflow.export`, the device side in `jflow.runtime`.
"""

__version__ = "0.1.0"
