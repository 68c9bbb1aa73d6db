"""Calibration data and quantized graphs (INT8 QDQ, INT4 weight-only)."""
