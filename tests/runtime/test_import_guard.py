"""The runtime must run on a Jetson with numpy, onnxruntime/tensorrt, tokenizers and pillow only."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "diffusers")

PROBE = """
import importlib, pkgutil, sys
import jflow, jflow.errors, jflow.cli, jflow.runtime
for mod in pkgutil.walk_packages(jflow.runtime.__path__, "jflow.runtime."):
    importlib.import_module(mod.name)
print(",".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_runtime_and_cli_import_without_torch():
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "", f"importing the runtime pulled in: {out.stdout.strip()}"


def test_runtime_works_when_torch_cannot_be_imported(tmp_path):
    # Shadow the heavy packages with modules that fail on import, as on a device without them.
    for name in HEAVY:
        (tmp_path / f"{name}.py").write_text("raise ImportError('not installed on this device')\n")
    code = PROBE.format(heavy=HEAVY) + "\nfrom jflow.runtime.ode import time_grid; print(time_grid(30)[0][1])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "33.25"
