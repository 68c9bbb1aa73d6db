"""The LLM runner and its KV cache: both forms against the PyTorch LLM, the cache written in place, and
loops that allocate nothing and read back nothing but logits once they run."""

import numpy as np
import pytest
import torch

from jflow.errors import InputError
from jflow.modeling.llm import llm_step
from jflow.runtime.backends import Hook
from jflow.runtime.llm_runner import FusedLlm, PortableLlm, llm_runner
from jflow.runtime.ode import initial_noise
from jflow.runtime.pipeline import Pipeline

FORMS = ["llm_ort", "llm"]


@pytest.fixture(scope="module")
def pipe(tiny_artifact):
    with Pipeline.load(tiny_artifact) as p:
        yield p


def _runner(pipe, form):
    return llm_runner(pipe.backend, pipe.manifest, form)


def _reference(lm, embeds: torch.Tensor, mask=None):
    """Hidden states and per-position logits of one row, as the official model computes them."""
    n = embeds.shape[0]
    mask = torch.ones(1, n, dtype=torch.long) if mask is None else mask
    with torch.no_grad():
        hidden, _, _ = llm_step(lm, embeds[None], mask, torch.arange(n)[None], with_logits=False)
        return hidden[0].numpy(), lm.lm_head(hidden[0]).numpy()


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def test_the_runtime_picks_the_fused_form_on_onnxruntime(pipe):
    assert isinstance(pipe.llm, FusedLlm) and pipe.llm.graph_name == "llm_ort"
    assert isinstance(_runner(pipe, "llm"), PortableLlm) and _runner(pipe, "llm").graph_name == "llm"
    with pytest.raises(InputError, match="unknown LLM form"):
        _runner(pipe, "cuda-graphs")


@pytest.mark.parametrize("form", FORMS)
def test_prefill_decode_and_step_equal_the_reference(pipe, tiny_ref, form):
    lm, llm = tiny_ref.model.language_model, _runner(pipe, form)
    table = torch.from_numpy(np.load(pipe.manifest.path("embeddings/embed_tokens.npy")))
    prompts = [torch.tensor([1, 50, 60, 70, 80, 90]), torch.tensor([1, 33, 44])]  # ragged rows
    cache = llm.new_cache(3, capacity=20)
    # Rows 0, 1: two prompts; row 2: the guidance row of prompt 0 (BOS only, continuing at position 6).
    rows = [table[prompts[0]].numpy(), table[prompts[1]].numpy(), table[prompts[0][:1]].numpy()]
    logits = pipe.backend.download(llm.prefill(cache, rows, next_positions=[6, 3, 6]))
    for r, ids in enumerate(prompts):
        assert _rel(logits[r], _reference(lm, table[ids])[1][-1]) <= 1e-5
    assert cache.lengths.tolist() == [6, 3, 1] and cache.positions.tolist() == [6, 3, 6]

    step = torch.randn(3, 4, table.shape[1], generator=torch.Generator().manual_seed(0)) * 0.1
    for _ in range(2):  # an ODE step writes the same slots every time
        hidden = pipe.backend.download(llm.step(cache, step.numpy()))
    assert cache.lengths.tolist() == [6, 3, 1]
    assert _rel(hidden[0], _reference(lm, torch.cat([table[prompts[0]], step[0]]))[0][-4:]) <= 1e-5
    assert _rel(hidden[1], _reference(lm, torch.cat([table[prompts[1]], step[1]]))[0][-4:]) <= 1e-5
    masked = torch.cat([table[prompts[0]], step[2]])  # the official unconditional row: prompt masked but BOS
    mask = torch.tensor([[1, 0, 0, 0, 0, 0, 1, 1, 1, 1]])
    assert _rel(hidden[2], _reference(lm, masked, mask)[0][-4:]) <= 1e-5

    tokens = [torch.tensor([7]), torch.tensor([9]), torch.tensor([11])]
    logits = pipe.backend.download(llm.decode_one(cache, np.stack([table[t].numpy() for t in tokens])))
    for r, ids in enumerate(prompts):  # the decoded token follows the prompt (the step's slots are reused)
        assert _rel(logits[r], _reference(lm, table[torch.cat([ids, tokens[r]])])[1][-1]) <= 1e-5
    assert cache.lengths.tolist() == [7, 4, 2] and cache.positions.tolist() == [7, 4, 7]


def test_the_fused_cache_is_written_in_place(pipe):
    llm = pipe.llm
    rows = [pipe.embed([1, 5, 6, 7]), pipe.embed([1, 8])]
    cache = llm.new_cache(2, capacity=12)
    buffers = [b.ctypes.data for b in cache.buffers]
    llm.prefill(cache, rows)
    before = [b.copy() for b in cache.buffers]
    hidden = llm.step(cache, np.full((2, 3, llm.hidden_size), 0.1, np.float32))
    assert [b.ctypes.data for b in cache.buffers] == buffers  # the same buffers, written where they live
    for old, new in zip(before, cache.buffers):
        assert np.array_equal(old[0, :, :4], new[0, :, :4]) and np.array_equal(old[1, :, :2], new[1, :, :2])
        assert not np.array_equal(old[0, :, 4:7], new[0, :, 4:7])  # the step's slots, after each prompt
        assert np.array_equal(old[:, :, 7:], new[:, :, 7:])        # nothing past them
    assert llm.step(cache, np.zeros((2, 3, llm.hidden_size), np.float32)) is hidden  # the same output buffer
    llm.decode_one(cache, pipe.embed([[9], [9]]))
    assert [b.ctypes.data for b in cache.buffers] == buffers


def test_a_full_cache_and_positions_past_the_context_are_clear_errors(pipe):
    llm = pipe.llm
    cache = llm.new_cache(1, capacity=3)
    llm.prefill(cache, [pipe.embed([1, 2])])
    llm.decode_one(cache, pipe.embed([[3]]))
    with pytest.raises(InputError, match="holds 3 tokens"):
        llm.decode_one(cache, pipe.embed([[4]]))
    with pytest.raises(InputError, match="empty cache"):
        llm.prefill(cache, [pipe.embed([1])])
    with pytest.raises(InputError, match="max_context 1024"):
        llm.new_cache(1, capacity=1025)
    with pytest.raises(InputError, match="next_positions"):  # the rotary table has max_context rows
        llm.prefill(llm.new_cache(1, capacity=4), [pipe.embed([1, 2])], next_positions=[1025])
    cache = llm.new_cache(1, capacity=8)
    llm.prefill(cache, [pipe.embed([1, 2])], next_positions=[1022])
    llm.decode_one(cache, pipe.embed([[3]]))  # position 1022: the last one there is
    with pytest.raises(InputError, match="positions up to 1024"):
        llm.step(cache, np.zeros((1, 2, llm.hidden_size), np.float32))


class Counting(Hook):
    """Counts what the loops ask of the real ONNX Runtime backend between two marks (a hook on its tensors)."""

    def __init__(self):
        self.counts = {"alloc": 0, "download": 0, "write": 0}

    def tensor(self, kind):
        self.counts[kind] += 1

    def mark(self) -> dict:
        seen, self.counts = self.counts, {k: 0 for k in self.counts}
        return seen


@pytest.mark.parametrize("form", FORMS)
def test_loops_allocate_nothing_and_read_back_only_logits(tiny_artifact, photo, form):
    counting = Counting()
    pipe = Pipeline.load(tiny_artifact, llm_form=form, hooks=[counting])
    assert pipe.llm.graph_name == form
    per_step = []
    pipe.generate_latents("a red cube", steps=4, seed=0, progress=lambda k, n: per_step.append(counting.mark()))
    assert per_step[0]["alloc"] > 0  # the first step makes its buffers (the llm step's outputs) ...
    assert all(c == {"alloc": 0, "download": 0, "write": 0} for c in per_step[1:]), per_step  # ... then nothing

    counting.mark()  # (generate_latents read its final latent after the last step)
    per_token = []
    for _ in pipe.answer_token_ids(photo, "what is in this picture?", max_new_tokens=6):
        per_token.append(counting.mark())
    # Token 1 comes from the prefill (after reading SigLIP's image embeddings); every later one is one decode
    # step: its inputs written into buffers made at the first decode step, and one read of the logits.
    assert per_token[0]["download"] == 2 and all(c["download"] == 1 for c in per_token[1:]), per_token
    assert all(c["alloc"] == 0 and c["write"] <= 4 for c in per_token[2:]), per_token
    pipe.close()


@pytest.fixture(scope="module")
def gqa_tied(tmp_path_factory):
    """A variant with grouped-query attention (2 KV heads for 4) and tied embeddings, exported once."""
    from jflow.artifact.spec import Limits
    from jflow.export.artifact import export_artifact
    from jflow.modeling import build_tiny
    ref = build_tiny(seed=3, kv_heads=2, tie_word_embeddings=True)
    path = export_artifact(ref, tmp_path_factory.mktemp("gqa") / "art", log=lambda _: None,
                           limits=Limits(max_batch=2, max_context=800, max_new_tokens=8))
    return ref, path


@pytest.mark.parametrize("form", FORMS)
def test_grouped_query_attention_and_tied_embeddings(gqa_tied, photo, form):
    ref, path = gqa_tied
    with Pipeline.load(path, llm_form=form) as pipe:
        assert pipe.llm.kv_heads == 2 and pipe.llm.graph_name == form
        noise = initial_noise(4, 2, 48)
        latents = pipe.generate_latents(["a cat", "a robot arm picks up a blue ball"], steps=2, noise=noise)
        expected = ref.generate(["a cat", "a robot arm picks up a blue ball"], steps=2, noise=noise)
        assert np.abs(latents - expected.latents).max() <= 1e-4
        from jflow.modeling.understanding import answer_tokens
        assert pipe.answer_tokens(photo, "what is this?", max_new_tokens=6) == \
            answer_tokens(ref, photo, "what is this?", max_new_tokens=6)


def test_bound_tensors_keep_the_contract_shapes(pipe):
    # total_sequence_length is a scalar in the contract: every phase must feed it as one.
    llm = pipe.llm
    cache = llm.new_cache(2, capacity=12)
    llm.prefill(cache, [pipe.embed([1, 5, 6]), pipe.embed([1])], next_positions=[3, 3])
    llm.step(cache, np.zeros((2, 4, llm.hidden_size), np.float32))
    llm.decode_one(cache, pipe.embed([[7], [7]]))
    for binding in (cache.steps[4], cache.decode):
        assert binding.feeds["total_sequence_length"].shape == () and binding.feeds["seqlens_k"].shape == (2,)
