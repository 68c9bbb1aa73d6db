"""The files of an artifact folder: which ones belong to it, their sha256, and where writers may put more.
Stdlib only.

An artifact is one plain folder. Symbolic links are refused everywhere: a link could make the runtime
read (or a build write) outside it. Hidden entries are the temporary files and folders of writes in
progress (or killed), never members.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

from jflow.artifact.contract import ArtifactError, safe_rel

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20  # hash files in 1 MiB chunks: multi-GB weight files never sit in memory


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of one file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def links_under(root: Path, rel: str) -> str | None:
    """The first symbolic link on the way from `root` to `rel` (the member included), or None."""
    here = root
    for part in Path(rel).parts:
        here = here / part
        if here.is_symlink():
            return here.relative_to(root).as_posix()
    return None


def member_dir(root: str | Path, rel: str) -> Path:
    """root/rel as a folder that writers may fill: refused when it, or anything on the way to it, is a
    symbolic link (a build would write outside the artifact). Created when missing."""
    root = Path(root)
    link = links_under(root, safe_rel(rel, "output folder"))
    if link is not None:
        raise ArtifactError(f"{root}: {link} is a symbolic link; an artifact is a plain folder, so nothing is "
                            f"written through it. Remove the link (and copy real files in) before building")
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def members(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file under `root` but manifest.json and hidden entries; a symbolic
    link anywhere is refused."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames + filenames:
            if (here / name).is_symlink() and not name.startswith("."):
                rel = (here / name).relative_to(root).as_posix()
                raise ArtifactError(f"{root}: {rel} is a symbolic link; an artifact is a plain folder, so copy the "
                                    "file into it instead of linking")
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            rel = (here / name).relative_to(root).as_posix()
            if rel != MANIFEST_NAME and not name.startswith("."):
                yield rel, here / name


def file_hashes(root: str | Path) -> dict[str, str]:
    """{relative posix path: sha256} of every member file under `root` (see `members`), sorted by path."""
    return {rel: sha256_file(path) for rel, path in sorted(members(Path(root)))}
