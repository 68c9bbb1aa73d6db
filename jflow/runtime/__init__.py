"""The device-side runtime: numpy + onnxruntime/tensorrt + tokenizers + pillow, never torch.

The PyTorch reference (`jflow.modeling`) imports the host-side pieces below (prompt templates,
preprocessing, time grid, noise, token sampling) so both sides run exactly the same host code.
A test enforces that importing this package pulls in no torch, transformers or diffusers.
"""
