"""`verify`: run every graph of an artifact on its stored PyTorch reference inputs and compare the outputs.

Torch-free (numpy + onnxruntime). The artifact is first checked file by file (sha256); then each graph
that has `reference/<graph>.npz` is opened, fed the `in.<name>` arrays and its outputs compared with the
`out.<name>` arrays. Graphs may have more outputs than the reference holds; only those present compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jflow.errors import InputError, JFlowError
from jflow.runtime.manifest import ArtifactError, Manifest

SUPPORTED_BACKENDS = ("onnxruntime",)

# Pass thresholds per artifact precision, for floating-point outputs (integer and bool outputs must
# match exactly). A row passes when
#   rel_l2 = ||ours - ref||_2 / max(||ref||_2, 1e-12) <= "rel_l2"   and
#   cosine(ours, ref) over the flattened arrays in float64 >= "cosine"   and
#   ours holds no NaN/Inf (always a FAIL, whatever the metrics say).
# fp32: ONNX vs PyTorch differ only by kernel order and fusion (~1e-6 relative); 1e-4 leaves room for
#       long reductions (the 24-layer LLM, the VAE) while catching any real graph error.
# fp16: one fp16 rounding is ~5e-4 relative; after 24 layers a few 1e-3 is normal, 2e-2 is the bound a
#       correct fp16 build stays under (the fp32 islands of the precision policy keep it there).
# max_abs is reported for reading, never gated: its scale depends on the tensor.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"rel_l2": 1e-4, "cosine": 0.99999},
    "fp16": {"rel_l2": 2e-2, "cosine": 0.999},
}

# onnxruntime's type strings -> numpy dtypes (inputs are cast to what the session expects).
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_MANIFEST_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)"}


@dataclass
class VerifyRow:
    """One compared output (or one graph that could not be compared: output '-', metrics None)."""

    graph: str
    output: str
    max_abs: float | None
    rel_l2: float | None
    cosine: float | None
    nonfinite: int | None  # NaN/Inf elements in our output
    tolerance: str
    passed: bool
    note: str = ""


@dataclass
class VerifyReport:
    """The result of `verify_artifact`. `ok` is the single verdict; `error` is set when the artifact
    itself could not be trusted (missing, wrong schema, altered files) and no graph was run."""

    artifact: Path
    backend: str
    precision: str | None = None
    rows: list[VerifyRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # graphs without a reference file
    error: str | None = None

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.rows)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.rows) and self.failed == 0


def compare(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, int]:
    """(max_abs, rel_l2, cosine, nonfinite count of `ours`) in float64 over the flattened arrays."""
    a = np.asarray(ours).astype(np.float64).ravel()
    b = np.asarray(ref).astype(np.float64).ravel()
    nonfinite = int(a.size - np.count_nonzero(np.isfinite(a)))
    if a.size == 0:
        return 0.0, 0.0, 1.0, nonfinite
    with np.errstate(all="ignore"):
        diff = a - b
        max_abs = float(np.max(np.abs(diff)))
        rel_l2 = float(np.linalg.norm(diff) / max(float(np.linalg.norm(b)), 1e-12))
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if na == 0.0 and nb == 0.0:
            cosine = 1.0
        elif na == 0.0 or nb == 0.0:
            cosine = 0.0
        else:
            cosine = float(np.dot(a, b) / (na * nb))
    return max_abs, rel_l2, cosine, nonfinite


def _tolerance_text(tol: dict[str, float]) -> str:
    return f"rel_l2<={tol['rel_l2']:.0e} cos>={tol['cosine']:g}"


def _judge(graph: str, name: str, ours: np.ndarray, ref: np.ndarray, tol: dict[str, float]) -> VerifyRow:
    ours, ref = np.asarray(ours), np.asarray(ref)
    exact = not (np.issubdtype(ref.dtype, np.floating) or np.issubdtype(ours.dtype, np.floating))
    tol_text = "exact" if exact else _tolerance_text(tol)
    if ours.shape != ref.shape:
        return VerifyRow(graph, name, None, None, None, None, tol_text, False,
                         f"shape {list(ours.shape)} but reference has {list(ref.shape)}")
    max_abs, rel_l2, cosine, nonfinite = compare(ours, ref)
    notes = []
    if exact:
        passed = bool(np.array_equal(ours, ref))
        if not passed:
            notes.append(f"{int(np.count_nonzero(ours != ref))} of {ref.size} values differ")
    else:
        passed = (nonfinite == 0 and rel_l2 <= tol["rel_l2"] and cosine >= tol["cosine"])
        if nonfinite:
            notes.append(f"{nonfinite} NaN/Inf value(s) in our output")
        if not np.all(np.isfinite(ref.astype(np.float64))):
            passed = False
            notes.append("the reference itself holds NaN/Inf; re-export it")
        if not (rel_l2 <= tol["rel_l2"]):
            notes.append("rel L2 over tolerance")
        if not (cosine >= tol["cosine"]):
            notes.append("cosine under tolerance")
    return VerifyRow(graph, name, max_abs, rel_l2, cosine, nonfinite, tol_text, passed, "; ".join(notes))


def _fail(graph: str, tol_text: str, note: str, output: str = "-") -> VerifyRow:
    return VerifyRow(graph, output, None, None, None, None, tol_text, False, note)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _verify_graph(m: Manifest, name: str, ort: Any, providers: Sequence[str]) -> list[VerifyRow]:
    g = m.graph(name)
    tol = TOLERANCES[g["precision"] if g.get("precision") in TOLERANCES else m.precision]  # optional override
    tol_text = _tolerance_text(tol)
    ref_path = m.reference_path(name)
    if ref_path is None:
        return [_fail(name, tol_text, "the artifact has no reference file for this graph")]
    try:
        with np.load(ref_path, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
    except Exception as e:  # a damaged npz is a failed check, not a crash
        return [_fail(name, tol_text, f"cannot read reference {ref_path.name}: {_first_line(e)}")]

    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(m.graph_path(name)), sess_options=opts, providers=list(providers))
    except Exception as e:
        return [_fail(name, tol_text, f"cannot open {g['file']} with onnxruntime: {_first_line(e)}")]

    # The graph file must be the graph the manifest describes (catches a swapped or stale .onnx).
    s_in = {i.name: i.type for i in sess.get_inputs()}
    s_out = {o.name: o.type for o in sess.get_outputs()}
    m_in = {i["name"]: i["dtype"] for i in g["inputs"]}
    m_out = {o["name"]: o["dtype"] for o in g["outputs"]}
    problems = []
    for side, s, mm in (("inputs", s_in, m_in), ("outputs", s_out, m_out)):
        if set(s) != set(mm):
            problems.append(f"{side} {sorted(s)} but the manifest says {sorted(mm)}")
        else:
            bad = [n for n in mm if _MANIFEST_TYPES[mm[n]] != s[n]]
            if bad:
                problems.append(f"{side} {', '.join(f'{n} is {s[n]} not {mm[n]}' for n in bad)}")
    if problems:
        return [_fail(name, tol_text, f"{g['file']} does not match the manifest: {'; '.join(problems)} "
                                      f"(swapped or stale graph file?)")]

    missing = [n for n in s_in if f"in.{n}" not in ref]
    if missing:
        return [_fail(name, tol_text, f"reference {ref_path.name} lacks input(s) {', '.join(missing)}")]
    wanted = [k[4:] for k in ref if k.startswith("out.")]
    unknown = [n for n in wanted if n not in s_out]
    if not wanted:
        return [_fail(name, tol_text, f"reference {ref_path.name} holds no out.* arrays")]
    rows = [_fail(name, tol_text, "reference has this output but the graph does not", output=n) for n in unknown]
    wanted = [n for n in wanted if n in s_out]
    if not wanted:
        return rows

    feeds = {n: np.ascontiguousarray(ref[f"in.{n}"].astype(_ORT_TYPES.get(t, ref[f"in.{n}"].dtype), copy=False))
             for n, t in s_in.items()}
    try:
        outs = sess.run(wanted, feeds)
    except Exception as e:
        return rows + [_fail(name, tol_text, f"running {g['file']} failed: {_first_line(e)}")]
    rows += [_judge(name, n, o, ref[f"out.{n}"], tol) for n, o in zip(wanted, outs)]
    return rows


def verify_artifact(dir: str | Path, backend: str = "onnxruntime", graphs: Sequence[str] | None = None, *,
                    providers: Sequence[str] | None = None) -> VerifyReport:
    """Check an artifact's files (sha256) and run each graph on its reference inputs against PyTorch's outputs.

    graphs: names to check (default: every graph with a reference file; the others go to `skipped`).
    providers: onnxruntime execution providers (default CPU only).
    Never raises for a bad artifact: the report's `error` (artifact-level) or FAIL rows say what is wrong.
    Raises InputError for an unknown backend or graph name.
    """
    if backend not in SUPPORTED_BACKENDS:
        raise InputError(f"unknown verify backend {backend!r}; supported: {', '.join(SUPPORTED_BACKENDS)}")
    report = VerifyReport(artifact=Path(dir), backend=backend)
    try:
        m = Manifest.load(dir, check_files=True)
    except ArtifactError as e:
        report.error = str(e)
        return report
    report.precision = m.precision
    if graphs is None:
        names = [n for n in m.graphs if m.reference_path(n) is not None]
        report.skipped = [n for n in m.graphs if n not in names]
    else:
        unknown = [n for n in graphs if n not in m.graphs]
        if unknown:
            raise InputError(f"no graph named {', '.join(map(repr, unknown))} in {m.root}; "
                             f"it has: {', '.join(m.graphs) or 'none'}")
        names = list(dict.fromkeys(graphs))
    if not names:
        report.error = (f"artifact {m.root} has no reference files to compare against; "
                        f"re-export it with `jflow-export onnx` (it writes reference/<graph>.npz)")
        return report
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise JFlowError(f"verify needs onnxruntime, which cannot be imported ({e}); "
                         f"install it with `pip install onnxruntime`") from None
    for name in names:
        report.rows += _verify_graph(m, name, ort, providers or ["CPUExecutionProvider"])
    return report


def _num(x: float | None, fmt: str) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, fmt)


def format_table(report: VerifyReport) -> str:
    """An aligned text table, one line per compared output, notes under failures, then 'N passed, M failed'."""
    head = ("graph", "output", "max abs err", "rel L2", "cosine", "NaN/Inf", "tolerance", "result")
    body = [(r.graph, r.output, _num(r.max_abs, ".3e"), _num(r.rel_l2, ".3e"), _num(r.cosine, ".7f"),
             "-" if r.nonfinite is None else str(r.nonfinite), r.tolerance, "PASS" if r.passed else "FAIL")
            for r in report.rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    numeric = {2, 3, 4, 5}

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"artifact {report.artifact} (precision {report.precision or '?'}, backend {report.backend})"]
    if report.rows:
        out += [line(head), line(["-" * w for w in widths])]
    for r, cells in zip(report.rows, body):
        out.append(line(cells))
        if r.note and not r.passed:
            out.append(f"    {r.note}")
    if report.skipped:
        out.append(f"skipped (no reference file): {', '.join(report.skipped)}")
    if report.error:
        out.append(f"FAIL: {report.error}")
    summary = f"{report.passed} passed, {report.failed} failed"
    if report.error:
        summary += " (artifact not verified)"
    out.append(summary)
    return "\n".join(out)
