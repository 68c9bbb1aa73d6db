"""The LLM graphs' structure, as quantize needs it: siblings to pack, and GEMMs found by their role (the
portable graph's nodes have no telling names, so roles are found from the wiring, the same way in both forms).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from onnx import TensorProto

from jflow.calibration.smooth import find_pairs
from jflow.calibration.tensors import Tensors


def pack_siblings(model, tensors: Tensors | None = None) -> int:
    """MatMuls that read the same input with constant weights (Q/K/V, gate/up) -> one MatMul on the weights
    side by side, then a Split. Done before quantizing, in both LLM forms alike, so the packed weights are
    the same bytes in both (stored once); the fp32/fp16 artifacts stay unpacked (ORT would have to fold the
    packing at every session start). `tensors`: where the weights lie (default: in `model`); a packed weight
    is made when read. Returns the number of MatMuls packed away."""
    from onnx import helper
    tensors = tensors or Tensors(model)
    inits = {i.name: i for i in model.graph.initializer}
    by_input: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            by_input.setdefault(node.input[0], []).append(node)
    packed, nodes = 0, list(model.graph.node)
    for source, group in by_input.items():
        if len(group) < 2 or len({tuple(inits[n.input[1]].dims)[0] for n in group}) != 1:
            continue
        widths = [inits[n.input[1]].dims[1] for n in group]
        parts = [tensors.reader(n.input[1]) for n in group]
        name, data_type = f"{group[0].name}.packed", inits[group[0].input[1]].data_type
        places = tuple(tensors.places.get(n.input[1]) for n in group)
        tensors.derive(f"{name}.weight", lambda parts=parts: np.concatenate([p() for p in parts], axis=1), data_type,
                       [inits[group[0].input[1]].dims[0], sum(widths)],
                       made_from=("concat", places) if all(places) else None)
        tensors.derive(f"{name}.split", lambda widths=widths: np.array(widths, np.int64), TensorProto.INT64,
                       [len(widths)])
        model.graph.value_info.append(helper.make_tensor_value_info(f"{name}/out", data_type, None))  # typed
        first = nodes.index(group[0])
        nodes[first] = helper.make_node("MatMul", [source, f"{name}.weight"], [f"{name}/out"], name=name)
        nodes.insert(first + 1, helper.make_node("Split", [f"{name}/out", f"{name}.split"],
                                                 [n.output[0] for n in group], name=f"{name}.split", axis=-1))
        for node in group[1:]:
            nodes.remove(node)
        packed += len(group) - 1
    _attention_reads_packed_qkv(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)
    return packed


def drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _attention_reads_packed_qkv(nodes: list) -> None:
    """GroupQueryAttention takes Q, K and V packed in one tensor (key and value left empty): where a packed
    MatMul's Split feeds exactly an attention's q, k, v, drop the Split (one node less per layer in decode,
    where each node costs as much as its work; GenAI's graphs do the same)."""
    readers = Counter(name for node in nodes for name in node.input)
    splits = {tuple(n.output): n for n in nodes if n.op_type == "Split"}
    for node in nodes:
        if node.op_type != "GroupQueryAttention" or len(node.input) < 3:
            continue
        split = splits.get(tuple(node.input[:3]))
        if split is not None and all(readers.get(o) == 1 for o in split.output):
            node.input[0], node.input[1], node.input[2] = split.input[0], "", ""
            nodes.remove(split)


def down_projections(model) -> list[str]:
    """The MLP down projections: the GEMMs reading silu(gate) * up."""
    return [p.matmul for p in find_pairs(model) if p.kind == "columns"]


def attention_projections(model) -> list[str]:
    """The attention output projections (o_proj): weight GEMMs whose input is attention's output, either a
    GroupQueryAttention node or (portable form) the attention x V product reshaped back to the hidden width."""
    constant = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in constant:
            continue
        made = producer.get(node.input[0])
        while made is not None and made.op_type in ("Reshape", "Transpose", "Identity"):
            made = producer.get(made.input[0])
        if made is not None and (made.op_type == "GroupQueryAttention"
                                 or (made.op_type == "MatMul" and made.input[1] not in constant)):
            found.append(node.name)
    return found


FLOAT_GEMMS = {"down": down_projections, "o": attention_projections}  # --keep-float choices
ROLES = {"down": "MLP down projections", "o": "attention output projections"}


def gemm_names(model) -> dict[str, str]:
    """Weight GEMM node -> its name in the recipe, the same in both LLM forms of a packed graph (whose portable
    nodes have no telling names): layers.<i>.qkv | o | gate_up | down, and lm_head (the last, read by no other
    layer). Found from the wiring in graph order: each layer's packed Q/K/V comes first, its o after attention,
    its packed gate/up, then down."""
    constant = {i.name for i in model.graph.initializer}
    o, down = set(attention_projections(model)), set(down_projections(model))
    weights = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
               and n.input[1] in constant]
    names, layer, order = {}, -1, ("qkv", "o", "gate_up", "down")
    for index, node in enumerate(weights):
        if node.name in o:
            role = "o"
        elif node.name in down:
            role = "down"
        elif index == len(weights) - 1:
            role = "lm_head"
        else:  # the packed GEMM before o is Q/K/V; the one before down is gate/up
            role = "qkv" if layer < 0 or names[weights[index - 1].name].endswith((".down", "lm_head")) else "gate_up"
        if role == "qkv":
            layer += 1
        names[node.name] = role if role == "lm_head" else f"layers.{layer}.{role}"
    expected = [f"layers.{i}.{r}" for i in range(layer + 1) for r in order] + ["lm_head"]
    if list(names.values()) != expected:
        raise RuntimeError(f"jflow bug: the LLM's GEMMs are not the expected qkv, o, gate_up, down per layer and "
                           f"lm_head (found {list(names.values())[:6]}...)")
    return names


def gemm_as_matmul(model, tensors: Tensors | None = None) -> None:
    """Gemm(A, B, transB=1) with a constant B and no bias -> MatMul(A, B^T), the transpose made when read
    (`tensors`: where the weights lie; default: in `model`)."""
    from onnx import helper
    tensors = tensors or Tensors(model)
    inits = {i.name: i for i in model.graph.initializer}
    for index, node in enumerate(model.graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or len(node.input) > 2 or node.input[1] not in inits \
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("transA", 0):
            continue
        weight, dims = tensors.reader(node.input[1]), list(inits[node.input[1]].dims)
        name, place = f"{node.input[1]}.matmul", tensors.places.get(node.input[1])
        if attrs.get("transB", 0):  # (made_from: its digest is known where the weight's is, not read again)
            tensors.derive(name, lambda weight=weight: np.ascontiguousarray(weight().T), inits[node.input[1]].data_type,
                           dims[::-1], made_from=("transpose", place) if place else None)
        else:
            tensors.derive(name, weight, inits[node.input[1]].data_type, dims)
        model.graph.node[index].CopyFrom(helper.make_node("MatMul", [node.input[0], name], list(node.output),
                                                          name=node.name))
    drop_unused_initializers(model)


def open_weight_gemms(source: Path):
    """(model, tensors): an LLM form opened without its weights, as the weight-only writer and the sensitivity
    measure take it: lm_head as a MatMul (gemm_as_matmul) and Q/K/V, gate/up packed (pack_siblings)."""
    import onnx
    model = onnx.load(str(source), load_external_data=False)
    tensors = Tensors(model, source.parent)
    gemm_as_matmul(model, tensors)  # lm_head is a Gemm(transB): the weight-only format takes MatMuls
    pack_siblings(model, tensors)
    return model, tensors
