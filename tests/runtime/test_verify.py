"""`verify`: graphs of a hand-made artifact run on onnxruntime against their reference outputs."""

import numpy as np
import pytest

from handmade_artifact import save_double_model, write_manifest
from jflow.errors import InputError
from jflow.runtime.verify import TOLERANCES, compare, format_table, verify_artifact

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

B = np.arange(4, dtype=np.float32)


def _save_model(path, input_name="x", nan=False):
    save_double_model(path, scale=np.nan if nan else 2.0, input_name=input_name)


def _write_manifest(root, precision="fp32"):
    write_manifest(root, precision=precision)


def _write_reference(root, y_scale=1.0, x_dtype=np.float32):
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    y = (x * 2 + B) * np.float32(y_scale)
    (root / "reference").mkdir(exist_ok=True)
    np.savez(root / "reference" / "double.npz", **{"in.x": x.astype(x_dtype), "out.y": y})


@pytest.fixture
def artifact(tmp_path):
    root = tmp_path / "art"
    _save_model(root / "onnx" / "double.onnx")
    _write_reference(root)
    _write_manifest(root)
    return root


def test_good_artifact_passes(artifact):
    report = verify_artifact(artifact)
    assert report.ok and report.error is None and len(report.rows) == 1
    row = report.rows[0]
    assert (row.graph, row.output, row.passed, row.nonfinite) == ("double", "y", True, 0)
    assert row.rel_l2 <= 1e-7 and row.cosine > 0.9999999
    table = format_table(report)
    assert "PASS" in table and "FAIL" not in table
    assert table.splitlines()[-1] == "1 passed, 0 failed"
    for col in ("graph", "output", "max abs err", "rel L2", "cosine", "NaN/Inf", "tolerance", "result"):
        assert col in table


def test_inputs_are_cast_to_the_session_dtype(artifact):
    _write_reference(artifact, x_dtype=np.float64)
    _write_manifest(artifact)
    assert verify_artifact(artifact).ok


def test_perturbed_reference_fails_on_numerics(artifact):
    _write_reference(artifact, y_scale=1.001)  # rel L2 1e-3 > fp32's 1e-4
    _write_manifest(artifact)  # hashes regenerated: only the numbers are wrong
    report = verify_artifact(artifact)
    assert report.error is None and not report.ok
    row = report.rows[0]
    assert not row.passed and row.rel_l2 == pytest.approx(1e-3, rel=1e-2) and "rel L2 over tolerance" in row.note
    table = format_table(report)
    assert "FAIL" in table and table.splitlines()[-1] == "0 passed, 1 failed"


def test_fp16_tolerance_is_used_for_fp16_artifacts(artifact):
    _write_reference(artifact, y_scale=1.001)
    _write_manifest(artifact, precision="fp16")
    report = verify_artifact(artifact)
    assert report.ok and report.precision == "fp16"
    assert report.rows[0].tolerance == f"rel_l2<={TOLERANCES['fp16']['rel_l2']:.0e} cos>=0.999"
    _write_reference(artifact, y_scale=1.05)  # 5e-2 is over fp16's 2e-2 as well
    _write_manifest(artifact, precision="fp16")
    assert not verify_artifact(artifact).ok


def test_swapped_graph_file_fails_with_a_clear_note(artifact):
    _save_model(artifact / "onnx" / "double.onnx", input_name="pixel_values")
    _write_manifest(artifact)
    report = verify_artifact(artifact)
    assert not report.ok and report.error is None
    row = report.rows[0]
    assert not row.passed and row.output == "-"
    assert "does not match the manifest" in row.note and "pixel_values" in row.note and "swapped" in row.note
    assert row.note in format_table(report)


def test_unloadable_graph_is_a_fail_row(artifact):
    (artifact / "onnx" / "double.onnx").write_bytes(b"not an onnx model")
    _write_manifest(artifact)
    report = verify_artifact(artifact)
    assert not report.ok and "cannot open onnx/double.onnx" in report.rows[0].note


def test_nan_in_output_fails(artifact):
    _save_model(artifact / "onnx" / "double.onnx", nan=True)
    _write_manifest(artifact)
    report = verify_artifact(artifact)
    row = report.rows[0]
    assert not report.ok and not row.passed and row.nonfinite == 8 and "NaN/Inf" in row.note
    assert "0 passed, 1 failed" in format_table(report)


def test_sha_mismatch_is_a_failed_report_naming_the_file(artifact):
    with open(artifact / "reference" / "double.npz", "ab") as f:
        f.write(b"junk")
    report = verify_artifact(artifact)
    assert not report.ok and report.rows == []
    assert "reference/double.npz: altered (sha256 mismatch)" in report.error
    table = format_table(report)
    assert "reference/double.npz" in table and "artifact not verified" in table.splitlines()[-1]


def test_missing_artifact_is_a_failed_report(tmp_path):
    report = verify_artifact(tmp_path / "missing")
    assert not report.ok and "not a jflow artifact" in report.error


def test_bad_backend_and_graph_names(artifact):
    with pytest.raises(InputError, match="tensorrt.*supported: onnxruntime"):
        verify_artifact(artifact, backend="tensorrt")
    with pytest.raises(InputError, match="'llm'.*double"):
        verify_artifact(artifact, graphs=["llm"])
    assert verify_artifact(artifact, graphs=["double"]).ok


def test_compare_metrics():
    ref = np.array([3.0, 4.0], dtype=np.float32)
    max_abs, rel, cos, bad = compare(ref * 1.1, ref)
    assert max_abs == pytest.approx(0.4) and rel == pytest.approx(0.1) and cos == pytest.approx(1.0) and bad == 0
    assert compare(np.array([np.nan, 1.0]), ref)[3] == 1
    assert compare(np.zeros(2), np.zeros(2))[1:3] == (0.0, 1.0)
