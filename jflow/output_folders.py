"""What an output folder (`--out`) may be, and what `--force` may replace. Stdlib only.

`--force` replaces a folder only when jflow wrote it: every folder jflow publishes carries a small
mark (OUTPUT_MARK); artifacts written before the mark existed are known by their manifest.json, and
Triton repositories by their generated model.py. It never replaces the current folder or one that
contains it, the home folder or one that contains it, or the root. An output folder may also never
be, contain or lie inside one of the command's inputs (an export would replace its own source).
Paths are compared resolved (symbolic links and `..` followed), so another spelling does not pass.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from jflow import __version__
from jflow.json_file import parse_json
from jflow.errors import OutputError

OUTPUT_MARK = ".jflow-output.json"
_MARK_BYTES = 4096  # a mark (or the head of a manifest) is small; never read a large file to decide
_MANIFEST_HEAD = re.compile(rb'^\s*\{\s*"schema_version"\s*:\s*\d+\s*,\s*"jflow_version"\s*:')
_TRITON_MODEL = Path("janusflow_generate") / "1" / "model.py"
_TRITON_HEAD = b"Written by `jflow-export triton`"
NOT_REPLACED = "--force never replaces it"


def mark_output(folder: Path, kind: str) -> None:
    """Mark `folder` (being staged, private to us) as jflow's output of this kind."""
    data = {"written_by": "jflow", "kind": kind, "jflow_version": __version__}
    (Path(folder) / OUTPUT_MARK).write_text(json.dumps(data) + "\n", encoding="utf-8")


def written_by_jflow(folder: Path) -> bool:
    """True for a real folder (not a link) that carries jflow's mark, a jflow manifest.json at its top
    (artifacts) or a model.py written by `jflow-export triton` (repositories made before the mark)."""
    folder = Path(folder)
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
    except OSError:
        return False
    mark = _head(folder / OUTPUT_MARK)
    if mark is not None:
        try:
            data = parse_json(mark)
        except ValueError:  # BadJSON too: a mark nested 4000 deep is not ours, not a RecursionError
            return False
        return isinstance(data, dict) and data.get("written_by") == "jflow"
    manifest = _head(folder / "manifest.json")
    if manifest is not None and _MANIFEST_HEAD.match(manifest):
        return True
    model_py = _head(folder / _TRITON_MODEL)
    return model_py is not None and _TRITON_HEAD in model_py


def _head(path: Path) -> bytes | None:
    """The first bytes of a regular file (never through a link), or None."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as f:
            return f.read(_MARK_BYTES)
    except OSError:
        return None


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_protected(path: str | Path, what: str) -> None:
    """Refuse the root, the current folder and the home folder, and any folder that contains one of them."""
    target = _resolved(path)
    if target == target.parent:
        raise OutputError(f"{what} {path} is the root folder; {NOT_REPLACED}: name a new folder")
    here = _resolved(os.getcwd())
    if _inside(here, target):
        how = "is the current folder" if here == target else f"contains the current folder {here}"
        raise OutputError(f"{what} {path} {how}; {NOT_REPLACED}: name a new folder")
    home = _home()
    if home is not None and _inside(home, target):
        how = "is your home folder" if home == target else f"contains your home folder {home}"
        raise OutputError(f"{what} {path} {how}; {NOT_REPLACED}: name a new folder")


def _home() -> Path | None:
    try:
        return _resolved(Path.home())
    except (RuntimeError, KeyError, OSError):
        return None


def check_apart(out: str | Path, sources, what: str = "the output folder") -> None:
    """Refuse an output folder that is, contains or lies inside one of `sources` (None entries skipped)."""
    target = _resolved(out)
    for source in sources:
        if source is None or not os.path.exists(source):
            continue  # "tiny", or a name that is no path: nothing on disk to protect
        src = _resolved(source)
        if target == src:
            how = f"is the source {source} itself"
        elif _inside(target, src):
            how = f"lies inside the source {source}"
        elif _inside(src, target):
            how = f"contains the source {source}"
        else:
            continue
        raise OutputError(f"{what} {out} {how}; write the output to a folder outside it")


def check_replaceable(path: str | Path, what: str) -> None:
    """Refuse replacing an existing `path` with --force unless jflow wrote it (and it is not protected)."""
    check_not_protected(path, what)
    if os.path.islink(path):
        raise OutputError(f"{what} {path} is a symbolic link; {NOT_REPLACED}: remove the link or name a new folder")
    if not os.path.isdir(path):
        raise OutputError(f"{what} {path} is a file, not a folder; remove it or choose another name")
    if not written_by_jflow(Path(path)):
        raise OutputError(f"{what} {path} was not written by jflow (it has no {OUTPUT_MARK} or jflow manifest.json); "
                          "--force replaces only jflow's own folders: remove it yourself or choose another name")
