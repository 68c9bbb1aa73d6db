"""Safe writes of files and folders, shared by the host and the device side (stdlib only).

- `atomic_file` / `atomic_write_bytes`: a file appears whole under its name or not at all. The
  temporary file is created by mkstemp in the target's folder (O_EXCL under an unpredictable name, so
  a symlink planted there is never followed), then renamed over the target.
- `check_writable_file` / `check_new_dir` / `check_writable_dir`: refuse an output path before any
  work starts, by creating and removing a probe there (os.access is wrong for root and read-only mounts).
- `staged_dir` / `publish_dir`: a folder written under a private temporary name and published in one
  rename; without `replace` the rename itself refuses a target that appeared meanwhile. With `replace`
  only a folder jflow wrote is replaced (`jflow.output_folders`), checked again just before the swap.
- Names: an output name longer than its folder allows (NAME_MAX) is refused up front, and the
  temporary names derived from it are shortened to fit, so a legal name never fails at the end.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Iterator

from jflow import ownership
from jflow.errors import OutputError
from jflow.output_folders import check_apart, check_not_protected, check_replaceable, mark_output, written_by_jflow

PARTIAL = ".partial-"  # .NAME.partial-XXXXXXXX: a folder being written for NAME (see staged_dir)
CONTENT = "content"    # what becomes NAME; the marker stays outside it, so it is never published
SCRATCH = ".jflow-scratch-"
_RANDOM = 8  # characters tempfile adds to a prefix
_TEMP_ROOM = 32  # bytes a temporary name (.NAME.partial-XXXXXXXX/content) may add to a path
DEFAULT_NAME_MAX = 255


@contextmanager
def atomic_file(path: str | Path, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file object whose bytes appear at `path` only when the block ends without error."""
    path = Path(path)
    try:
        prefix = temp_prefix(path.name, "", path.parent, reserve=_RANDOM + len(".tmp"))
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data
        os.chmod(tmp, mode & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _cannot_write(path, exc) from exc
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


@contextmanager
def scratch_dir(folder: str | Path) -> Iterator[Path]:
    """A private folder inside `folder` for tools that write files by name; removed at the end (and,
    when its process was killed, by the next scratch_dir in `folder`: it carries an owner marker)."""
    folder = Path(folder)
    try:
        remove_abandoned(folder, SCRATCH)
        scratch = Path(tempfile.mkdtemp(prefix=SCRATCH, dir=folder))
        ownership.mark(scratch)
    except OSError as exc:
        raise _cannot_write(folder, exc) from exc
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_writable_file(path: str | Path, what: str = "the output file", example: str = "out.png") -> Path:
    """Refuse a file path that cannot be written: a folder, a missing folder, an unwritable one, or a name
    too long for its folder. `example`: a file name to suggest when `path` is a folder (its own extension)."""
    path = Path(path)
    check_name_length(path, what)  # first: a name too long cannot even be looked at
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name, e.g. {path / example}")
    if not path.parent.is_dir():
        state = "is not a folder" if path.parent.exists() else "does not exist"
        raise OutputError(f"cannot write {what} {path}: {path.parent} {state}; create the folder or choose another")
    _probe(path.parent, f"{what} {path}")
    return path


def check_name_length(path: str | Path, what: str = "the output") -> None:
    """Refuse a path with a component longer than its file system allows (bytes, NAME_MAX) or that is
    longer than PATH_MAX in all, before any work: writing it would fail only at the end."""
    full = Path(os.path.abspath(path))
    limit = name_max(full.parent)
    for part in full.parts[1:]:
        size = len(os.fsencode(part))
        if size > limit:
            raise OutputError(f"{what} {_short(path)}: the name {_short(part)} is {size} bytes; this file system "
                              f"allows at most {limit}: choose a shorter name")
    total, most = len(os.fsencode(str(full))), _path_max(full.parent) - 1 - _TEMP_ROOM
    if total > most:
        raise OutputError(f"{what} {_short(path)}: the path is {total} bytes; this system allows {most} (PATH_MAX "
                          f"less {_TEMP_ROOM} for jflow's temporary names): choose a shorter path")


def _short(text) -> str:
    text = str(text)
    return text if len(text) <= 60 else f"{text[:28]}...{text[-28:]}"


def name_max(folder: str | Path) -> int:
    """Longest file name (bytes) allowed in `folder` (or in its nearest existing parent)."""
    return _pathconf(folder, "PC_NAME_MAX", DEFAULT_NAME_MAX)


def _path_max(folder: Path) -> int:
    return _pathconf(folder, "PC_PATH_MAX", 4096)


def _pathconf(folder: str | Path, name: str, default: int) -> int:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        value = os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):
        return default
    return value if isinstance(value, int) and value > 0 else default


def temp_prefix(name: str, tag: str, folder: str | Path, reserve: int) -> str:
    """".NAME.TAG", NAME shortened so that the prefix plus `reserve` more bytes fits `folder`'s NAME_MAX:
    a temporary name is never what makes a legal output name fail."""
    room = name_max(folder) - reserve - len(os.fsencode(f"..{tag}"))
    while len(os.fsencode(name)) > max(room, 1):
        name = name[:-1]
    return f".{name}.{tag}"


def check_new_dir(path: str | Path, what: str = "the output folder", replace: bool = False,
                  sources=()) -> Path:
    """Refuse a folder to create (or, with `replace`, to replace) that cannot be written, that --force may
    not replace (see jflow.output_folders), or that is, contains or lies inside one of `sources`."""
    path = Path(os.path.abspath(path))  # "out/.." names the folder it is, not an entry ".."
    check_apart(path, sources, what)
    if os.path.lexists(path):
        check_not_protected(path, what)
        if not replace:
            raise OutputError(f"{path} already exists; choose another folder, or replace it with --force")
        check_replaceable(path, what)
    check_name_length(path, what)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create {what} {path}: {ancestor} is a file, not a folder")
    _probe(ancestor, f"{what} {path}")
    return path


def check_writable_dir(path: str | Path, what: str = "the folder") -> Path:
    """Refuse an existing folder that files will be written into but cannot be."""
    path = Path(path)
    if not path.is_dir():
        raise OutputError(f"{what} {path} is not a folder")
    _probe(path, f"{what} {path}")
    return path


@contextmanager
def staged_dir(out: str | Path, replace: bool = False, kind: str = "folder", sources=()) -> Iterator[Path]:
    """A folder to write `out` into, published as `out` in one rename when the block succeeds.

    It lives in a hidden sibling .NAME.partial-XXXX with an owner marker, so one left by a killed
    process is removed by the next run for the same NAME (and nothing unmarked ever is). The result
    carries jflow's output mark (`kind` says what it is), so a later --force may replace it.
    `sources`: the inputs the folder must stay apart from (see check_new_dir).
    """
    out = Path(os.path.abspath(out))
    check_apart(out, sources, "the output folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        partial = Path(tempfile.mkdtemp(prefix=partial_prefix(out), dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {out.parent}: {exc.strerror or exc}; choose another folder") from exc
    try:
        ownership.mark(partial)
        content = partial / CONTENT
        content.mkdir()
        mark_output(content, kind)
        yield content
        publish_dir(content, out, replace=replace, sources=sources)
    except OSError as exc:  # disk full, permissions: one line for the user, not a traceback
        raise OutputError(f"writing {out} failed: {exc}; nothing was published (check free space and "
                          "permissions)") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete .NAME.partial-* folders next to `out` whose marker proves their writer is gone."""
    return remove_abandoned(out.parent, partial_prefix(out))


def partial_prefix(out: Path) -> str:
    """.NAME.partial- (NAME shortened to fit the folder with mkdtemp's random tail)."""
    return temp_prefix(out.name, PARTIAL[1:], out.parent, reserve=_RANDOM)


def remove_abandoned(folder: Path, prefix: str) -> list[Path]:
    """Delete the folders in `folder` named prefix* whose owner marker proves their writer is gone."""
    removed = []
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and ownership.is_abandoned(Path(entry.path)):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
    return removed


def publish_dir(tmp: Path, out: Path, replace: bool = False, sources=()) -> None:
    """Make the finished folder `tmp` appear as `out` in one rename.

    Without `replace`, an `out` that exists at the moment of the rename is an error and is left as it
    is (of two writers racing for a new `out`, exactly one wins). With `replace`, an existing `out` is
    checked (jflow wrote it, nothing protected: the check that counts is this one, just before the
    swap), moved next to `tmp` (inside the marked partial folder), checked again there (what was moved
    is what was checked), swapped with `tmp`, then removed.
    """
    tmp, out = Path(tmp), Path(out)
    try:
        if not replace:
            rename_noreplace(tmp, out)
        elif os.path.lexists(out):
            check_apart(out, sources, "the output folder")
            check_replaceable(out, "the output folder")
            old = tmp.with_name(f"{tmp.name}.old")
            os.replace(out, old)
            if not written_by_jflow(old):  # replaced between the check and the move: put it back
                _put_back(old, out)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except FileExistsError as exc:
        raise OutputError(f"{out} appeared while this was being written (another export to it?) and was left as "
                          "it is; choose another folder, or replace it with --force") from exc
    except OSError as exc:
        raise OutputError(f"cannot publish {out}: {exc.strerror or exc}") from exc


def _put_back(old: Path, out: Path) -> None:
    """Return a folder that is not jflow's to where it was (or, if that name is taken again, beside it)."""
    try:
        rename_noreplace(old, out)
        where = out
    except OSError:
        where = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name, "kept-", out.parent, _RANDOM)[1:],
                                      dir=out.parent))
        os.replace(old, where)
    raise OutputError(f"{out} changed while this was written and is not jflow's output (kept as {where}); "
                      "nothing was replaced: choose another folder")


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, raising FileExistsError when `dst` exists, checked by the rename itself.

    Linux: renameat2(RENAME_NOREPLACE), atomic. Elsewhere, or where the file system lacks it, a
    best-effort fallback: Windows renames never replace; on POSIX a folder is first claimed with an
    exclusive mkdir of `dst` and then renamed onto that empty folder (a crash between the two leaves
    an empty `dst`), a file is hard-linked (link never replaces) and unlinked.
    """
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))  # EEXIST becomes FileExistsError
    if os.name == "nt":
        os.rename(src, dst)
    elif os.path.isdir(src) and not os.path.islink(src):
        os.mkdir(dst)
        try:
            os.rename(src, dst)
        except OSError:
            with suppress(OSError):
                os.rmdir(dst)  # only if still our empty claim
            raise
    else:
        os.link(src, dst)
        os.unlink(src)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.3
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _probe(folder: Path, what: str) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".jflow-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {folder} is not writable ({exc.strerror or exc}); "
                          "choose another folder") from exc


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; check that its folder exists, is writable "
                       "and has free space")


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it (briefly)
    os.umask(mask)
    return mask
