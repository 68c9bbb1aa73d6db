"""Calibration data and quantized graphs (INT8 QDQ, INT4 weight-only)."""

SMOOTH_ALPHA = 0.8  # SmoothQuant migration strength for the LLM's int8 GEMMs (see smooth.py); 0 turns it off
FLOAT_DOWN = True  # int8: the LLM's MLP down projections stay float (benchmarks/results/quant_methods.json)
