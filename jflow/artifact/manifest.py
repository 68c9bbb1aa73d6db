"""The artifact manifest and its one reader, `Manifest.load` (the one writer is `jflow.artifact.writer`). Stdlib only.

An artifact is one plain folder DIR with DIR/manifest.json, which names the model config, the graphs
(file, input/output names, dtypes, shapes, dynamic ranges), the precision and its policy, the reference
files, the tool versions and the sha256 of every other file in DIR. Loading checks the schema version,
the runtime's contract (`jflow.artifact.contract`) and every file: by its sha256, or, after one full
check, by a verified stamp (size, mtime, ctime, inode of each file, tied to this manifest's own hash) so
a start-up does not re-read gigabytes; a changed file is hashed again. Symbolic links are refused: an
artifact is a plain folder, and a link could make the runtime read (or a build write) outside it.

The optional sections are read typed (`engines`, `tolerances`, `quantization`, `forms`), built by the
same contract functions that checked them at load: what is validated is what is read.

Schema: version 2 since the first public artifacts. Manifests written before the typed reader (same
version, same keys) load and verify unchanged; a manifest of another version is refused with one line
saying to re-export.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jflow import __version__ as JFLOW_VERSION
from jflow.artifact import stamp
from jflow.artifact.brief import listing
from jflow.artifact.contract import (REEXPORT, REQUIRED_KEYS, ArtifactError, check_contract, forms_of, read_engines,
                                     read_quantization, read_tolerances, reference_files, safe_rel)
from jflow.artifact.files import MANIFEST_NAME, links_under, sha256_file
from jflow.artifact.sections import Engines, Quantization, Tolerances
from jflow.artifact.spec import GraphSpec
from jflow.json_file import BadJSON, parse_json, read_bounded

SCHEMA_VERSION = 2
CHECKS = ("stamp", "full", "none")
SHOWN_PROBLEMS = 10  # lines of a failed integrity check; the rest is counted

__all__ = ["ArtifactError", "Manifest", "MANIFEST_NAME", "SCHEMA_VERSION", "sha256_file"]


@dataclass
class Manifest:
    """A loaded manifest.json; `root` is the artifact folder the relative paths are resolved against."""

    root: Path
    data: dict[str, Any] = field(repr=False)
    digest: str = ""  # sha256 of manifest.json itself
    verified: dict = field(default_factory=dict, repr=False)  # {file: stamp identity} the last check proved

    def __getattr__(self, key: str) -> Any:  # manifest.precision, .limits, .graphs, .files, ...
        if key in REQUIRED_KEYS:
            return self.data[key]
        raise AttributeError(key)

    # ---- loading -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, dir: "str | Path | Manifest", check_files: bool | str = True) -> "Manifest":
        """Read DIR/manifest.json, check its schema and contract, then its files.

        check_files: "stamp" (True) hashes only files that changed since the last full check, "full"
        hashes every file, "none" (False) checks nothing on disk. `dir` may also be a Manifest a writer
        drafted and has not written yet (`ArtifactWriter.draft`): its files are checked the same way, so
        `quantize` verifies what it is about to write before writing it."""
        mode = {True: "stamp", False: "none"}.get(check_files, check_files)
        if mode not in CHECKS:
            raise ValueError(f"check_files must be one of {CHECKS}, got {check_files!r}")
        if isinstance(dir, Manifest):
            if mode != "none":
                dir.check_files(full=mode == "full")
            return dir
        root = Path(dir)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise ArtifactError(f"not a jflow artifact: {root} {what}; run `jflow-export onnx` first "
                                f"to write one (or pass the artifact folder)")
        mpath = root / MANIFEST_NAME
        if mpath.is_symlink() or not mpath.is_file():
            why = "is a symbolic link" if mpath.is_symlink() else "is missing"
            raise ArtifactError(f"not a jflow artifact: {root}/{MANIFEST_NAME} {why}; run `jflow-export onnx` "
                                f"first (an interrupted export leaves no manifest, so export again)")
        try:
            raw = read_bounded(mpath)
            data = parse_json(raw)
        except BadJSON as e:
            raise ArtifactError(f"{mpath} {e}; the artifact is damaged, {REEXPORT}") from None
        except OSError as e:
            raise ArtifactError(f"cannot read {mpath}: {e}") from None
        m = cls.from_dict(data, root, source=str(mpath))
        m.digest = hashlib.sha256(raw).hexdigest()
        if mode != "none":
            m.check_files(full=mode == "full")
        return m

    @classmethod
    def from_dict(cls, data: Any, root: str | Path, source: str = MANIFEST_NAME) -> "Manifest":
        """Validate a manifest dict (as read from JSON) and build a Manifest rooted at `root`."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: expected a JSON object at the top level, got "
                                f"{type(data).__name__}; {REEXPORT}")
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
        check_contract(data, source)
        return cls(root=Path(root), data=data)

    def to_bytes(self) -> bytes:
        """manifest.json as the writer writes it (its sha256 is `digest`)."""
        return (json.dumps(self.data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    # ---- integrity -----------------------------------------------------------------------------------
    def file_problems(self, full: bool = True) -> list[str]:
        """One line per listed file that is missing, a link, or whose sha256 differs (empty when intact).
        With full=False, files whose size/mtime/ctime/inode match the verified stamp are not read again."""
        known = {} if full else stamp.read(self.root, self.digest)
        problems, seen = [], {}
        for rel, digest in self.files.items():
            p = self.root / rel
            link = links_under(self.root, rel)
            if link is not None:
                problems.append(f"{rel}: {link} is a symbolic link (an artifact is a plain folder)")
                continue
            if not p.is_file():
                problems.append(f"{rel}: missing")
                continue
            identity = stamp.identity(p)
            if known.get(rel) == identity:
                seen[rel] = identity
            elif sha256_file(p) != digest.lower():
                problems.append(f"{rel}: altered (sha256 mismatch)")
            elif stamp.identity(p) == identity:  # not changed while it was read: what was hashed is this file
                seen[rel] = identity
        self.verified = seen  # the Pipeline pins these: a file opened later must still be the one checked
        if not problems:
            stamp.write(self.root, self.digest, seen)
        return problems

    def still_verified(self, rel: str, pinned: list[int] | None) -> list[int] | None:
        """The identity of listed file `rel` now, when it is still the file that was checked though its identity
        is no longer `pinned`: its sha256 is still the listed one (a hard link, chmod or `touch` moves ctime
        without changing a byte). None when it is gone, a link, or its content differs."""
        path = self.root / rel
        try:
            now = stamp.identity(path)
            same = links_under(self.root, rel) is None and sha256_file(path) == self.files[rel].lower()
            return now if same and stamp.identity(path) == now else None
        except OSError:
            return None

    def check_files(self, full: bool = True) -> None:
        """ArtifactError listing every missing, linked or altered file, or nothing when the artifact is intact."""
        problems = self.file_problems(full)
        if problems:
            lines = listing(problems, SHOWN_PROBLEMS, sep="\n  ")
            kinds = Counter("missing" if p.endswith(": missing") else "altered" if p.endswith("mismatch)")
                            else "symbolic links" for p in problems)
            counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
            raise ArtifactError(f"artifact {self.root} failed its integrity check "
                                f"({len(problems)} of {len(self.files)} file(s): {counts}):\n  {lines}\n"
                                f"Re-export the artifact with `jflow-export onnx`, or copy the whole folder again.")

    # ---- access --------------------------------------------------------------------------------------
    def graph(self, name: str) -> dict[str, Any]:
        """The manifest entry of one graph ({"file", "inputs", "outputs", "ranges", "precision"})."""
        try:
            return self.graphs[name]
        except KeyError:
            have = listing(self.graphs) or "none"
            raise ArtifactError(f"artifact {self.root} has no graph {name!r}; it has: {have}") from None

    def path(self, rel: str) -> Path:
        """Absolute path of a file named relative to the artifact folder (as in the manifest)."""
        return (self.root / safe_rel(rel, "path")).absolute()

    def graph_path(self, name: str) -> Path:
        return self.path(self.graph(name)["file"])

    def graph_precision(self, name: str) -> str:
        return self.graph(name).get("precision", self.precision)

    def reference_path(self, name: str) -> Path | None:
        """Absolute path of a graph's (or an end-to-end case's) reference npz, or None when there is none."""
        graphs, cases = reference_files(self.reference)
        rel = graphs.get(name) or cases.get(name)
        return None if rel is None else self.path(rel)

    def spec(self, name: str) -> GraphSpec:
        """One graph's contract as the spec dataclass export wrote it from."""
        return GraphSpec.from_manifest(name, self.graph(name))

    # ---- the typed sections: built by the contract's own readers, from the data as it is now -------------
    @property
    def source(self) -> str:
        return f"{self.root}/{MANIFEST_NAME}"

    @property
    def engines(self) -> Engines:
        """What `jflow-export build` added (Engines(None, None) before any build)."""
        return read_engines(self.data, self.source)

    @property
    def tolerances(self) -> Tolerances:
        return read_tolerances(self.data, self.source)

    @property
    def quantization(self) -> Quantization | None:
        return read_quantization(self.data, self.source)

    @property
    def forms(self) -> dict[str, str]:
        """{form: graph}: llm_ort -> llm (another form of the same graph, over the same weights)."""
        return forms_of(self.graphs, self.source)

    def form_of(self, name: str) -> str | None:
        """The graph that `name` is a form of, or None for a graph of its own."""
        return self.forms.get(name)

    def tolerance(self, group: str) -> dict[str, float]:
        """verify's bound for a graph or an end-to-end case ("e2e:generation"), as {"rel_l2", "cosine"}."""
        precision = self.graph_precision(group) if group in self.graphs else self.precision
        return self.tolerances.for_graph(group, precision).as_dict()

    def io(self, name: str, side: str = "inputs") -> dict[str, dict]:
        """{tensor name: entry} of one graph's inputs or outputs."""
        return {t["name"]: t for t in self.graph(name)[side]}

