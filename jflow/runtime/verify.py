"""`verify`: prove an artifact on this machine, through the same seam and contract the runtime uses.

Torch-free. First the artifact is loaded exactly as the runtime loads it (schema, contract, every
file's sha256, tokenizer, embeddings), so verify fails on anything `generate` would refuse. Then:
- each graph with `reference/<graph>.npz` runs on its stored inputs (taken from real reference runs)
  through the backend's runner, and every output is compared with PyTorch's;
- the end-to-end cases replay through the Pipeline (so on ONNX Runtime the fused LLM form and its
  in-place KV cache are what is checked): the generation case's latents and image, and the
  understanding case's greedy tokens and its logits teacher-forced along the reference's tokens.
Tolerances per precision come from the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from jflow.artifact.arrays import load_npz
from jflow.artifact.manifest import Manifest
from jflow.errors import InputError, JFlowError
from jflow.runtime.backends import BACKENDS

E2E = ("generation", "understanding")


@dataclass
class VerifyRow:
    """One compared output (or one check that could not run: output '-', metrics None)."""

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
    itself could not be trusted (missing, wrong schema, broken contract, altered files) and nothing ran."""

    artifact: Path
    backend: str
    precision: str | None = None
    rows: list[VerifyRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # graphs without a reference file
    notes: list[str] = field(default_factory=list)
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


def judge(graph: str, name: str, ours: np.ndarray, ref: np.ndarray, tol: dict[str, float],
          max_abs: float | None = None) -> VerifyRow:
    """A row for one output: exact for integers, else rel-L2, cosine, no NaN/Inf (and max_abs when given)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    exact = not (np.issubdtype(ref.dtype, np.floating) or np.issubdtype(ours.dtype, np.floating))
    tol_text = "exact" if exact else _tolerance_text(tol) + (f" max_abs<={max_abs:g}" if max_abs is not None else "")
    if ours.shape != ref.shape:
        return VerifyRow(graph, name, None, None, None, None, tol_text, False,
                         f"shape {list(ours.shape)} but reference has {list(ref.shape)}")
    abs_err, rel_l2, cosine, nonfinite = compare(ours, ref)
    notes = []
    if exact:
        passed = bool(np.array_equal(ours, ref))
        if not passed:
            notes.append(f"{int(np.count_nonzero(ours != ref))} of {ref.size} values differ")
    else:
        passed = nonfinite == 0 and rel_l2 <= tol["rel_l2"] and cosine >= tol["cosine"]
        if max_abs is not None and not abs_err <= max_abs:
            passed = False
            notes.append("max abs error over tolerance")
        if nonfinite:
            notes.append(f"{nonfinite} NaN/Inf value(s) in our output")
        if not np.all(np.isfinite(ref.astype(np.float64))):
            passed = False
            notes.append("the reference itself holds NaN/Inf; re-export it")
        if not rel_l2 <= tol["rel_l2"]:
            notes.append("rel L2 over tolerance")
        if not cosine >= tol["cosine"]:
            notes.append("cosine under tolerance")
    return VerifyRow(graph, name, abs_err, rel_l2, cosine, nonfinite, tol_text, passed, "; ".join(notes))


def _fail(graph: str, note: str, output: str = "-", tolerance: str = "-") -> VerifyRow:
    return VerifyRow(graph, output, None, None, None, None, tolerance, False, note)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _tolerance(m: Manifest, precision: str, group: str | None = None) -> dict[str, float]:
    """The bound the manifest states for a graph or end-to-end case: its own override (a quantized graph
    whose error `quantize` measured above its precision's bound), else its precision's."""
    return m.tolerances.for_graph(group, precision).as_dict()


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    return load_npz(path, "a reference file")  # a damaged one: ArtifactError naming the file


def _verify_graph(pipe, name: str) -> list[VerifyRow]:
    m = pipe.manifest
    tol = _tolerance(m, m.graph_precision(name), name)
    try:
        ref = _load_npz(m.reference_path(name))
    except Exception as e:  # a damaged npz is a failed check, not a crash
        return [_fail(name, f"cannot read its reference file: {_first_line(e)}")]
    inputs = [t["name"] for t in m.graph(name)["inputs"]]
    missing = [n for n in inputs if f"in.{n}" not in ref]
    wanted = [k[4:] for k in ref if k.startswith("out.")]
    if missing or not wanted:
        return [_fail(name, f"its reference file lacks input(s) {', '.join(missing)}" if missing
                      else "its reference file holds no out.* arrays")]
    declared = {t["name"] for t in m.graph(name)["outputs"]}
    rows = [_fail(name, "the reference has this output but the graph does not", output=n)
            for n in wanted if n not in declared]
    wanted = [n for n in wanted if n in declared]
    try:
        outs = pipe.runner(name).infer({n: ref[f"in.{n}"] for n in inputs}, wanted)
    except JFlowError as e:
        return rows + [_fail(name, str(e))]
    return rows + [judge(name, n, pipe.backend.download(outs[n]), ref[f"out.{n}"], tol) for n in wanted]


def _verify_generation(pipe, case: dict, tol: dict) -> list[VerifyRow]:
    latents = pipe.generate_latents([str(p) for p in case["prompts"]], steps=int(case["steps"]),
                                    cfg_weight=float(case["cfg_weight"]), noise=case["noise"])
    image = pipe.decode_latents(latents)
    rows = [judge("e2e:generation", "latents", latents, case["latents"], tol)]
    if pipe.manifest.precision == "fp32":  # every uint8 pixel within 1: truncation flips pixels on a boundary
        rows.append(judge("e2e:generation", "image", image.astype(np.float32), case["image"].astype(np.float32),
                          {"rel_l2": 1e-2, "cosine": tol["cosine"]}, max_abs=1.0))
    else:
        rows.append(judge("e2e:generation", "image", image.astype(np.float32), case["image"].astype(np.float32), tol))
    return rows


def _verify_understanding(pipe, case: dict, tol: dict) -> list[VerifyRow]:
    image, question, expected = case["image"], str(case["question"]), case["tokens"]
    ours = np.array(pipe.answer_tokens(image, question, max_new_tokens=int(case["max_new_tokens"]))[0], np.int64)
    rows = []
    agree = int(np.argmin(np.append(ours[:len(expected)] == expected[:len(ours)], False)))
    if pipe.manifest.precision == "fp32":  # greedy tokens must be identical; lower precisions may flip a near-tie
        rows.append(judge("e2e:understanding", "tokens", ours, expected, tol))
    rows_in, _ = pipe.understanding_rows([image], [question])
    llm = pipe.llm
    cache = llm.new_cache(1, len(rows_in[0]) + len(expected))
    logits = [pipe.backend.download(llm.prefill(cache, rows_in))[0]]
    for token in expected[:-1]:  # teacher-forced along the reference's own answer
        logits.append(pipe.backend.download(llm.decode_one(cache, pipe.embed(np.array([[token]]))))[0])
    row = judge("e2e:understanding", "logits", np.stack(logits).astype(np.float32), case["logits"], tol)
    row.note = "; ".join(x for x in (row.note, f"greedy tokens agree on {agree} of {len(expected)}") if x)
    return rows + [row]


def verify_artifact(dir: str | Path | Manifest, backend: str = "onnxruntime", graphs: Sequence[str] | None = None, *,
                    providers: Sequence[str] | None = None, end_to_end: bool = True) -> VerifyReport:
    """Check an artifact's contract and files, run each graph on its reference inputs, and replay the
    end-to-end cases through the runtime. Never raises for a bad artifact: the report's `error`
    (artifact-level) or FAIL rows say what is wrong. Raises InputError for an unknown backend or graph."""
    from jflow.runtime.pipeline import Pipeline
    if backend not in BACKENDS:
        raise InputError(f"unknown verify backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    report = VerifyReport(artifact=dir.root if isinstance(dir, Manifest) else Path(dir), backend=backend)
    try:
        pipe = Pipeline.load(dir, backend=backend, providers=list(providers) if providers else None,
                             check_files="full")
    except JFlowError as e:
        report.error = str(e)
        return report
    with pipe:
        m = pipe.manifest
        report.backend, report.precision = pipe.backend.name, m.precision
        names = [n for n in m.graphs if m.reference_path(n) is not None]
        if graphs is not None:
            unknown = [n for n in graphs if n not in m.graphs and n not in E2E]
            if unknown:
                raise InputError(f"no graph named {', '.join(map(repr, unknown))} in {m.root}; it has: "
                                 f"{', '.join(m.graphs)} (and the end-to-end cases {', '.join(E2E)})")
            names = [n for n in names if n in graphs]
        forms = [n for n in m.graphs if "form_of" in m.graph(n)]
        report.skipped = [n for n in m.graphs if m.reference_path(n) is None and n not in forms
                          and (graphs is None or n in graphs)]
        used = pipe.llm.graph_name
        if used in forms:
            report.notes.append(f"{used} (the {pipe.backend.name} form of {m.graph(used)['form_of']}, with its "
                                "in-place KV cache) is what the e2e rows run")
        for name in names:
            report.rows += _verify_graph(pipe, name)
        checks = {"generation": _verify_generation, "understanding": _verify_understanding}
        for case in E2E:
            if not end_to_end or (graphs is not None and case not in graphs):
                continue
            path = m.reference_path(case)
            if path is None:
                report.rows.append(_fail(f"e2e:{case}", "the artifact has no reference case for it"))
                continue
            try:
                report.rows += checks[case](pipe, _load_npz(path), _tolerance(m, m.precision, f"e2e:{case}"))
            except (JFlowError, KeyError, ValueError, OSError) as e:
                report.rows.append(_fail(f"e2e:{case}", f"replaying it failed: {_first_line(e)}"))
    if not report.rows and report.error is None:
        report.error = "nothing to compare: the artifact has no reference files; re-export it"
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
        if r.note:
            out.append(f"    {r.note}")
    if report.skipped:
        out.append(f"skipped (no reference file): {', '.join(report.skipped)}")
    out += [f"note: {n}" for n in report.notes]
    if report.error:
        out.append(f"FAIL: {report.error}")
    summary = f"{report.passed} passed, {report.failed} failed"
    if report.error:
        summary += " (artifact not verified)"
    out.append(summary)
    return "\n".join(out)
