"""Keep only some graph outputs of an ONNX model, by editing its protobuf bytes directly.

Why: ONNX Runtime's inference builds execute the *whole* graph whatever ``session.run`` fetches
(microsoft/onnxruntime#16483, #27615; ``RunOptions.only_execute_path_to_fetches`` works only in
training builds, #16013). Our files carry every conv stage, the filters and the class-activation
maps as extra outputs for the Feature maps tab, so a prediction that fetches ``probs`` alone
would still pay for all of them (the stage outputs keep INT8 graphs from staying in INT8
between stages: ``python -m bench.graphs`` measures what dropping them buys). ORT does not
remove a node whose outputs nothing reads either, so :func:`keep_outputs` drops those nodes
too: a session built from its bytes computes what the call fetches and no more.

Why by hand: serving depends on onnxruntime, numpy, pillow and gradio, not on the ``onnx``
package. The edit needs a few facts of the ONNX schema (onnx/onnx.proto): ``ModelProto.graph``
is field 7; in ``GraphProto`` ``node`` is field 1 and ``output`` field 12 (``ValueInfoProto``,
whose ``name`` is field 1); in ``NodeProto`` ``input`` is 1, ``output`` 2 and ``attribute`` 5,
and an ``AttributeProto`` holds subgraphs in fields 6 and 11. Every kept byte is copied unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

MODEL_GRAPH, GRAPH_NODE, GRAPH_OUTPUT, VALUE_INFO_NAME = 7, 1, 12, 1
NODE_INPUT, NODE_OUTPUT, NODE_ATTRIBUTE, ATTRIBUTE_GRAPHS = 1, 2, 5, (6, 11)
VARINT, I64, LEN, I32 = 0, 1, 2, 5


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf: a varint runs past the end")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, start of the field, start of its payload, end) for each field of a message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, end = _varint(buf, pos)
        elif wire == I64:
            end = pos + 8
        elif wire == I32:
            end = pos + 4
        elif wire == LEN:
            length, pos = _varint(buf, pos)
            end = pos + length
        else:  # groups (3, 4) are deprecated and not used by ONNX
            raise ValueError(f"unsupported protobuf wire type {wire} in field {number}")
        if end > len(buf):
            raise ValueError(f"truncated protobuf: field {number} runs past the end")
        yield number, wire, start, pos, end
        pos = end


def _name(value_info: bytes) -> str | None:
    for number, wire, _, payload, end in _fields(value_info):
        if number == VALUE_INFO_NAME and wire == LEN:
            return value_info[payload:end].decode()
    return None


def _node_io(node: bytes) -> tuple[list[str], list[str], bool]:
    """A NodeProto's inputs, outputs, and whether an attribute holds a subgraph (If, Loop, Scan)."""
    ins, outs, subgraph = [], [], False
    for number, wire, _, payload, end in _fields(node):
        if wire != LEN:
            continue
        if number == NODE_INPUT:
            ins.append(node[payload:end].decode())
        elif number == NODE_OUTPUT:
            outs.append(node[payload:end].decode())
        elif number == NODE_ATTRIBUTE:
            subgraph |= any(n in ATTRIBUTE_GRAPHS for n, *_ in _fields(node[payload:end]))
    return ins, outs, subgraph


def _live_nodes(graph: bytes, fields: list[tuple[int, int, int, int, int]], keep: set[str]) -> set[int]:
    """Start offsets of the nodes the kept outputs depend on. ONNX lists nodes in topological
    order, so one backward pass finds them. A graph with subgraphs (whose nodes may read outer
    names) keeps every node: our exported nets have none."""
    nodes = [(start, *_node_io(graph[payload:end])) for number, wire, start, payload, end in fields
             if number == GRAPH_NODE and wire == LEN]
    if any(subgraph for *_, subgraph in nodes):
        return {start for start, *_ in nodes}
    needed, live = set(keep), set()
    for start, ins, outs, _ in reversed(nodes):
        if needed.intersection(outs):
            live.add(start)
            needed.update(i for i in ins if i)
    return live


def _graph_field(model: bytes) -> tuple[int, int, int]:
    """(start, payload start, end) of a serialized ModelProto's graph field. Walks every field, so a
    truncated or malformed model is refused even when the damage is after the graph."""
    graphs = [(start, payload, end) for number, wire, start, payload, end in _fields(model)
              if number == MODEL_GRAPH and wire == LEN]
    if not graphs:
        raise ValueError("not an ONNX model: no graph")
    return graphs[0]


def _outputs(graph: bytes, fields: list[tuple[int, int, int, int, int]]) -> list[str]:
    return [_name(graph[p:e]) or "" for n, w, _, p, e in fields if n == GRAPH_OUTPUT and w == LEN]


def output_names(model: bytes) -> list[str]:
    """The graph outputs of a serialized ModelProto, in order."""
    _, payload, end = _graph_field(model)
    graph = model[payload:end]
    return _outputs(graph, list(_fields(graph)))


def keep_outputs(model: bytes, keep: Iterable[str]) -> bytes:
    """``model`` (a serialized ModelProto) with only the graph outputs named in ``keep``, in their
    original order, and only the nodes they depend on; raises ValueError if one of them is not an output."""
    keep = set(keep)
    start, payload, end = _graph_field(model)
    graph = model[payload:end]
    fields = list(_fields(graph))
    missing = keep - set(_outputs(graph, fields))
    if missing:
        raise ValueError(f"the model has no outputs {sorted(missing)}")
    live = _live_nodes(graph, fields, keep)
    new_graph = bytearray()
    for number, wire, f_start, f_payload, f_end in fields:
        if wire == LEN and ((number == GRAPH_OUTPUT and _name(graph[f_payload:f_end]) not in keep)
                            or (number == GRAPH_NODE and f_start not in live)):
            continue
        new_graph += graph[f_start:f_end]
    # every other field of the model (opsets, metadata, ...) as it was, the new graph in its place
    return (model[:start] + _encode_varint((MODEL_GRAPH << 3) | LEN) + _encode_varint(len(new_graph))
            + bytes(new_graph) + model[end:])


# Writing: just enough of ONNX's schema to append a linear classifier to a graph (the Teach tab's
# taught models): TensorProto dims 1, data_type 2, name 8, raw_data 9; NodeProto op_type 4;
# AttributeProto name 1, i 3, type 20; ValueInfoProto type 2 -> TypeProto tensor_type 1 ->
# elem_type 1, shape 2 -> dim 1 -> dim_value 1 / dim_param 2; GraphProto initializer 5;
# ModelProto metadata_props 14 -> StringStringEntryProto key 1, value 2.
GRAPH_INITIALIZER, MODEL_METADATA = 5, 14
FLOAT, ATTR_INT = 1, 2


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | LEN) + _encode_varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _encode_varint((number << 3) | VARINT) + _encode_varint(value)


def float_tensor(name: str, array: Any) -> bytes:
    """A TensorProto of float32 ``array`` (little-endian raw data)."""
    import numpy as np

    a = np.ascontiguousarray(array, dtype="<f4")
    return (b"".join(_int_field(1, d) for d in a.shape) + _int_field(2, FLOAT) + _len_field(8, name.encode())
            + _len_field(9, a.tobytes()))


def node(op_type: str, inputs: list[str], outputs: list[str], **ints: int) -> bytes:
    """A NodeProto with integer attributes."""
    attrs = b"".join(_len_field(NODE_ATTRIBUTE, _len_field(1, k.encode()) + _int_field(3, v) + _int_field(20, ATTR_INT))
                     for k, v in ints.items())
    return (b"".join(_len_field(NODE_INPUT, i.encode()) for i in inputs)
            + b"".join(_len_field(NODE_OUTPUT, o.encode()) for o in outputs)
            + _len_field(4, op_type.encode()) + attrs)


def float_output(name: str, dims: list[int | str]) -> bytes:
    """A ValueInfoProto for a float tensor output; a str dim is symbolic (e.g. "batch")."""
    shape = b"".join(_len_field(1, _len_field(2, d.encode()) if isinstance(d, str) else _int_field(1, d))
                     for d in dims)
    return _len_field(VALUE_INFO_NAME, name.encode()) + _len_field(2, _len_field(1, _int_field(1, FLOAT)
                                                                                + _len_field(2, shape)))


def append_to_graph(model: bytes, nodes: list[bytes], initializers: list[bytes], outputs: list[bytes],
                    metadata: dict[str, str] | None = None) -> bytes:
    """``model`` with nodes, initializers and outputs appended to its graph (nodes after the
    existing ones: topological order holds when they read existing tensors), and ``metadata``
    entries set (replacing those of the same keys)."""
    metadata = metadata or {}
    out = bytearray()
    for number, wire, start, payload, end in _fields(model):
        if number == MODEL_GRAPH and wire == LEN:
            out += _len_field(MODEL_GRAPH, model[payload:end] + b"".join(_len_field(GRAPH_NODE, n) for n in nodes)
                              + b"".join(_len_field(GRAPH_INITIALIZER, t) for t in initializers)
                              + b"".join(_len_field(GRAPH_OUTPUT, o) for o in outputs))
        elif not (number == MODEL_METADATA and _metadata_key(model[payload:end]) in metadata):
            out += model[start:end]
    for k, v in metadata.items():
        out += _len_field(MODEL_METADATA, _len_field(1, k.encode()) + _len_field(2, v.encode()))
    return bytes(out)


def _metadata_key(entry: bytes) -> str | None:
    return next((entry[p:e].decode() for n, w, _, p, e in _fields(entry) if n == 1 and w == LEN), None)
