"""`jflow-export quantize`: an fp32 artifact -> an INT8 or INT4 artifact, the way a quantizer writes a new
checkpoint. Nothing in the runtime changes: quantized graphs take and give the same float tensors.

- int8: W8A8 with explicit QuantizeLinear/DequantizeLinear (QDQ) on the MatMul/Gemm/Conv of siglip, llm,
  llm_ort, gen_encoder and gen_decoder: per-channel symmetric int8 weights, symmetric int8 activations
  calibrated on our own runtime's inputs (zero point 0, as TensorRT's explicit quantization requires).
- int4: the LLM's linear weights, lm_head included, as symmetric block-quantized INT4 weight-only QDQ
  (DequantizeLinear with block_size along the input dimension, opset 21): ONNX Runtime fuses it into
  MatMulNBits, TensorRT runs it as weight-only INT4. The other graphs take the int8 path.
- In both LLM forms, Q/K/V and gate/up are packed into one MatMul each before quantizing (the packed weights
  are written once and shared by both forms): one GEMM per shared input, as GenAI's builder does.
Kept float (the precision policy): norm statistics, softmax and attention scores (MatMuls of two
activations), GRN, everything computed from the time alone (sinusoids, time MLP, the adaLN scale/shift
mappers), the ODE state and the Euler update, and the whole VAE.

Memory: a graph is opened without its weights and written weight by weight (calibration.qdq, the graphs and
numbers onnxruntime's quantize_static and MatMulNBitsQuantizer write, without their whole-model copies);
activation ranges are measured on the float graph over the calibration samples (calibration.ranges), the
LLM's once for both forms (calibration.gemms) and, for minmax, in the calibration run itself: its runner taps
the GEMM inputs (calibration.observe), so the 1.3B LLM never runs a second time. The peak is the calibration
run's (the fp32 runtime itself).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

from jflow.artifact.manifest import Manifest
from jflow.artifact.writer import ArtifactWriter
from jflow.calibration.collect import calibrated_form, collect_samples
from jflow.calibration.ranges import load_observed
from jflow.calibration.data import calibration_set
from jflow.calibration.gemms import LLM_FORMS, check_ranges, graph_ranges, measure_llm, open_graph, smooth_and_find
from jflow.calibration.llm_graph import ROLES, gemm_names, open_weight_gemms
from jflow.calibration.qdq import weight_only, write_int8
from jflow.calibration.ranges import activation_scale
from jflow.calibration.recipe import QuantRecipe
from jflow.calibration.record import STEP_FORM, quantization_manifest
from jflow.errors import InputError
from jflow.fsutil import check_new_dir, partial_prefix, staged_dir

STATIC = ("siglip", "llm", "llm_ort", "gen_encoder", "gen_decoder")


def plan(precision: str) -> dict[str, str]:
    """Graph -> its precision in the quantized artifact."""
    out = {g: "int8" for g in STATIC}
    if precision == "int4":
        out.update({g: "int4" for g in LLM_FORMS})
    return out


def quantize_artifact(src: str | Path, out: str | Path, recipe: QuantRecipe | str, calib: str | Path | None = None,
                      cache: str | Path | None = None, force: bool = False, log: Callable[[str], None] = print,
                      **settings) -> Path:
    """Quantize the fp32 artifact `src` into a new artifact `out` by `recipe`: a QuantRecipe, or a precision with
    any other recipe field as a keyword (samples=2, method="percentile", ...). Checks every argument before any work."""
    recipe = QuantRecipe.of(recipe, **settings)
    if recipe.exclude:
        raise InputError("a quantized artifact keeps GEMMs float by role (keep_float, stated in its manifest); "
                         "exclude (node names) is for one-graph studies: quantize_graph_int8 / quantize_llm_int4")
    # The recipe's fields under the names the steps below use.
    precision, method, smooth, keep_float = recipe.precision, recipe.method, recipe.smooth, recipe.keep_float
    samples, steps = recipe.samples, recipe.steps
    m = Manifest.load(src)
    if m.precision != "fp32":
        raise InputError(f"{src} is a {m.precision} artifact; quantize reads an fp32 one (export it with "
                         "`jflow-export onnx --precision fp32`)")
    linked = sorted(rel for rel in m.files if ".onnx" in rel and m.path(rel).stat().st_nlink > 1)
    if linked:  # onnx refuses to read such weights (a guard against hard-link attacks), mid-way through
        raise InputError(f"{src}/{linked[0]} has other hard links ({len(linked)} file(s) in all); onnx will not "
                         "read weights from hard-linked files: quantize a real copy (cp -r, not cp -al or ln)")
    named = recipe.float_names  # --keep-float GEMM names (beside roles)
    if (precision == "int4" and recipe.int8_gemms) or (precision == "int8" and named):
        from jflow.calibration.sensitivity import check_gemm_names
        check_gemm_names(m, *((recipe.int8_gemms, "--int8-gemms") if precision == "int4" else (named, "--keep-float")))
    cset = calibration_set(samples, calib)
    out = check_new_dir(out, "the quantized artifact folder", replace=force, sources=[src])  # never over its source
    cache = Path(cache) if cache else calibration_cache_dir()
    _remove_stale_partials(out, log)  # every check passed: the first line says what a killed run left
    started = time.perf_counter()
    with quiet_onnxruntime():
        # minmax ranges of the LLM are taken in the calibration run itself (calibration.observe)
        folder = collect_samples(m.root, cset, cache, steps=steps, log=log, observe_llm=method == "minmax")
        log(f"  calibration samples ready in {time.perf_counter() - started:5.1f}s")
        targets = plan(precision)
        mixed = awq = None  # int4: the GEMMs held at int8 and the AWQ scales (sensitivity.plan_int8_gemms)
        if precision == "int4":
            from jflow.calibration.sensitivity import plan_int8_gemms
            mixed, awq = plan_int8_gemms(m, recipe, log)
        smoothing = {"alpha": smooth, "gemms": {}} if smooth else None  # measured once, both forms
        llm: dict = {}  # the LLM's ranges, measured once on the calibrated form (gemms.measure_llm)
        measured = None  # int8: which LLM GEMMs stay float, measured (float_choice); None: by role (keep_float)
        if precision == "int8" and keep_float is None and "llm" in m.graphs:
            from jflow.calibration.float_choice import plan_float_gemms
            measured = plan_float_gemms(m, recipe, folder / calibrated_form(m), llm, smooth or None, log)
        float_names = measured["gemms"] if measured else named
        float_gemms: dict[str, int] = {}  # LLM form -> GEMMs kept float
        with staged_dir(out, replace=force) as tmp:
            _copy_unquantized(m, tmp, targets)
            for name, target in targets.items():
                if name not in m.graphs:
                    continue
                begun, report = time.perf_counter(), {}
                dest = tmp / m.graph(name)["file"]
                shared = tmp / m.graph("llm")["file"] if name == "llm_ort" and "llm" in targets else None
                if target == "int4":
                    report["shared"] = quantize_llm_int4(m.graph_path(name), dest, recipe, shared=shared,
                                                         int8=mixed["int8"], scales=awq)
                elif name == "llm_ort" and recipe.ort_int8 in ("blockwise", "split"):
                    if recipe.ort_int8 == "split":  # first the ODE steps' static form, from the opened graph
                        kept = quantize_graph_int8(m, name, dest.with_name(f"{STEP_FORM}.onnx"),
                                                   folder / calibrated_form(m), recipe, smoothing=smoothing, llm=llm,
                                                   shared=shared, report=report, float_gemms=float_names)
                        float_gemms[STEP_FORM] = kept
                        if smoothing:
                            smoothing["gemms"][STEP_FORM] = smoothing["gemms"].pop(name)
                        log(f"  {STEP_FORM:<12} int8 (static, for the ODE steps) in "
                            f"{time.perf_counter() - begun:5.1f}s")
                    llm.pop("opened", None)  # measured for the portable form; this form needs no ranges
                    quantize_llm_weights(m.graph_path(name), dest, lambda gemm: "int8-block", recipe.block_size)
                    float_gemms[name] = 0
                else:
                    calibrated = calibrated_form(m) if name in LLM_FORMS else name
                    kept = quantize_graph_int8(m, name, dest, folder / calibrated, recipe, smoothing=smoothing,
                                               llm=llm, shared=shared, report=report, float_gemms=float_names)
                    if name in LLM_FORMS:
                        float_gemms[name] = kept
                log(f"  {name:<12} {target} in {time.perf_counter() - begun:5.1f}s")
                if report.get("shared"):
                    log(f"  {name} shares {report['shared'] / 2**20:.1f} MiB of weights with llm")
            if awq:
                mixed["awq"] = {"gemms": len(awq), "tokens": "as the sensitivity", "grid": "a in 0, 0.1, ..., 0.9",
                                "alpha": {g: a for g, (_, a) in awq.items()}}
            chosen = measured or ({"gemms": list(named), "chosen_by": "--keep-float"} if named else {})
            float_record = {**chosen, "roles": [ROLES[r] for r in recipe.float_roles], "count": float_gemms}
            data = quantization_manifest(m, recipe, targets, cset, folder, smoothing, float_record, mixed)
            begun = time.perf_counter()
            _measure(ArtifactWriter(tmp), data, log)  # drafts the manifest, verifies the draft, writes it once
            log(f"  verified against fp32 in {time.perf_counter() - begun:5.1f}s")
    log(f"wrote {out} ({precision}) in {time.perf_counter() - started:.0f}s")
    return out


@contextlib.contextmanager
def quiet_onnxruntime():
    """onnxruntime's own warnings (its C++ log, its Python loggers, Python warnings) are not for our users
    while quantize runs: what matters is said in quantize's own lines. Restored after."""
    import onnxruntime as ort
    loggers = [logging.getLogger(n) for n in ("onnxruntime", "onnxruntime.quantization")]
    levels = [lg.level for lg in loggers]
    ort.set_default_logger_severity(3)  # errors only
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"onnxruntime(\..*)?")
            yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _remove_stale_partials(out: Path, log) -> None:
    """A quantize killed mid-way (OOM, SIGKILL) leaves a hidden .NAME.partial-* folder of several GB; it is
    removed here (as staged_dir would), and said, with the space it held."""
    from jflow.fsutil import remove_stale_partials
    prefix = partial_prefix(out)
    sizes = {}
    with contextlib.suppress(OSError):
        for entry in out.parent.iterdir():
            if entry.name.startswith(prefix) and entry.is_dir():
                sizes[entry.name] = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file() and not f.is_symlink())
    removed = remove_stale_partials(out)
    for path in removed:
        log(f"removed {path}, a partial output a killed earlier run left ({_size(sizes.get(path.name, 0))})")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


MARGIN = 1.5  # a stated bound is this much looser than the error quantize measured


def _measure(writer: ArtifactWriter, data: dict, log) -> Manifest:
    """Run every quantized graph and both end-to-end cases against the fp32 reference (what `verify` does)
    and record the errors in the manifest. Where a model quantizes worse than its precision's bound, the
    manifest states that graph's own, measured bound (with a margin) and this says so: `verify` on a
    device then checks the device reproduces what was measured here. Judge the accuracy itself with the
    report (benchmarks/quantization/quant_accuracy.py), not with these bounds.

    One verify pass, one write: verify runs on the draft (every file hashed, the contract checked, not yet
    on disk), and its rows are judged again under the bounds the manifest will state, the way `verify`
    judges them, before the manifest is written."""
    draft = writer.draft(data)
    reports = _verify_in_parts(draft)
    error = next((r.error for r in reports if r.error), None)
    if error:
        raise RuntimeError(f"jflow bug: the quantized artifact does not load: {error}")
    measured: dict[str, dict] = {}
    for row in [row for r in reports for row in r.rows]:
        if row.rel_l2 is None:
            if not row.passed:
                raise RuntimeError(f"jflow bug: {row.graph}.{row.output} could not be compared: {row.note}")
            continue
        worst = measured.setdefault(row.graph, {"rel_l2": 0.0, "cosine": 1.0, "passed": True})
        worst.update(rel_l2=max(worst["rel_l2"], row.rel_l2), cosine=min(worst["cosine"], row.cosine))
        worst["passed"] &= row.passed
    overrides = {}
    for group, worst in measured.items():
        if not worst["passed"]:
            overrides[group] = {"rel_l2": float(f"{worst['rel_l2'] * MARGIN:.3g}"),
                                "cosine": float(f"{1 - (1 - worst['cosine']) * MARGIN:.6g}")}
            log(f"  warning: {group} quantizes worse than the {data['precision']} bound on this model (rel-L2 "
                f"{worst['rel_l2']:.3g}, cosine {worst['cosine']:.5f} vs fp32); the manifest states its measured "
                "bound. Check the accuracy on your data before you ship it")
    final = writer.revise({
        "quantization": {**data["quantization"], "measured": {g: {k: round(v, 6) for k, v in w.items() if k != "passed"}
                                                              for g, w in measured.items()}},
        "tolerances": {**data["tolerances"], "overrides": overrides}}, base=draft)
    bounds = {group: final.tolerance(group) for group in overrides}  # the groups whose bound changed
    unmet = [f"{row.graph}.{row.output}" for r in reports for row in r.rows if row.graph in bounds
             and not (row.rel_l2 is not None and row.nonfinite == 0 and row.rel_l2 <= bounds[row.graph]["rel_l2"]
                      and row.cosine >= bounds[row.graph]["cosine"])]
    if unmet:
        raise RuntimeError(f"jflow bug: the quantized artifact fails verify with its own measured bounds "
                           f"({', '.join(unmet)})")
    return writer.write(final)


def _verify_in_parts(root: Path) -> list:
    """verify's reports, one Pipeline per part: the portable LLM, the other graphs, the end-to-end cases (the
    ORT LLM form). One Pipeline for all held both LLM forms' sessions beside the VAE: 12.1 GiB at full size,
    above the 12 GiB the whole quantize must fit in."""
    from jflow.runtime.verify import E2E, verify_artifact
    m = Manifest.load(root, check_files=False)
    graphs = list(m.graphs)  # (forms of llm other than itself are checked through the end-to-end cases)
    parts = [[n] for n in graphs if n == "llm"] + [[n for n in graphs if n not in LLM_FORMS and n not in m.forms]]
    reports = [verify_artifact(root, graphs=part, end_to_end=False) for part in parts if part]
    return reports + [verify_artifact(root, graphs=list(E2E))]


def calibration_cache_dir() -> Path:
    """$JFLOW_CACHE/calibration, created and writable, or one line naming JFLOW_CACHE (before any work)."""
    from jflow.artifact.cache_dir import writable
    return writable("calibration", "the calibration samples")


def _copy_unquantized(m: Manifest, tmp: Path, targets: dict) -> None:
    """Every listed file but the quantized graphs' own (engines are per artifact and not copied)."""
    quantized = {m.graph(n)["file"] for n in targets if n in m.graphs}
    quantized |= {f"{rel}.data" for rel in quantized}
    for rel in m.files:
        if rel in quantized or rel.startswith("engines/") or rel.startswith("ort/"):
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(m.root / rel, tmp / rel)


def quantize_graph_int8(m: Manifest, name: str, target: Path, samples: Path, recipe: QuantRecipe,
                        smoothing: dict | None = None, llm: dict | None = None, shared: Path | None = None,
                        report: dict | None = None, float_gemms=()) -> int:
    """W8A8 QDQ of graph `name` into `target`, calibrated on `samples` (for an LLM form: the calibrated
    form's samples, measured once into `llm` and found in either form by weight) with the recipe's method.
    LLM forms: packed, then smoothed (`smoothing`: {alpha, gemms}, shared by both forms; None: off); the
    recipe's keep_float names LLM GEMM roles left float (llm_graph.FLOAT_GEMMS, found from the wiring),
    `float_gemms` GEMMs by name (llm_graph.gemm_names; float_choice's measured choice), its exclude node names.
    `shared`: a graph file whose equal weights are referenced. Returns how many LLM GEMMs were left float."""
    method, exclude, keep_float = recipe.method, recipe.exclude, recipe.float_roles  # (names: float_gemms)
    # the calibrated LLM form's statistics taken in the calibration run (minmax), else its recorded samples
    observed = load_observed(samples.parent, samples.name) if name in LLM_FORMS and method == "minmax" else None
    if observed is None and not any(samples.glob("*.npz")):
        raise InputError(f"no calibration samples for {name}; the calibration run recorded none (is --samples 0?)")
    llm = {} if llm is None else llm
    # The calibrated LLM form, opened (packed, its weights hashed) to measure the ranges while the other form
    # was quantized, is kept for its own turn: its 5 GB of weights are not read and hashed a second time.
    opened, known = llm.pop("opened", None), llm.setdefault("digests", {}) if name in LLM_FORMS else None
    graph = opened if opened is not None and opened.name == name else open_graph(m.graph_path(name), name,
                                                                                 keep_float, exclude, known,
                                                                                 float_gemms)
    if name in LLM_FORMS:
        alpha = smoothing["alpha"] if smoothing else None
        if "ranges" not in llm:  # measured on the calibrated form (this one, or opened for it)
            calibrated = calibrated_form(m)
            source = graph if calibrated == name else open_graph(m.graph_path(calibrated), calibrated, keep_float,
                                                                 exclude, known, float_gemms)
            llm.update(measure_llm(source, samples, method, alpha, observed))
            if source is not graph:
                llm["opened"] = source
        smoothed, ranges = smooth_and_find(graph, llm, alpha)
        if smoothing:
            smoothing["gemms"][name] = smoothed
    else:
        ranges = graph_ranges(graph, samples, method)
    check_ranges(ranges, graph)
    scales = {t: activation_scale(lo, hi) for t, (lo, hi) in ranges.items()}
    saved = write_int8(graph.model, graph.tensors, target, graph.gemms, scales, shared=shared,
                       weight_only=graph.weight_only)
    if report is not None:
        report["shared"] = saved
    return len(graph.kept)


def quantize_llm_int4(source: Path, target: Path, recipe: QuantRecipe, shared: Path | None = None,
                      int8=(), scales: dict | None = None) -> int:
    """The LLM's linear weights (lm_head included, the recipe's exclude left float) as symmetric int4 in
    blocks of the recipe's block_size, weight-only (QDQ, opset 21); the GEMMs named in `int8` (gemm_names)
    per-channel int8 instead; `scales`: AWQ's (s, a) by GEMM name, folded in first. Returns the bytes
    referenced in `shared`'s data file."""
    wide = set(int8)
    return quantize_llm_weights(source, target, (lambda gemm: "int8" if gemm in wide else "int4") if wide else None,
                                recipe.block_size, exclude=recipe.exclude, shared=shared, scales=scales)


def quantize_llm_weights(source: Path, target: Path, format_of: Callable[[str], str] | None, block_size: int,
                         exclude=(), shared: Path | None = None, scales: dict | None = None) -> int:
    """An LLM form, packed, with each weight GEMM weight-only in `format_of(its gemm_names name)` (qdq.WEIGHT_ONLY
    or "int8-block"; None: int4 for every MatMul of a 2-D weight, the graph's structure unread); node names in
    `exclude` left float; `scales` (GEMM name -> (s, a)) folded in first, the same way in either form
    (smooth.fold_scales), so both hold the same bytes. Returns the bytes referenced in `shared`'s data file."""
    from jflow.calibration.smooth import find_pairs, fold_scales
    model, tensors = open_weight_gemms(source)
    skip = set(exclude)
    if format_of is None and not scales:
        inits = {i.name: i for i in model.graph.initializer}
        formats = {n.name: "int4" for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1
                   and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 and n.name not in skip}
        return weight_only(model, tensors, target, formats, block_size, shared=shared)
    names = gemm_names(model)
    if scales:
        fold_scales(model, {p.matmul: scales[names[p.matmul]][0] for p in find_pairs(model)
                            if names.get(p.matmul) in scales}, tensors)
    format_of = format_of or (lambda gemm: "int4")
    formats = {node: format_of(name) for node, name in names.items() if node not in skip}
    return weight_only(model, tensors, target, formats, block_size, shared=shared)
