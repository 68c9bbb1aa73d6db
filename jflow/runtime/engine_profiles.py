"""Picking the TensorRT optimization profile that fits a call (the profiles come from the manifest)."""

from __future__ import annotations

from jflow.errors import InputError


def fits(profile: dict, shapes: dict[str, tuple]) -> bool:
    for name, shape in shapes.items():
        low, _, high = profile["shapes"][name]
        if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return False
    return True


def select_profile(profiles: list[dict], shapes: dict[str, tuple]) -> int:
    """Index of the first profile whose ranges hold every input shape; a clear error when none does."""
    for index, profile in enumerate(profiles):
        if fits(profile, shapes):
            return index
    described = ", ".join(f"{n}={list(s)}" for n, s in shapes.items() if not n.startswith("past_"))
    raise InputError(f"no engine profile holds these shapes ({described}); the engines were built for smaller "
                     "limits: rebuild with larger --max-batch / --max-context")
