"""Reading an artifact's numpy files: plain arrays only (numbers; a reference's prompts as strings), and a
damaged one named in one line.

np.load never unpickles here (allow_pickle=False), so an object array, a pickle renamed .npy, a
truncated file or a folder in its place each end in its own numpy exception, which says nothing of
which file it was; `load_npy` and `load_npz` turn them into one ArtifactError naming the file.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from jflow.artifact.contract import REEXPORT, ArtifactError
from jflow.artifact.brief import describe

NUMERIC = "biuf"  # bool, int, uint, float: what the tables hold
TEXT = "US"  # references also hold their prompts and questions as fixed-width strings (no pickle needed)
# What numpy, zipfile and zlib raise on a damaged, truncated or pickled file (never unpickled here).
_DAMAGED = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def load_npy(path: str | Path, what: str, mmap: bool = False) -> np.ndarray:
    """The array in `path` (memory-mapped with mmap=True); ArtifactError when it is not a numeric .npy."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except _DAMAGED as exc:
        raise ArtifactError(f"{path} ({what}) cannot be read as a numeric .npy array ({describe(exc)}); the "
                            f"artifact is damaged, {REEXPORT}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        array.close()
        raise ArtifactError(f"{path} ({what}) is an .npz archive, not one .npy array; {REEXPORT}")
    _check_kind(path, what, array, NUMERIC)
    return array


def load_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """{name: array} of an .npz file, read whole; ArtifactError when it is not an archive of number or
    string arrays."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ArtifactError(f"{path} ({what}) is one .npy array, not an .npz archive; {REEXPORT}")
        with z:
            arrays = {k: z[k] for k in z.files}
    except _DAMAGED as exc:
        raise ArtifactError(f"{path} ({what}) cannot be read as an .npz archive of plain arrays "
                            f"({describe(exc)}); the artifact is damaged, {REEXPORT}") from None
    for name, array in arrays.items():
        _check_kind(path, f"{what}, array {name}", array, NUMERIC + TEXT)
    return arrays


def _check_kind(path, what: str, array: np.ndarray, kinds: str) -> None:
    if array.dtype.kind not in kinds:
        wanted = "numbers" if kinds == NUMERIC else "numbers or text"
        raise ArtifactError(f"{path} ({what}) holds {array.dtype} values, not {wanted}; {REEXPORT}")
