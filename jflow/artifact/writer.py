"""The one writer of an artifact's manifest.json: export creates it, quantize creates it once it has measured
the new artifact, build updates it with the engines it added. Stdlib only.

A manifest is drafted first (every file hashed, the schema and the runtime's contract checked: the same
`Manifest` a reader gets) and written in one atomic replace (temp file + fsync + rename), last: a folder
without a manifest is not an artifact, and a reader sees the old manifest or the new one, never a mix.
Its first two keys stay schema_version and jflow_version, which is how `--force` knows a folder jflow wrote
before folders carried their `.jflow-output.json` mark (`jflow.output_folders`); hidden entries (that mark,
temporary files of writes in progress) are never listed or hashed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

from jflow import __version__ as JFLOW_VERSION
from jflow.artifact.files import MANIFEST_NAME, members, sha256_file
from jflow.artifact.manifest import SCHEMA_VERSION, Manifest
from jflow.fsutil import atomic_write_bytes


class ArtifactWriter:
    """Writes root/manifest.json. `create(sections)` and `update(changes)` draft and write in one call;
    `draft` / `revise` and `write` apart let a caller check what it is about to write (quantize verifies
    its draft, then writes the draft with the bounds it measured)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def create(self, sections: dict[str, Any]) -> Manifest:
        """A new manifest for every file under the folder (see `draft`), written."""
        return self.write(self.draft(sections))

    def update(self, changes: dict[str, Any], rehash: Iterable[str] = ()) -> Manifest:
        """The folder's manifest with top-level `changes` (see `revise`), written."""
        return self.write(self.revise(changes, rehash))

    def draft(self, sections: dict[str, Any]) -> Manifest:
        """A manifest of `sections` (all but the versions and the file hashes) for the files now under the
        folder, every one hashed, checked like a loaded one. Nothing is written."""
        hashes = {rel: sha256_file(path) for rel, path in sorted(members(self.root))}
        data = {"schema_version": SCHEMA_VERSION, "jflow_version": JFLOW_VERSION, **sections, "files": hashes}
        return self._checked(data, "being written")

    def revise(self, changes: dict[str, Any], rehash: Iterable[str] = (), base: Manifest | None = None) -> Manifest:
        """The folder's manifest (or `base`, a draft of this folder) with top-level `changes`: the files in
        `rehash` and any file not listed yet (engines a build added) are hashed, the rest is not re-read.
        Nothing is written."""
        base = base if base is not None else Manifest.load(self.root, check_files=False)
        data = {**base.data, **changes}
        files, rehash = dict(data["files"]), set(rehash)
        for rel, path in members(self.root):
            if rel not in files or rel in rehash:
                files[rel] = sha256_file(path)
        data["files"] = dict(sorted(files.items()))
        return self._checked(data, "being updated")

    def write(self, manifest: Manifest) -> Manifest:
        """Replace root/manifest.json with `manifest`, atomically. Returns it (its digest is the file's)."""
        if Path(manifest.root) != self.root:
            raise ValueError(f"a manifest of {manifest.root} cannot be written into {self.root}")
        atomic_write_bytes(self.root / MANIFEST_NAME, manifest.to_bytes())
        return manifest

    def _checked(self, data: dict[str, Any], doing: str) -> Manifest:
        manifest = Manifest.from_dict(data, self.root, source=f"{self.root}/{MANIFEST_NAME} ({doing})")
        manifest.digest = hashlib.sha256(manifest.to_bytes()).hexdigest()
        return manifest
