"""Peak host memory (and wall time) of a full-size export, generation and quantize."""
