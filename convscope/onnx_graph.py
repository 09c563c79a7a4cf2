"""Read an ONNX model's structure from its bytes, without the ``onnx`` package, for models people
upload: what goes in and out, the nodes, the weights, and whether it is safe to hand to ONNX
Runtime at all.

Serving depends on onnxruntime, numpy, pillow and gradio only, so the protobuf is read with the
wire-format reader of convscope.onnx_wire. Field numbers are those of onnx/onnx.proto:

- ModelProto: opset_import 8 (OperatorSetIdProto: domain 1, version 2), graph 7, functions 25
- GraphProto: node 1, initializer 5, input 11, output 12, value_info 13, sparse_initializer 15
- NodeProto: input 1, output 2, name 3, op_type 4, attribute 5, domain 7
- AttributeProto: name 1, f 2, i 3, s 4, t 5, g 6, floats 7, ints 8, tensors 10, graphs 11,
  sparse_tensor 22, sparse_tensors 23
- TensorProto: dims 1, data_type 2, float_data 4, name 8, raw_data 9, external_data 13,
  data_location 14 (1 = EXTERNAL); SparseTensorProto: values 1, indices 2
- ValueInfoProto: name 1, type 2; TypeProto: tensor_type 1 (elem_type 1, shape 2 (dim 1:
  dim_value 1, dim_param 2)); FunctionProto: node 7, domain 10

:func:`hostile_reason` says why a model must not be loaded: a tensor whose data lives in an
external file (ONNX Runtime would read any path it names, even a relative one against the
working directory, and the file's bytes would become weights anyone can read back as filters),
an operator domain that is not standard ONNX, or declared tensors too large for the memory cap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from convscope.onnx_wire import LEN, VARINT, _encode_varint, _fields, _graph_field, _varint

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
          9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
DTYPE_NAMES = {1: "float32", 2: "uint8", 10: "float16", 11: "float64"}


class UnsafeModel(ValueError):
    """An uploaded model that must not be loaded; ``str(e)`` says why, for the user."""


@dataclass
class Tensor:
    name: str
    dims: list[int]
    data_type: int
    raw: bytes = b""
    floats: list[float] = field(default_factory=list)
    external: bool = False

    def array(self) -> np.ndarray:
        """The values (raw_data or float_data) as a numpy array of the tensor's shape."""
        if self.raw:
            return np.frombuffer(self.raw, DTYPES[self.data_type]).reshape(self.dims)
        return np.asarray(self.floats, DTYPES.get(self.data_type, np.float32)).reshape(self.dims)

    @property
    def size(self) -> int:
        return int(np.prod(self.dims)) if self.dims else 1


@dataclass
class Node:
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict  # name -> int, float, bytes or list of ints/floats (the kinds this module needs)


@dataclass
class ValueInfo:
    name: str
    elem_type: int | None
    shape: list[int | str | None] | None  # None: no shape; str: a symbolic dimension


@dataclass
class Graph:
    nodes: list[Node]
    initializers: dict[str, Tensor]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    opsets: dict[str, int]
    function_domains: set[str]
    tensors: list[Tensor] = field(default_factory=list)  # every tensor anywhere, for the safety checks
    metadata: dict[str, str] = field(default_factory=dict)  # the model's metadata_props
    nested_domains: set[str] = field(default_factory=set)  # node domains in subgraphs and functions


def _str(buf: bytes) -> str:
    return buf.decode("utf-8", "replace")


def _ints(wire: int, payload: bytes) -> list[int]:
    """A repeated int64 field's values, packed (LEN) or one varint."""
    if wire == VARINT:
        return [_signed(_varint(payload, 0)[0])]
    out, pos = [], 0
    while pos < len(payload):
        v, pos = _varint(payload, pos)
        out.append(_signed(v))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _tensor(buf: bytes) -> Tensor:
    t = Tensor("", [], 0)
    for number, wire, _, p, e in _fields(buf):
        if number == 1:
            t.dims += _ints(wire, buf[p:e]) if wire == LEN else [_signed(_varint(buf, p)[0])]
        elif number == 2 and wire == VARINT:
            t.data_type = _varint(buf, p)[0]
        elif number == 4:  # float_data: packed floats, or one fixed32
            t.floats += list(struct.unpack(f"<{(e - p) // 4}f", buf[p:e])) if wire == LEN else \
                list(struct.unpack("<f", buf[p:e]))
        elif number == 8 and wire == LEN:
            t.name = _str(buf[p:e])
        elif number == 9 and wire == LEN:
            t.raw = buf[p:e]
        elif number == 13 or (number == 14 and wire == VARINT and _varint(buf, p)[0] == 1):
            t.external = True
    return t


def _value_info(buf: bytes) -> ValueInfo:
    name, elem, shape = "", None, None
    for number, wire, _, p, e in _fields(buf):
        if number == 1 and wire == LEN:
            name = _str(buf[p:e])
        elif number == 2 and wire == LEN:
            for n2, w2, _, p2, e2 in _fields(buf[p:e]):
                if n2 == 1 and w2 == LEN:  # tensor_type
                    elem, shape = _tensor_type(buf[p:e][p2:e2])
    return ValueInfo(name, elem, shape)


def _tensor_type(buf: bytes) -> tuple[int | None, list | None]:
    elem, shape = None, None
    for number, wire, _, p, e in _fields(buf):
        if number == 1 and wire == VARINT:
            elem = _varint(buf, p)[0]
        elif number == 2 and wire == LEN:
            shape = []
            for n2, w2, _, p2, e2 in _fields(buf[p:e]):
                if n2 == 1 and w2 == LEN:
                    dim = buf[p:e][p2:e2]
                    value = None
                    for n3, w3, _, p3, e3 in _fields(dim):
                        if n3 == 1 and w3 == VARINT:
                            value = _signed(_varint(dim, p3)[0])
                        elif n3 == 2 and w3 == LEN:
                            value = _str(dim[p3:e3])
                    shape.append(value)
    return elem, shape


def _attribute(buf: bytes, graph: Graph) -> tuple[str, object]:
    name, value = "", None
    for number, wire, _, p, e in _fields(buf):
        payload = buf[p:e]
        if number == 1 and wire == LEN:
            name = _str(payload)
        elif number == 2:
            value = struct.unpack("<f", payload)[0]
        elif number == 3 and wire == VARINT:
            value = _signed(_varint(buf, p)[0])
        elif number == 4 and wire == LEN:
            value = payload
        elif number == 7:
            value = (value or []) + (list(struct.unpack(f"<{len(payload) // 4}f", payload)) if wire == LEN
                                     else [struct.unpack("<f", payload)[0]])
        elif number == 8:
            value = (value or []) + _ints(wire, payload if wire == LEN else buf[p:e])
        elif number in (5, 10) and wire == LEN:
            graph.tensors.append(_tensor(payload))
            if number == 5:
                value = graph.tensors[-1]  # e.g. a Constant node's value
        elif number in (22, 23) and wire == LEN:
            graph.tensors += [_tensor(payload[p2:e2]) for n2, w2, _, p2, e2 in _fields(payload) if w2 == LEN]
        elif number in (6, 11) and wire == LEN:
            _walk_nested(payload, graph)
    return name, value


def _node(buf: bytes, graph: Graph) -> Node:
    node = Node("", "", [], [], {})
    for number, wire, _, p, e in _fields(buf):
        if wire != LEN:
            continue
        if number == 1:
            node.inputs.append(_str(buf[p:e]))
        elif number == 2:
            node.outputs.append(_str(buf[p:e]))
        elif number == 4:
            node.op_type = _str(buf[p:e])
        elif number == 7:
            node.domain = _str(buf[p:e])
        elif number == 5:
            k, v = _attribute(buf[p:e], graph)
            node.attrs[k] = v
    return node


def _walk_nested(buf: bytes, graph: Graph) -> None:
    """A subgraph (If, Loop, Scan bodies): its tensors and node domains count for the checks."""
    inner = _graph(buf, graph)
    graph.nested_domains |= {n.domain for n in inner.nodes} | inner.nested_domains


def _graph(buf: bytes, owner: Graph | None = None) -> Graph:
    g = Graph([], {}, [], [], {}, set())
    sink = owner or g  # tensors of subgraphs are collected on the top graph
    for number, wire, _, p, e in _fields(buf):
        if wire != LEN:
            continue
        payload = buf[p:e]
        if number == 1:
            g.nodes.append(_node(payload, sink))
        elif number == 5:
            t = _tensor(payload)
            g.initializers[t.name] = t
            sink.tensors.append(t)
        elif number == 15:
            sink.tensors += [_tensor(payload[p2:e2]) for n2, w2, _, p2, e2 in _fields(payload) if w2 == LEN]
        elif number == 11:
            g.inputs.append(_value_info(payload))
        elif number == 12:
            g.outputs.append(_value_info(payload))
    return g


def read_model(data: bytes) -> Graph:
    """The structure of a serialized ModelProto (ValueError when the bytes are not one)."""
    graph, opsets, function_domains, functions, metadata = None, {}, set(), [], {}
    for number, wire, _, p, e in _fields(data):
        payload = data[p:e]
        if number == 7 and wire == LEN:
            graph = payload
        elif number == 8 and wire == LEN:
            domain, version = "", 0
            for n2, w2, _, p2, e2 in _fields(payload):
                if n2 == 1 and w2 == LEN:
                    domain = _str(payload[p2:e2])
                elif n2 == 2 and w2 == VARINT:
                    version = _varint(payload, p2)[0]
            opsets[domain] = version
        elif number == 25 and wire == LEN:
            functions.append(payload)
        elif number == 14 and wire == LEN:  # metadata_props: StringStringEntryProto (key 1, value 2)
            entry = {n2: _str(payload[p2:e2]) for n2, w2, _, p2, e2 in _fields(payload) if w2 == LEN}
            metadata[entry.get(1, "")] = entry.get(2, "")
    if graph is None:
        raise ValueError("not an ONNX model: no graph")
    g = _graph(graph)
    g.opsets = opsets
    for f in functions:
        for n2, w2, _, p2, e2 in _fields(f):
            if n2 == 10 and w2 == LEN:
                function_domains.add(_str(f[p2:e2]))
            elif n2 == 7 and w2 == LEN:
                g.nested_domains.add(_node(f[p2:e2], g).domain)
    g.function_domains = function_domains
    g.metadata = metadata
    return g


def constant(g: Graph, name: str) -> np.ndarray | None:
    """The value of a tensor fixed in the graph: an initializer or a Constant node's output."""
    if name in g.initializers:
        return g.initializers[name].array()
    for n in g.nodes:
        if n.op_type == "Constant" and n.outputs == [name] and isinstance(n.attrs.get("value"), Tensor):
            return n.attrs["value"].array()
    return None


def hostile_reason(g: Graph, max_tensor_bytes: int) -> str | None:
    """Why this graph must not reach ONNX Runtime, or None."""
    if any(t.external for t in g.tensors):
        return ("The model keeps weights in external data files. Uploaded models must be self-contained "
                "(export with external_data=False); a model cannot name files on this server.")
    allowed = set(STANDARD_DOMAINS) | g.function_domains
    domains = {n.domain for n in g.nodes} | g.nested_domains | set(g.opsets)
    custom = sorted(d for d in domains - allowed if d not in g.function_domains)
    if custom:
        return f"The model uses custom operator domains ({', '.join(custom)}): only standard ONNX operators run here."
    declared = sum(t.size * np.dtype(DTYPES.get(t.data_type, np.float32)).itemsize for t in g.tensors)
    if declared > max_tensor_bytes:
        return (f"The model declares {declared / 2**20:.0f} MB of weights, over this server's "
                f"{max_tensor_bytes // 2**20} MB limit.")
    return None


def with_outputs(model: bytes, names: list[str]) -> bytes:
    """``model`` with extra graph outputs (names only: ONNX Runtime infers their types), so one run
    returns intermediate tensors such as every conv stage."""
    start, payload, end = _graph_field(model)
    graph = bytearray(model[payload:end])
    for name in names:
        value_info = _encode_varint((1 << 3) | LEN) + _encode_varint(len(name.encode())) + name.encode()
        graph += _encode_varint((12 << 3) | LEN) + _encode_varint(len(value_info)) + value_info
    return model[:start] + _encode_varint((7 << 3) | LEN) + _encode_varint(len(graph)) + bytes(graph) + model[end:]
