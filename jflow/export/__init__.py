"""ONNX export of the five JanusFlow graphs (siglip, llm, gen_encoder, gen_decoder, vae_decoder)."""
