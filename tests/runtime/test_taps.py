"""A runner asked to tap intermediate tensors hands their values to the hooks and computes what it computed."""

from __future__ import annotations

import numpy as np
import pytest

from jflow.calibration.observe import gemm_inputs
from jflow.errors import InputError, JFlowError
from jflow.runtime.backends import Hook
from jflow.runtime.pipeline import Pipeline


class Taps(Hook):
    def __init__(self):
        self.seen = []

    def tapped(self, runner, values):
        self.seen.append((runner.name, {k: np.array(v) for k, v in values.items()}))


def _run(pipe):
    latents = pipe.generate_latents("a red cube", steps=2, seed=5)
    tokens = pipe.answer_tokens(np.full((64, 64, 3), 120, np.uint8), "What is it?", max_new_tokens=3)
    return latents, tokens


@pytest.mark.parametrize("form", ["llm_ort", "llm"])
def test_tapping_the_llm_changes_no_output_and_reports_every_call(tiny_artifact, form):
    with Pipeline.load(tiny_artifact, llm_form=form, backend="onnxruntime") as pipe:
        plain = _run(pipe)
    taps = Taps()
    tensors = gemm_inputs(tiny_artifact / "onnx" / f"{form}.onnx")
    with Pipeline.load(tiny_artifact, llm_form=form, backend="onnxruntime", hooks=[taps]) as pipe:
        pipe.llm.graph.tap(tensors)
        tapped = _run(pipe)
    np.testing.assert_array_equal(plain[0], tapped[0])
    assert plain[1] == tapped[1]
    # a generation: prefill + 2 steps; an answer: prefill + 2 decode steps (the third token needs no call)
    calls = [values for name, values in taps.seen if name == form]
    assert len(calls) == 6, len(calls)
    hidden = pipe.manifest.io(form)["inputs_embeds"]["shape"][-1]
    for values in calls:
        assert set(values) == set(tensors)
        assert all(np.isfinite(v).all() and v.shape[-1] >= hidden for v in values.values())
    assert calls[1][tensors[0]].shape[1] == pipe.num_gen_tokens + 1  # an ODE step: 577 tokens (tiny: fewer)


def test_a_tensor_the_graph_does_not_compute_is_refused_in_one_line(tiny_artifact):
    with Pipeline.load(tiny_artifact, llm_form="llm_ort", backend="onnxruntime") as pipe:
        pipe.llm.graph.tap(["no_such_tensor"])
        with pytest.raises(JFlowError, match="computes no tensor 'no_such_tensor' to tap"):
            pipe.generate_latents("a red cube", steps=1, seed=0)


def test_tapping_after_the_graph_is_open_is_refused(tiny_artifact):
    with Pipeline.load(tiny_artifact, llm_form="llm_ort", backend="onnxruntime") as pipe:
        pipe.generate_latents("a red cube", steps=1, seed=0)
        with pytest.raises(JFlowError, match="tap its tensors before its first call"):
            pipe.llm.graph.tap(gemm_inputs(tiny_artifact / "onnx" / "llm_ort.onnx"))


def test_a_backend_that_cannot_tap_says_so():
    from jflow.runtime.backends import BaseRunner, HostTensors

    class Plain(HostTensors):
        name = "plain"
    runner = BaseRunner(Plain(), "g", {"inputs": [], "outputs": []})
    with pytest.raises(InputError, match="the plain backend cannot tap intermediate tensors"):
        runner.tap(["x"])
