"""The LLM's minmax statistics are taken in the calibration run itself, and equal those measured by running
the graph again over recorded samples (what quantize did before: at full size half of its time)."""

from __future__ import annotations

import numpy as np

from jflow.calibration.collect import collect_samples
from jflow.calibration.data import calibration_set
from jflow.calibration.observe import gemm_inputs
from jflow.calibration.quantize import quantize_artifact
from jflow.calibration.ranges import load_observed, observe


def test_observed_statistics_equal_those_of_the_recorded_samples(tiny_artifact, photos, tmp_path):
    cset = calibration_set(2, photos)
    recorded = collect_samples(tiny_artifact, cset, tmp_path / "a", steps=3, log=lambda _: None)
    observed_in_run = collect_samples(tiny_artifact, cset, tmp_path / "b", steps=3, log=lambda _: None,
                                      observe_llm=True)
    tensors = gemm_inputs(tiny_artifact / "onnx" / "llm_ort.onnx")
    reference = observe(tiny_artifact / "onnx" / "llm_ort.onnx", recorded / "llm_ort", tensors=tensors,
                        channels=tensors)
    seen = load_observed(observed_in_run, "llm_ort")
    assert not any(observed_in_run.joinpath("llm_ort").glob("*.npz"))  # nothing saved to run again
    assert set(seen.channels) == set(tensors)
    for t in tensors:
        np.testing.assert_allclose(seen.channels[t], reference.channels[t], rtol=1e-5, err_msg=t)
        np.testing.assert_allclose(seen.ranges[t], reference.ranges[t], rtol=1e-5, err_msg=t)
    for graph in ("gen_encoder", "gen_decoder", "siglip"):  # the other graphs' samples are as before
        a, b = sorted((recorded / graph).glob("*.npz")), sorted((observed_in_run / graph).glob("*.npz"))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            with np.load(x) as p, np.load(y) as q:
                assert p.files == q.files and all(np.array_equal(p[k], q[k]) for k in p.files)


def test_int8_quantize_runs_no_llm_graph_over_samples(tiny_artifact, photos, tmp_path, monkeypatch):
    import jflow.calibration.ranges as ranges
    probed = []
    real = ranges.probe

    def counted(source, *args, **kwargs):
        probed.append(source.name)
        return real(source, *args, **kwargs)
    monkeypatch.setattr(ranges, "probe", counted)
    quantize_artifact(tiny_artifact, tmp_path / "int8", "int8", calib=photos, samples=2, steps=3,
                      cache=tmp_path / "cache", log=lambda _: None)
    assert probed and not [s for s in probed if s.startswith("llm")], probed
