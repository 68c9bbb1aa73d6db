"""Calibration data and quantized graphs (INT8 QDQ, INT4 weight-only)."""

SMOOTH_ALPHA = 0.5  # SmoothQuant migration strength for the LLM's int8 GEMMs (see smooth.py); 0 turns it off
