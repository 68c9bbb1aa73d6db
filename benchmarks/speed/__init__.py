"""Speed: our runtime against PyTorch eager, ONNX Runtime GenAI, the code before a change, and the quantized
artifacts against fp32; start-up time. Every measurement in a fresh process, the sides interleaved."""
