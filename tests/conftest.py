"""Shared fixtures: the tiny JanusFlow in memory and written to disk once per session."""

import pytest

from jflow.artifact import cache_dir

# jflow's cache root as this process found it (the user's ~/.cache/jflow), before the tests move it.
REAL_CACHE = cache_dir.root()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test, and every process a test starts, keeps its caches (verified stamps, calibration samples)
    in a temporary folder: JFLOW_CACHE and XDG_CACHE_HOME point there, so the user's is never written.
    Autouse and session-wide, so it is in place before the session's artifacts are exported and loaded."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        patch.setenv("JFLOW_CACHE", str(folder / "jflow"))
        yield folder / "jflow"


@pytest.fixture(scope="session")
def real_cache():
    """The cache root the tests must leave alone (see private_cache)."""
    return REAL_CACHE


@pytest.fixture(scope="session")
def tiny_ref():
    from jflow.modeling import build_tiny
    return build_tiny(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from jflow.modeling import write_tiny_checkpoint
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def photo():
    """A deterministic 300x200 RGB test picture (uint8 HWC)."""
    import numpy as np
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, tiny_ref):
    """The tiny model exported once (fp32) for the export and runtime tests."""
    from jflow.export.artifact import export_artifact
    from jflow.artifact.spec import Limits
    return export_artifact(tiny_ref, tmp_path_factory.mktemp("art") / "tiny-fp32", log=lambda _: None,
                           limits=Limits(max_batch=3, max_context=1024, max_new_tokens=16))


@pytest.fixture
def leftover_partial():
    """make(parent, name, suffix, owner): a .NAME.partial-SUFFIX folder as a killed writer leaves it.

    owner "dead": marked by a process that has exited; "none": no marker (not provably ours)."""
    import json
    import subprocess
    import sys

    from jflow import fsutil, ownership

    def make(parent, name, suffix, owner="dead"):
        folder = parent / f".{name}{fsutil.PARTIAL}{suffix}"
        (folder / fsutil.CONTENT).mkdir(parents=True)
        (folder / fsutil.CONTENT / "half.onnx").write_bytes(b"half")
        if owner == "dead":
            proc = subprocess.Popen([sys.executable, "-c", "pass"])
            proc.wait()
            (folder / ownership.MARKER).write_text(json.dumps({**ownership.identity(), "pid": proc.pid}))
        return folder
    return make
