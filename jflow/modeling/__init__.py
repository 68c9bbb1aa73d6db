"""PyTorch reference of JanusFlow-1.3B: the oracle every exported graph is checked against.

    from jflow.modeling import load_janusflow
    ref = load_janusflow("JanusFlow-1.3B")          # folder with config.json, model.safetensors, vae/
    result = ref.generate("a red cube", seed=0)      # result.images: [1, 384, 384, 3] uint8
    text = ref.answer("photo.jpg", "What is in this picture?")
"""

from jflow.modeling.checkpoint import load_janusflow, save_checkpoint
from jflow.modeling.config import JanusFlowConfig, read_config
from jflow.modeling.janusflow import JanusFlow
from jflow.modeling.reference import JanusFlowReference
from jflow.modeling.tiny import build_tiny, write_tiny_checkpoint

__all__ = ["JanusFlow", "JanusFlowConfig", "JanusFlowReference", "build_tiny", "load_janusflow",
           "read_config", "save_checkpoint", "write_tiny_checkpoint"]
