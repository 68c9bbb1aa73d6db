"""Shared fixtures: the tiny JanusFlow in memory and written to disk once per session."""

import pytest


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
