"""Calibration data and quantized graphs (INT8 QDQ, INT4 weight-only)."""

METHODS = ("minmax", "entropy", "percentile")  # how int8 activation ranges are calibrated
SMOOTH_ALPHA = 0.8  # SmoothQuant migration strength for the LLM's int8 GEMMs (see smooth.py); 0 turns it off
KEEP_FLOAT = ("down", "o")  # int8: LLM GEMMs kept float by role (llm_graph.FLOAT_GEMMS; results/int8_float_choice.json)
# int8, --keep-float measured: the share of the layers' GEMM weights the measured choice may keep float (float_choice)
FLOAT_BUDGET = 0.2
