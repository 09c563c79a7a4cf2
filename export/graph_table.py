"""A layer table read off an ONNX graph: operator, output shape, parameters, FLOPs and receptive
field for every node, with onnx shape inference. Works on any exported model, so a new model is
explained without new code; export stores the table in the card (``layers``) and the receptive
field of each feature-map output on that output.

    python -m export.graph_table models/mnist_cnn.onnx   # print it
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

# Nodes that only rearrange or rescale values: they pass the receptive field through unchanged
# and are left out of the table to keep it about layers.
QUIET = {"Cast", "Transpose", "Div", "Sub", "Mul", "Add", "Identity", "Reshape", "Flatten", "Pad",
         "Constant", "Unsqueeze", "Squeeze", "Shape", "Gather", "Concat", "Clip"}
WHOLE_INPUT = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Gemm", "MatMul", "Softmax"}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _shape(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def layer_table(model: onnx.ModelProto) -> tuple[list[dict], dict[str, int | None]]:
    """(rows, receptive field per tensor name; None where it spans the whole input)."""
    model = shape_inference.infer_shapes(model)
    g = model.graph
    shapes = {vi.name: _shape(vi) for vi in [*g.input, *g.value_info, *g.output]}
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    shapes.update({k: list(v.shape) for k, v in inits.items()})
    rf: dict[str, int | None] = {i.name: 1 for i in g.input}
    jump: dict[str, int] = {i.name: 1 for i in g.input}
    rows = []
    counted: set[str] = set()  # weights shared by two nodes (the CAM reuses the classifier) count once
    for node in g.node:
        ins = [i for i in node.input if i in rf]
        r_in = None if any(rf[i] is None for i in ins) else max((rf[i] for i in ins), default=1)
        j_in = max((jump[i] for i in ins), default=1)
        a = _attrs(node)
        r_out, j_out = r_in, j_in
        if node.op_type in ("Conv", "MaxPool", "AveragePool"):
            k = (a.get("kernel_shape") or list(inits[node.input[1]].shape[2:]))[0]
            s, d = a.get("strides", [1])[0], a.get("dilations", [1])[0]
            r_out = None if r_in is None else r_in + (k - 1) * d * j_in
            j_out = j_in * s
        elif node.op_type in WHOLE_INPUT:
            r_out = None
        for o in node.output:
            rf[o], jump[o] = r_out, j_out
        if node.op_type in QUIET:
            continue
        out = node.output[0]
        shape = shapes.get(out)
        weights = [i for i in node.input if i in inits and i not in counted
                   and np.issubdtype(inits[i].dtype, np.floating)]  # not axes or shapes
        counted.update(weights)
        params = int(sum(inits[i].size for i in weights))
        flops = 0
        if shape and all(isinstance(v, int) for v in shape[1:]):
            per_image = int(np.prod(shape[1:]))
            if node.op_type == "Conv":
                w = inits[node.input[1]]
                flops = 2 * per_image * int(np.prod(w.shape[1:]))
            elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in inits:
                flops = 2 * int(np.prod(inits[node.input[1]].shape))
        rows.append({"op": node.op_type, "name": node.name, "output": out,
                     "shape": shape, "params": params, "flops": flops, "receptive_field": r_out})
    return rows, rf


def main(path: str) -> None:
    rows, _ = layer_table(onnx.load(path))
    print(f"{'op':<18} {'output shape':<22} {'params':>9} {'FLOPs':>12} {'RF':>6}")
    for r in rows:
        rfs = "all" if r["receptive_field"] is None else str(r["receptive_field"])
        print(f"{r['op']:<18} {r['shape']!s:<22} {r['params']:>9,} {r['flops']:>12,} {rfs:>6}")


if __name__ == "__main__":
    main(sys.argv[1])
