"""Calibration samples read back as the graph saw them, minus what the runtime never reads."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from jflow.calibration.collect import SampleReader, expand_cache, split_rows


def _samples_and_rows(folder):
    """Each recorded sample of `folder` with what split_rows makes of it."""
    for file in sorted(folder.glob("*.npz")):
        with np.load(file) as z:
            sample = {k: z[k] for k in z.files}
        yield sample, split_rows(sample)


def test_padded_llm_ort_samples_split_into_rows_of_their_own_tokens(tiny_artifact, recorded_samples):
    # A guidance prefill pads the unconditional row (BOS alone) to the prompt's length; GroupQueryAttention
    # leaves padded query rows unwritten, so their activations are garbage (NaN at times) and must not be
    # calibrated on. Each row, read alone, must give exactly the batched call's outputs for its own tokens.
    session = ort.InferenceSession(str(tiny_artifact / "onnx" / "llm_ort.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    folder = recorded_samples / "llm_ort"
    padded = 0
    for sample, rows in _samples_and_rows(folder):
        assert len(rows) == len(sample["query_seqlens"])
        if len(set(sample["query_seqlens"].tolist())) == 1:
            continue
        padded += 1
        batched = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {k: v for k, v in expand_cache(sample).items() if k in names})))
        for b, row in enumerate(rows):
            new = int(sample["query_seqlens"][b])
            assert row["inputs_embeds"].shape[:2] == (1, new)
            hidden, logits = session.run(["hidden_states", "logits"], {k: v for k, v in expand_cache(row).items()
                                                                      if k in names})
            assert np.isfinite(hidden).all()
            np.testing.assert_allclose(hidden[0], batched["hidden_states"][b, :new], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(logits[0], batched["logits"][b], rtol=1e-4, atol=1e-5)
    assert padded, "the calibration run recorded no padded (guidance prefill) sample"
    reader = SampleReader(folder, names)
    count = sum(1 for _ in iter(reader.get_next, None))
    assert count == sum(len(np.load(f)["query_seqlens"]) for f in folder.glob("*.npz"))


def test_padded_portable_llm_samples_split_into_rows_of_their_own_tokens(tiny_artifact, portable_samples):
    # The portable form computes padded query rows from masked-out inputs: not garbage, but not tokens the
    # runtime reads either. Each row, read alone with only its real cache slots and tokens, must give the
    # batched call's hidden states for those tokens (and its logits where its last token is real).
    session = ort.InferenceSession(str(tiny_artifact / "onnx" / "llm.onnx"), providers=["CPUExecutionProvider"])
    padded = 0
    for sample, rows in _samples_and_rows(portable_samples / "llm"):
        assert len(rows) == len(sample["attention_mask"])
        if sample["attention_mask"].all():
            continue
        padded += 1
        batched = dict(zip([o.name for o in session.get_outputs()], session.run(None, sample)))
        new = sample["attention_mask"][:, -sample["inputs_embeds"].shape[1]:].astype(bool)
        for b, row in enumerate(rows):
            assert row["attention_mask"].all() and row["inputs_embeds"].shape[1] == new[b].sum()
            hidden, logits = session.run(["hidden_states", "logits"], row)
            np.testing.assert_allclose(hidden[0], batched["hidden_states"][b, new[b]], rtol=1e-4, atol=1e-5)
            if new[b, -1]:
                np.testing.assert_allclose(logits[0], batched["logits"][b], rtol=1e-4, atol=1e-5)
    assert padded, "the calibration run recorded no padded (guidance) sample"


def test_the_sample_reader_is_sized_and_sliceable_as_strided_calibration_reads_it(recorded_samples):
    folder = recorded_samples / "llm_ort"
    names = ["inputs_embeds", "seqlens_k"]
    reader = SampleReader(folder, names)
    straight = list(iter(reader.get_next, None))
    assert len(reader) == len(straight) > len(list(folder.glob("*.npz")))  # guidance samples split in two
    sliced = []
    for start in range(len(reader)):
        reader.set_range(start_index=start, end_index=start + 1)
        sliced += list(iter(reader.get_next, None))
    assert len(sliced) == len(straight)
    for a, b in zip(sliced, straight):
        assert all(np.array_equal(a[k], b[k]) for k in names)
