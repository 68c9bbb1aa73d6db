"""Quantization studies on real trained weights: accuracy of the artifacts, what each method buys, where
the int8 error comes from, GPTQ, and verify's bounds on real weights."""
