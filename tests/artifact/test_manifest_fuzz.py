"""Fuzz the manifest: random field deletions, type changes, path escapes and random bytes. Every case
must end in one clear jflow error or in a pipeline that loads and runs; nothing else may escape."""

import copy
import json
import random
import shutil

import numpy as np
import pytest

from jflow.artifact.manifest import Manifest
from jflow.errors import JFlowError
from jflow.runtime.pipeline import Pipeline

CASES = 240
ESCAPES = ["../outside.onnx", "/etc/passwd", "onnx/../../x", "C:\\\\x", "", "onnx/../../../root/.ssh/id_rsa"]
ODD_VALUES = [None, True, -1, 0, 2**70, 1.5, float("nan"), "64", [], {}, [1, "a"], "\u0000"]


def _leaves(node, path=()):
    """Every (path, value) in the JSON tree, containers included."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    if value is _DELETE:
        del tree[path[-1]]
    else:
        tree[path[-1]] = value


_DELETE = object()


def _mutate(data: dict, rng: random.Random) -> tuple[str, bytes]:
    data = copy.deepcopy(data)
    kind = rng.choice(["delete", "type", "escape", "bytes", "truncate"])
    paths = [p for p, _ in _leaves(data) if p]
    path = rng.choice(paths)
    if kind == "delete":
        _set(data, path, _DELETE)
    elif kind == "type":
        _set(data, path, rng.choice(ODD_VALUES))
    elif kind == "escape":
        strings = [p for p, v in _leaves(data) if isinstance(v, str) and ("/" in v or v.endswith(".json"))]
        _set(data, rng.choice(strings), rng.choice(ESCAPES))
    text = json.dumps(data).encode()
    if kind == "bytes":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    if kind == "truncate":
        return kind, text[:rng.randrange(len(text))]
    return kind, text


def test_fuzz_manifest(tiny_artifact, tmp_path, photo, monkeypatch):
    monkeypatch.setenv("JFLOW_CACHE", str(tmp_path / "cache"))
    art = shutil.copytree(tiny_artifact, tmp_path / "art")
    original = json.loads((art / "manifest.json").read_text())
    rng = random.Random(20261126)
    outcomes = {"refused": 0, "ran": 0}
    for case in range(CASES):
        kind, raw = _mutate(original, rng)
        (art / "manifest.json").write_bytes(raw)
        try:
            Manifest.load(art, check_files=False)
            with Pipeline.load(art, check_files=False) as pipe:  # what loads must also run
                llm = pipe.llm
                cache = llm.new_cache(1, 4)
                logits = pipe.backend.download(llm.prefill(cache, [pipe.embed([pipe.tokenizer.bos_id])]))
                assert np.isfinite(logits).all()
            outcomes["ran"] += 1
        except JFlowError as exc:
            message = str(exc)
            assert message and "Traceback" not in message, (case, kind)
            outcomes["refused"] += 1
        except Exception as exc:  # anything else is a bug: report the case that found it
            pytest.fail(f"case {case} ({kind}): {type(exc).__name__}: {exc}\nmanifest: {raw[:300]!r}")
    assert sum(outcomes.values()) == CASES and outcomes["refused"] > CASES // 2
    print(f"manifest fuzz: {CASES} cases, {outcomes}")
