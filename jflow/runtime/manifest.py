"""The artifact manifest: what `jflow-export onnx` writes and what the device trusts (numpy-free, stdlib only).

An artifact is one folder DIR with DIR/manifest.json. The manifest names the model config, the graphs
(file, input/output names, dtypes, shapes, dynamic-axis ranges), the precision and its policy, the
reference files used by `verify`, the tool versions, and the sha256 of every other file in DIR.

`Manifest.load` checks the schema version and, by default, every file's sha256, so a truncated copy,
a swapped graph or a stale artifact is refused with one message that lists every problem.
The exporter fills "files" with `file_hashes(DIR)` as its last step before writing manifest.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from jflow import __version__ as JFLOW_VERSION
from jflow.errors import JFlowError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("fp32", "fp16")
GRAPH_NAMES = ("siglip", "llm", "gen_encoder", "gen_decoder", "vae_decoder")
DTYPES = ("float32", "float16", "int64")

_CHUNK = 1 << 20  # hash files in 1 MiB chunks: multi-GB weight files never sit in memory
_REEXPORT = "re-export it with `jflow-export onnx` or copy the whole artifact folder again"

# Keys every manifest must have, and the JSON type each must hold.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "jflow_version": str,
    "precision": str,
    "precision_policy": list,
    "model": dict,
    "limits": dict,
    "graphs": dict,
    "reference": dict,
    "tools": dict,
    "files": dict,
}
_LIMITS = ("max_batch", "max_context", "max_new_tokens")


class ArtifactError(JFlowError):
    """An artifact folder is missing, incomplete, altered, or written by an incompatible jflow."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of one file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: str | Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file under `root` except the top-level manifest.json.

    Sorted by path, so the manifest is deterministic. This is what the exporter writes under "files".
    """
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if rel == MANIFEST_NAME:
            continue
        out[rel] = sha256_file(p)
    return dict(sorted(out.items()))


def _safe_rel(rel: str, what: str) -> str:
    """A relative posix path that stays inside the artifact, or ArtifactError."""
    if not isinstance(rel, str) or not rel:
        raise ArtifactError(f"manifest.json: {what} must be a non-empty relative path, got {rel!r}; {_REEXPORT}")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise ArtifactError(f"manifest.json: {what} {rel!r} must be a relative path inside the artifact "
                            f"(no absolute paths, no '..'); {_REEXPORT}")
    return rel


@dataclass
class Manifest:
    """A loaded manifest.json; `root` is the artifact folder the relative paths are resolved against."""

    root: Path
    schema_version: int
    jflow_version: str
    precision: str
    precision_policy: list[dict[str, str]]
    model: dict[str, Any]
    limits: dict[str, int]
    graphs: dict[str, dict[str, Any]]
    reference: dict[str, Any]
    tools: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole manifest, other keys included

    # ---- loading -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, dir: str | Path, check_files: bool = True) -> "Manifest":
        """Read DIR/manifest.json, check its schema, and (by default) the sha256 of every listed file."""
        root = Path(dir)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise ArtifactError(f"not a jflow artifact: {root} {what}; run `jflow-export onnx` first "
                                f"to write one (or pass the artifact folder)")
        mpath = root / MANIFEST_NAME
        if not mpath.is_file():
            raise ArtifactError(f"not a jflow artifact: {root} has no {MANIFEST_NAME}; run `jflow-export onnx` "
                                f"first (an interrupted export leaves no manifest, so export again)")
        try:
            data = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{mpath} is not valid JSON ({e}); the artifact is damaged, {_REEXPORT}") from None
        except OSError as e:
            raise ArtifactError(f"cannot read {mpath}: {e}") from None
        m = cls.from_dict(data, root, source=str(mpath))
        if check_files:
            m.check_files()
        return m

    @classmethod
    def from_dict(cls, data: Any, root: str | Path, source: str = MANIFEST_NAME) -> "Manifest":
        """Validate a manifest dict (as read from JSON) and build a Manifest rooted at `root`."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: expected a JSON object at the top level, got "
                                f"{type(data).__name__}; {_REEXPORT}")
        if "schema_version" not in data:
            raise ArtifactError(f"{source} has no schema_version; this jflow ({JFLOW_VERSION}) reads artifact "
                                f"schema version {SCHEMA_VERSION}. Re-export the artifact with `jflow-export onnx` "
                                f"from a matching jflow")
        sv = data["schema_version"]
        if sv != SCHEMA_VERSION or isinstance(sv, bool):
            by = data.get("jflow_version", "an unknown jflow version")
            raise ArtifactError(f"{source}: artifact schema version {sv!r} (written by jflow {by}), but this jflow "
                                f"({JFLOW_VERSION}) reads schema version {SCHEMA_VERSION}; re-export the artifact "
                                f"with `jflow-export onnx` from a matching jflow, or install the jflow that wrote it")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ArtifactError(f"{source} is missing required key(s): {', '.join(missing)}; {_REEXPORT}")
        wrong = [f"{k} (expected {_REQUIRED[k].__name__}, got {type(data[k]).__name__})"  # type: ignore[union-attr]
                 for k in _REQUIRED if not isinstance(data[k], _REQUIRED[k])]
        if wrong:
            raise ArtifactError(f"{source}: wrong type for {', '.join(wrong)}; {_REEXPORT}")
        if data["precision"] not in PRECISIONS:
            raise ArtifactError(f"{source}: precision {data['precision']!r} is not one of {', '.join(PRECISIONS)}; "
                                f"{_REEXPORT}")
        lim_missing = [k for k in _LIMITS if not isinstance(data["limits"].get(k), int)]
        if lim_missing:
            raise ArtifactError(f"{source}: limits lacks integer {', '.join(lim_missing)}; {_REEXPORT}")
        for name, g in data["graphs"].items():
            _check_graph(name, g, source)
        for rel, digest in data["files"].items():
            _safe_rel(rel, "files entry")
            if not (isinstance(digest, str) and len(digest) == 64):
                raise ArtifactError(f"{source}: files[{rel!r}] is not a sha256 hex digest; {_REEXPORT}")
        _check_reference(data["reference"], source)
        # Everything the runtime opens must be covered by a hash, or the sha256 check proves nothing.
        unhashed = [p for p in _referenced_paths(data) if p not in data["files"]]
        if unhashed:
            raise ArtifactError(f"{source}: file(s) {', '.join(unhashed)} are used but have no sha256 under "
                                f"\"files\"; {_REEXPORT}")
        return cls(root=Path(root), **{k: data[k] for k in _REQUIRED}, data=data)

    # ---- integrity -----------------------------------------------------------------------------------
    def file_problems(self) -> list[str]:
        """One line per listed file that is missing or whose sha256 differs; empty when all are intact."""
        problems = []
        for rel, digest in self.files.items():
            p = self.root / rel
            if not p.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(p) != digest.lower():
                problems.append(f"{rel}: altered (sha256 mismatch)")
        return problems

    def check_files(self) -> None:
        """ArtifactError listing every missing or altered file, or nothing when the artifact is intact."""
        problems = self.file_problems()
        if problems:
            lines = "\n".join(f"  {p}" for p in problems)
            raise ArtifactError(f"artifact {self.root} failed its integrity check "
                                f"({len(problems)} of {len(self.files)} file(s)):\n{lines}\n"
                                f"Re-export the artifact with `jflow-export onnx`, or copy the whole folder again.")

    # ---- access --------------------------------------------------------------------------------------
    def graph(self, name: str) -> dict[str, Any]:
        """The manifest entry of one graph ({"file", "inputs", "outputs", "ranges"})."""
        try:
            return self.graphs[name]
        except KeyError:
            have = ", ".join(self.graphs) or "none"
            raise ArtifactError(f"artifact {self.root} has no graph {name!r}; it has: {have}") from None

    def path(self, rel: str) -> Path:
        """Absolute path of a file named relative to the artifact folder (as in the manifest)."""
        return (self.root / _safe_rel(rel, "path")).absolute()

    def graph_path(self, name: str) -> Path:
        """Absolute path of a graph's .onnx file."""
        return self.path(self.graph(name)["file"])

    def reference_path(self, name: str) -> Path | None:
        """Absolute path of a graph's reference npz, or None when the artifact has none for it."""
        rel = self.reference.get("graphs", {}).get(name)
        return None if rel is None else self.path(rel)


def _check_graph(name: str, g: Any, source: str) -> None:
    if not isinstance(g, dict):
        raise ArtifactError(f"{source}: graphs[{name!r}] must be an object; {_REEXPORT}")
    missing = [k for k in ("file", "inputs", "outputs") if k not in g]
    if missing:
        raise ArtifactError(f"{source}: graphs[{name!r}] is missing {', '.join(missing)}; {_REEXPORT}")
    _safe_rel(g["file"], f"graphs[{name!r}].file")
    for side in ("inputs", "outputs"):
        ios = g[side]
        if not isinstance(ios, list) or not ios:
            raise ArtifactError(f"{source}: graphs[{name!r}].{side} must be a non-empty list; {_REEXPORT}")
        for io in ios:
            if not (isinstance(io, dict) and isinstance(io.get("name"), str) and io.get("dtype") in DTYPES
                    and isinstance(io.get("shape"), list)):
                raise ArtifactError(f"{source}: graphs[{name!r}].{side} has a bad entry {io!r} (needs name, "
                                    f"dtype in {DTYPES}, shape); {_REEXPORT}")
    if not isinstance(g.get("ranges", {}), dict):
        raise ArtifactError(f"{source}: graphs[{name!r}].ranges must be an object; {_REEXPORT}")


def _check_reference(ref: dict, source: str) -> None:
    graphs = ref.get("graphs", {})
    e2e = ref.get("end_to_end", {})
    if not isinstance(graphs, dict) or not isinstance(e2e, dict):
        raise ArtifactError(f"{source}: reference.graphs and reference.end_to_end must be objects; {_REEXPORT}")
    for k, rel in {**graphs, **e2e}.items():
        _safe_rel(rel, f"reference[{k!r}]")


def _referenced_paths(data: dict) -> list[str]:
    ref = data["reference"]
    paths = [g["file"] for g in data["graphs"].values()]
    paths += list(ref.get("graphs", {}).values()) + list(ref.get("end_to_end", {}).values())
    return list(dict.fromkeys(paths))
