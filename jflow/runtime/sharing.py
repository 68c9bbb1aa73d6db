"""How one `Pipeline` is shared: by threads, and with whatever happens to its folder while it is loaded.

Threads: the Pipeline's requests are serialised by one re-entrant lock (`serialised`). A call holds it
from its first graph to its last; a stream holds it only while it computes its next token, so a stream
that is paused, driven from several threads or dropped half-way blocks no one. The lock is re-entrant
so a call made from inside another (generate -> generate_latents, a progress callback) runs at once.

Files: `Pipeline.load` checks every file (sha256, or the verified stamp), but a graph is opened when a
request first needs it, maybe hours later. `PinnedFiles` remembers each file as the check saw it (its
stamp identity: size, times, inode), and a graph is opened only while every file is still that one, so
a replaced or edited folder is refused instead of run unchecked.
"""

from __future__ import annotations

import functools
from pathlib import Path

from jflow.artifact import stamp
from jflow.artifact.brief import listing
from jflow.artifact.manifest import ArtifactError, Manifest

CLOSED = "this Pipeline was closed; load the artifact again with Pipeline.load(...)"


def serialised(method):
    """Run a Pipeline method under its request lock, and refuse it on a closed Pipeline."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            self.check_open()
            return method(self, *args, **kwargs)
    return locked


def _identity(path: Path):
    try:
        return stamp.identity(path)
    except OSError:  # missing now: it differs from what was checked, unless it was missing then too
        return None


class PinnedFiles:
    """The artifact's listed files as the integrity check saw them (as they are now, where none ran)."""

    def __init__(self, manifest: Manifest):
        self.manifest, self.root = manifest, manifest.root
        self.files = {rel: manifest.verified.get(rel) or _identity(manifest.root / rel) for rel in manifest.files}

    def check(self, doing: str) -> None:
        """ArtifactError naming the files that are no longer the ones checked (a stat per file: cheap, and
        done only when a graph is opened)."""
        changed = []
        for rel, pinned in self.files.items():
            if _identity(self.root / rel) == pinned:
                continue
            # A hard link or chmod (`jflow-export triton` links the artifact's files) moves only the ctime:
            # a file whose bytes still hash to the manifest's sha256 is re-pinned, not refused.
            now = self.manifest.still_verified(rel, pinned)
            if now is None:
                changed.append(rel)
            else:
                self.files[rel] = now
        if changed:
            raise ArtifactError(f"artifact {self.root} changed after Pipeline.load checked it: {len(changed)} of "
                                f"{len(self.files)} file(s) are not the ones checked ({listing(changed, 3)}); the "
                                f"folder was moved, replaced or edited. Found while {doing}, so nothing was run "
                                "from them: load the artifact again with Pipeline.load(...)")
