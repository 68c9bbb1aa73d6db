"""Engine builds from an exported ONNX artifact: TensorRT plans and ORT-optimized graphs."""
