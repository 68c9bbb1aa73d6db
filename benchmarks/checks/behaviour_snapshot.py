"""Behaviour snapshot: for a fixed seed, the images and greedy tokens of the tiny fp32, fp16, int8 and int4
artifacts, recorded as hashes, so a change that should not alter behaviour can be shown not to.

    python -m benchmarks.checks.behaviour_snapshot record [--out FILE]
    python -m benchmarks.checks.behaviour_snapshot compare --baseline REV

`record` builds everything with the jflow this process imports (the artifacts through `python -m jflow.cli`
subprocesses that import the same jflow) in a temporary folder, then runs each artifact through the
torch-free `jflow.runtime.pipeline.Pipeline`. `compare` records REV's code (exported with `git archive`
into a temporary folder, put first on PYTHONPATH) and the working tree's, compares them artifact by artifact
and writes both records and the table to results/behaviour_snapshot.json; exit 1 if anything differs.

Each record gets its own fresh JFLOW_CACHE: the calibration cache is keyed by the artifact and settings,
so a cache filled by other code (an older quantizer's samples) must never stand in for this code's own.

`compare` runs this file by its path under REV's jflow (REV need not have this file or the benchmarks
package), so it imports the standard library and numpy only, and builds through the CLI, which every
jflow version has.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "behaviour_snapshot.json"

SEED = 1234
STEPS = 3
PROMPTS = ["a red fox in the snow", "a lighthouse at dusk"]
QUESTIONS = ["What is in this picture?", "Describe the colours."]
MAX_NEW_TOKENS = 16
QUANT_SETTINGS = ["--samples", "1", "--steps", "2"]  # small and fast: the point is repeatability, not accuracy
ARTIFACTS = ["fp32", "fp16", "int8", "int4"]


class StepFailed(Exception):
    """A CLI step failed under every spelling tried; the message is its last line of output."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def synthetic_image() -> np.ndarray:
    """A fixed 64x64 RGB picture (gradients and a square) that needs no file and no randomness."""
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    image[16:48, 16:48] = (200, 40, 40)
    return image


def machine() -> dict:
    import onnxruntime
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return {"cpu": model, "avx512_vnni": "avx512_vnni" in flags, "avx2": "avx2" in flags,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "python": platform.python_version()}


def code_commit(root: Path) -> dict:
    """The commit the imported jflow came from, and whether its tree has uncommitted changes. A tree
    exported by `compare` is not a repository: its commit is written beside it in COMMIT."""
    marker = root / "COMMIT"
    if marker.exists():
        return {"commit": marker.read_text().strip(), "dirty": False}
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", "jflow"))}


def cli(env: dict, cwd: Path, spellings: list[list[str]], what: str) -> None:
    """Run `python -m jflow.cli` with the first spelling that this CLI version accepts. Only a usage error
    (click's exit status 2) moves on to the next spelling; any other failure is the step's own."""
    last = ""
    for args in spellings:
        done = subprocess.run([sys.executable, "-m", "jflow.cli", *args], cwd=cwd, env=env,
                              capture_output=True, text=True)
        if done.returncode == 0:
            return
        last = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
        if done.returncode != 2:
            break
    raise StepFailed(f"{what}: {last}")


def build_artifacts(work: Path, env: dict) -> dict[str, Path | str]:
    """Tiny checkpoint -> fp32 and fp16 artifacts -> int8 and int4 from the fp32 one. A failed step leaves
    its error line in place of the path, so the other artifacts are still recorded."""
    ckpt, out = work / "tiny_ckpt", {}
    cli(env, work, [["tiny", "--out", str(ckpt)], ["tiny", str(ckpt)]], "tiny checkpoint")
    for precision in ("fp32", "fp16"):
        dest = work / precision
        try:
            cli(env, work, [["onnx", str(ckpt), "--out", str(dest), "--precision", precision],
                            ["onnx", "--model", str(ckpt), "--out", str(dest), "--precision", precision]],
                f"onnx {precision}")
            out[precision] = dest
        except StepFailed as e:
            out[precision] = str(e)
    for precision in ("int8", "int4"):
        dest, src = work / precision, out["fp32"]
        if not isinstance(src, Path):
            out[precision] = f"quantize {precision}: no fp32 artifact"
            continue
        common = ["--out", str(dest), "--precision", precision, *QUANT_SETTINGS]
        try:
            cli(env, work, [["quantize", str(src), *common], ["quantize", "--src", str(src), *common]],
                f"quantize {precision}")
            out[precision] = dest
        except StepFailed as e:
            out[precision] = str(e)
    return out


def behaviour(artifact: Path) -> dict:
    """Hashes of the raw pixels of each generated image and the greedy token ids of each answer."""
    from jflow.runtime.pipeline import Pipeline
    # One thread: the same reduction order on every run, whatever else shares the cores.
    with Pipeline.load(artifact, backend="onnxruntime", threads=1, spin=False) as pipe:
        images = pipe.generate(PROMPTS, steps=STEPS, seed=SEED)
        pixels = [np.asarray(im, dtype=np.uint8) for im in images]
        picture = synthetic_image()
        tokens = pipe.answer_tokens([picture] * len(QUESTIONS), QUESTIONS, max_new_tokens=MAX_NEW_TOKENS)
        texts = [pipe.tokenizer.decode(t) for t in tokens]
    return {"images": [{"shape": list(p.shape), "sha256": sha256(p.tobytes())} for p in pixels],
            "answers": [{"tokens": t, "text_sha256": sha256(s.encode("utf-8"))} for t, s in zip(tokens, texts)]}


def record() -> dict:
    import jflow
    root = Path(jflow.__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="jflow_snapshot_") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        cache.mkdir()
        os.environ["JFLOW_CACHE"] = str(cache)  # fresh per record: see the module docstring
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        artifacts = build_artifacts(work, env)
        results = {}
        for name in ARTIFACTS:
            path = artifacts[name]
            if not isinstance(path, Path):
                results[name] = {"error": path}
                continue
            try:
                results[name] = behaviour(path)
            except Exception as e:  # recorded, not raised: one broken artifact must not hide the others
                results[name] = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    return {"jflow": str(root), **code_commit(root), "machine": machine(),
            "settings": {"seed": SEED, "steps": STEPS, "prompts": PROMPTS, "questions": QUESTIONS,
                         "max_new_tokens": MAX_NEW_TOKENS, "quantize": QUANT_SETTINGS},
            "artifacts": results}


def compare_records(base: dict, current: dict) -> list[dict]:
    rows = []
    for name in ARTIFACTS:
        a, b = base["artifacts"].get(name, {"error": "missing"}), current["artifacts"].get(name, {"error": "missing"})
        if "error" in a or "error" in b:
            rows.append({"artifact": name, "images": False, "tokens": False,
                         "error": {"baseline": a.get("error"), "current": b.get("error")}})
            continue
        rows.append({"artifact": name, "images": a["images"] == b["images"], "tokens": a["answers"] == b["answers"]})
    return rows


def record_in_subprocess(root: Path, out: Path) -> dict:
    """`record` in a fresh interpreter that imports jflow from root (PYTHONPATH comes before the venv's
    editable install), checked to have done so."""
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "record", "--out", str(out)],
                          cwd=root, env=env)
    if done.returncode != 0:
        raise SystemExit(f"behaviour_snapshot: record with the jflow in {root} failed (exit {done.returncode}); "
                         "its output is above")
    rec = json.loads(out.read_text())
    if Path(rec["jflow"]).resolve() != root.resolve():
        raise SystemExit(f"behaviour_snapshot: the record meant for {root} imported jflow from {rec['jflow']}; "
                         "check PYTHONPATH")
    return rec


def export_tree(rev: str, dest: Path) -> None:
    """REV's files into dest (git archive: no change to the repository's state, unlike a worktree)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"behaviour_snapshot: --baseline {rev!r} is not a commit of {REPO}; "
                         "give a commit, tag or branch (e.g. HEAD)")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha.stdout.strip()],
                             capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "COMMIT").write_text(sha.stdout.strip() + "\n")


def compare(rev: str, out: Path) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="jflow_baseline_"))
    try:
        tree = tmp / "tree"
        export_tree(rev, tree)
        print(f"recording the baseline ({rev}) ...", flush=True)
        base = record_in_subprocess(tree, tmp / "baseline.json")
        print("recording the working tree ...", flush=True)
        current = record_in_subprocess(REPO, tmp / "current.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = compare_records(base, current)
    same = sum(r["images"] and r["tokens"] for r in rows)
    print(f"{'artifact':<9} {'images identical':<17} {'tokens identical':<17}")
    for r in rows:
        note = f"  error: {r['error']}" if "error" in r else ""
        print(f"{r['artifact']:<9} {'yes' if r['images'] else 'NO':<17} {'yes' if r['tokens'] else 'NO':<17}{note}")
    print(f"{same} identical, {len(rows) - same} differ")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"baseline_rev": rev, "baseline": base, "current": current, "comparison": rows,
                               "identical": same, "differ": len(rows) - same}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if same == len(rows) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    rec = sub.add_parser("record", help="record this jflow's behaviour as JSON")
    rec.add_argument("--out", type=Path, help="JSON file to write (default: stdout)")
    cmp_ = sub.add_parser("compare", help="record REV and the working tree, compare, exit 1 if they differ")
    cmp_.add_argument("--baseline", required=True, metavar="REV", help="git revision of the code before the change")
    cmp_.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.mode == "compare":
        return compare(args.baseline, args.out)
    try:
        text = json.dumps(record(), indent=1) + "\n"
    except StepFailed as e:
        print(f"behaviour_snapshot: {e}", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
