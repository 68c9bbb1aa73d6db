"""torch -> ONNX for one graph: the dynamo exporter (lower peak memory than the legacy one), weights as
external data, input/output axes renamed to the contract's names, checked with onnx.checker and shape
inference. Constant folding and dead-node removal come from the exporter's onnxscript optimizer."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch.export import Dim

from jflow.artifact.spec import GraphSpec

OPSET = 18


def _dynamic_shapes(module: torch.nn.Module, spec: GraphSpec) -> tuple:
    """One entry per forward parameter; a trailing *args parameter (the LLM's KV list) gets a tuple."""
    # Dim.DYNAMIC lets torch.export find the relations between axes (e.g. total = past + seq) itself.
    per_input = [{i: Dim.DYNAMIC for i, d in enumerate(t.shape) if isinstance(d, str)} for t in spec.inputs]
    params = inspect.signature(module.forward).parameters.values()
    fixed = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return tuple(per_input[:fixed]) + (tuple(per_input[fixed:]),)
    return tuple(per_input)


def export_graph(module: torch.nn.Module, spec: GraphSpec, example: dict[str, torch.Tensor], path: Path) -> None:
    """Export `module(**example)` (outputs in spec order) to `path` + `path.data`."""
    module.eval()
    args = tuple(example[name] for name in spec.input_names)
    # The exporter prints progress and warns about optional packages (torchvision) we never use.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", (UserWarning, FutureWarning, DeprecationWarning))
        program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, optimize=True,
                                    input_names=spec.input_names, output_names=spec.output_names,
                                    dynamic_shapes=_dynamic_shapes(module, spec),
                                    verbose=False)
    program.save(str(path), external_data=True)
    name_axes(path, spec)
    onnx.checker.check_model(str(path), full_check=False)
    onnx.shape_inference.infer_shapes_path(str(path), str(path))


def name_axes(path: Path, spec: GraphSpec) -> None:
    """Give the graph's inputs and outputs the contract's names, dtypes and symbolic axes."""
    model = onnx.load(str(path), load_external_data=False)
    declared = {t.name: t for t in spec.inputs + spec.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in declared:
            raise RuntimeError(f"jflow bug: graph {spec.name} has an undeclared tensor {value.name}")
        dims = value.type.tensor_type.shape.dim
        for dim, want in zip(dims, declared[value.name].shape):
            if isinstance(want, str):
                dim.ClearField("dim_value")
                dim.dim_param = want
            elif dim.HasField("dim_value") and dim.dim_value != want:
                raise RuntimeError(f"jflow bug: {spec.name}.{value.name} has {dim.dim_value}, contract says {want}")
    names = [v.name for v in model.graph.input]
    if names != spec.input_names:
        raise RuntimeError(f"jflow bug: {spec.name} inputs {names} != contract {spec.input_names}")
    onnx.save(model, str(path))
