"""Your own ONNX model: an image classifier a person uploads, checked, opened and explained with
the same views as a shipped model (top-k, every conv stage, the filters, the layer table, and a
class-activation map or, for heads that have none, occlusion sensitivity).

An uploaded model is hostile until proven otherwise: convscope.onnx_graph reads its bytes before
ONNX Runtime sees them and refuses external data, custom operator domains and oversized tensors;
the session gets one thread and every run a time budget. Models live in memory only, in the
:class:`ModelStore` of the session or API client that uploaded them, and expire.

No Gradio here: the Feature maps tab, REST and the tests share it.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from convscope.answers import top_k
from convscope.onnx_graph import DTYPE_NAMES, Graph, UnsafeModel, constant, hostile_reason, read_model, with_outputs
from convscope.onnx_wire import keep_outputs
from convscope.preprocess import InputError, to_rgb
from convscope.runtime import session_options
from convscope.uploads import MAX_MODEL_BYTES

MAX_TENSOR_BYTES = MAX_MODEL_BYTES * 2  # declared weights, e.g. float_data lists
MAX_INPUT_SIDE = 512  # px: a model's image input is at most this (memory and time per run)
RUN_SECONDS = float(os.environ.get("CONVSCOPE_MODEL_RUN_SECONDS", "10"))  # one run's budget
# ops a conv's output is followed through to the stage output: activations, batch norm, and the
# residual Add of a ResNet block (its output, after the ReLU, is the block's output)
FOLLOW = {"Relu", "Clip", "LeakyRelu", "HardSwish", "BatchNormalization", "Elu", "Selu", "PRelu", "Add"}
TABLE_OPS = ("Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool")
PRESETS = {  # name -> (mean, std) of x / 255, per channel; "raw" feeds 0-255 as they are
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "0-1": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "-1-1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "raw": None,
}


@dataclass
class InputSpec:
    name: str
    layout: str  # "NCHW" or "NHWC"
    channels: int  # 1 or 3
    dtype: str  # "float32", "float16", "float64" or "uint8"
    size: tuple[int, int]  # (H, W) fed to the model
    dynamic: bool  # H and W are symbolic: the user may choose them
    batch_dynamic: bool


def input_spec(g: Graph) -> InputSpec:
    """The one image input of a graph, or UnsafeModel saying why it has none."""
    inputs = [v for v in g.inputs if v.name not in g.initializers]
    if len(inputs) != 1:
        raise UnsafeModel(f"The model has {len(inputs)} inputs; an image classifier has exactly one (the image).")
    v = inputs[0]
    if v.elem_type not in DTYPE_NAMES or v.shape is None or len(v.shape) != 4:
        raise UnsafeModel("The model's input is not an image tensor (4 dimensions of float or uint8).")
    _, a, b, c = v.shape
    if a in (1, 3) and c not in (1, 3):
        layout, ch, hw = "NCHW", a, (b, c)
    elif c in (1, 3):
        layout, ch, hw = "NHWC", c, (a, b)
    else:
        raise UnsafeModel("The model's input has no channel axis of 1 or 3 (grayscale or RGB) first or last.")
    dynamic = not all(isinstance(d, int) and d > 0 for d in hw)
    size = (224, 224) if dynamic else hw
    if max(size) > MAX_INPUT_SIDE:
        raise UnsafeModel(f"The model's input is {size[0]}x{size[1]}: this server runs inputs up to "
                          f"{MAX_INPUT_SIDE}x{MAX_INPUT_SIDE}.")
    return InputSpec(v.name, layout, ch, DTYPE_NAMES[v.elem_type], size, dynamic,
                     not (isinstance(v.shape[0], int) and v.shape[0] > 0))


@dataclass
class UserModel:
    id: str  # an unguessable token: who has it can use the model, nothing lists it
    filename: str
    spec: InputSpec
    preset: str
    labels: list[str]
    output: str  # the classifier's output
    graph: Graph
    session: ort.InferenceSession  # every stage and the output
    stages: list[str]  # one tensor per spatial resolution: the last conv (+activation) output at it
    stage_convs: dict[str, str]  # stage -> the Conv node whose filters produce it (weight initializer name)
    convs: dict[str, str]  # every Conv with its weights in the file, in graph order: "conv 3: 64×64×3×3" -> weights
    cam_head: tuple[str, np.ndarray, str] | None  # (feature tensor, class weights (classes, channels), layout)
    layers: list[dict]
    params: int
    flops: int
    opset: int
    created: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        """How answers name this model: its id (convscope.answers)."""
        return self.id

    @property
    def card(self) -> SimpleNamespace:
        """What the answer layer reads from a card: labels, and no decision rule beyond argmax."""
        return SimpleNamespace(labels=self.labels, calibration={}, metrics={}, tab="uploaded",
                               input={"preprocess": self.preset})

    def summary(self) -> dict:
        s = self.spec
        return {"id": self.id, "filename": self.filename,
                "input": {"name": s.name, "layout": s.layout, "channels": s.channels, "dtype": s.dtype,
                          "size": list(s.size), "dynamic_size": s.dynamic},
                "preprocessing": self.preset, "output": self.output, "classes": len(self.labels), "labels": self.labels,
                "opset": self.opset, "params": self.params, "flops": self.flops, "stages": self.stages,
                "where_it_looks": "class-activation map" if self.cam_head else "occlusion sensitivity"}


def run(session: ort.InferenceSession, fetch: list[str], feed: dict) -> list[np.ndarray]:
    """A run that ONNX Runtime abandons after RUN_SECONDS (RunOptions.terminate from a timer)."""
    options = ort.RunOptions()
    timer = threading.Timer(RUN_SECONDS, lambda: setattr(options, "terminate", True))
    timer.start()
    try:
        return session.run(fetch, feed, options)
    except Exception as e:
        if options.terminate:
            raise InputError(f"The model took longer than {RUN_SECONDS:.0f} s for one image: stopped.") from None
        raise InputError(f"The model failed on this input ({type(e).__name__}).") from None
    finally:
        timer.cancel()


def normalisation(preset: str) -> tuple | None:
    """(mean, std) of x / 255 per channel for a preset name, or for a custom one written
    "mean=0.5,0.5,0.5 std=0.25,0.25,0.25"; None for "raw". UnsafeModel for anything else."""
    if preset in PRESETS:
        return PRESETS[preset]
    m = re.fullmatch(r"\s*mean\s*=\s*([-\d.,\s]+?)\s+std\s*=\s*([-\d.,\s]+?)\s*", preset or "")
    try:
        mean, std = ([float(v) for v in g.replace(" ", "").split(",") if v] for g in m.groups())
    except (AttributeError, ValueError):
        raise UnsafeModel(f"Unknown preprocessing {preset!r}: choose one of {sorted(PRESETS)}, or write "
                          "'mean=0.5,0.5,0.5 std=0.25,0.25,0.25' (fractions of 255).") from None
    if len(mean) not in (1, 3) or len(std) != len(mean) or min(std) <= 0:
        raise UnsafeModel("A custom preprocessing needs 1 or 3 means and as many positive stds.")
    return tuple(mean * (3 // len(mean))), tuple(std * (3 // len(std)))


def to_input(rgb: np.ndarray, spec: InputSpec, preset: str) -> np.ndarray:
    """An RGB uint8 image (or a batch) -> the model's input tensor under a preprocessing preset."""
    x = rgb if rgb.ndim == 4 else rgb[None]
    x = x.astype(np.float32)
    if spec.channels == 1:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    if (norm := normalisation(preset)) is not None:
        mean, std = (np.asarray(v[: spec.channels], np.float32) * 255 for v in norm)
        x = (x - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x.astype(spec.dtype if spec.dtype != "uint8" else np.uint8))


def resize(image: Any, spec: InputSpec) -> np.ndarray:
    """Any image -> RGB uint8 at the model's input size (the whole image, squashed: no crop)."""
    rgb = to_rgb(image)
    h, w = spec.size
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))


def _consumers(g: Graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in g.nodes:
        for i in n.inputs:
            out.setdefault(i, []).append(n)
    return out


def _stage_candidates(g: Graph) -> dict[str, str]:
    """Each Conv's output, followed through a lone activation or batch norm: tensor -> Conv weight name."""
    consumers, out = _consumers(g), {}
    for n in g.nodes:
        if n.op_type != "Conv" or len(n.inputs) < 2 or n.inputs[1] not in g.initializers:
            continue
        t = n.outputs[0]
        while len(consumers.get(t, [])) == 1 and consumers[t][0].op_type in FOLLOW:
            t = consumers[t][0].outputs[0]
        out[t] = n.inputs[1]
    return out


def _cam_head(g: Graph, output: str) -> tuple[str, np.ndarray, str] | None:
    """(feature tensor, class weights, layout) when ``output`` is a linear map of a global average
    pool: then the class-activation map is exact (weights x feature map), else None."""
    producer = {o: n for n in g.nodes for o in n.outputs}
    t, weights = output, None
    for _ in range(12):  # walk back from the output through the head
        n = producer.get(t)
        if n is None:
            return None
        if n.op_type in ("Gemm", "MatMul") and weights is None:
            w = next((g.initializers[i] for i in n.inputs[1:2] if i in g.initializers), None)
            if w is None or len(w.dims) != 2:
                return None
            w = w.array().astype(np.float32)
            weights = w if (n.op_type == "Gemm" and n.attrs.get("transB")) else w.T
        elif n.op_type == "GlobalAveragePool" and weights is not None:
            return n.inputs[0], weights, "NCHW"
        elif n.op_type == "ReduceMean" and weights is not None:
            fixed = constant(g, n.inputs[1]) if len(n.inputs) > 1 else None
            axes = n.attrs.get("axes") or (fixed.tolist() if fixed is not None else None)
            axes = sorted(a % 4 for a in axes or [])  # (negative axes count from the end)
            if axes == [2, 3]:
                return n.inputs[0], weights, "NCHW"
            if axes == [1, 2]:
                return n.inputs[0], weights, "NHWC"
            return None
        elif n.op_type not in ("Softmax", "Add", "Flatten", "Reshape", "Squeeze", "Identity", "Dropout"):
            return None
        t = next((i for i in n.inputs if i not in g.initializers), None)
    return None


def _receptive_fields(g: Graph, image: str) -> dict[str, int | None]:
    """Receptive field (input pixels) of every tensor, from kernel sizes, strides and dilations
    along the graph (the largest over a node's inputs); None once a global pool sees everything."""
    rf: dict[str, tuple[int | None, int]] = {image: (1, 1)}
    for n in g.nodes:
        ins = [rf[i] for i in n.inputs if i in rf]
        if not ins:
            continue
        r, jump = max(ins, key=lambda x: (x[0] is None, x[0] or 0))
        if r is not None and n.op_type in ("Conv", "MaxPool", "AveragePool"):
            k = (n.attrs.get("kernel_shape") or [1])[0]
            if n.op_type == "Conv" and not n.attrs.get("kernel_shape") and n.inputs[1] in g.initializers:
                k = g.initializers[n.inputs[1]].dims[-1]
            d = (n.attrs.get("dilations") or [1])[0]
            r, jump = r + (k - 1) * d * jump, jump * (n.attrs.get("strides") or [1])[0]
        elif n.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
            r = None
        for o in n.outputs:
            rf[o] = (r, jump)
    return {k: v[0] for k, v in rf.items()}


def _layer_table(g: Graph, shapes: dict[str, tuple], rf: dict) -> tuple[list[dict], int]:
    """Op, output shape, parameters, FLOPs and receptive field of the nodes that compute (conv,
    linear, pooling); returns the table and the total FLOPs per image."""
    rows, total = [], 0
    for n in g.nodes:
        if n.op_type not in TABLE_OPS:
            continue
        params = sum(g.initializers[i].size for i in n.inputs[1:] if i in g.initializers)
        shape = shapes.get(n.outputs[0])
        flops = 0
        if shape is not None and n.op_type == "Conv" and n.inputs[1] in g.initializers:
            w = g.initializers[n.inputs[1]].dims
            flops = 2 * int(np.prod(shape[1:])) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul") and params:
            flops = 2 * params
        total += flops
        rows.append({"op": n.op_type, "shape": list(shape) if shape else None, "params": params, "flops": flops,
                     "receptive_field": rf.get(n.outputs[0])})
    return rows, total


def _probe(data: bytes, spec: InputSpec, candidates: list[str]) -> dict[str, tuple]:
    """Shapes of the candidate tensors from one run on a gray image (ONNX Runtime infers them)."""
    sess = ort.InferenceSession(with_outputs(data, candidates), session_options(1), providers=["CPUExecutionProvider"])
    x = to_input(np.full((*spec.size, 3), 128, np.uint8), spec, "0-1")
    outs = run(sess, candidates, {spec.name: x})
    return {name: tuple(a.shape) for name, a in zip(candidates, outs, strict=True)}


def _pick_stages(candidates: dict[str, str], shapes: dict[str, tuple], layout: str) -> list[str]:
    """The last conv output at each spatial resolution: one per stage of the network."""
    stages: dict[tuple, str] = {}
    for t in candidates:  # in graph order
        s = shapes.get(t)
        hw = (s[2:] if layout == "NCHW" else s[1:3]) if s is not None and len(s) == 4 else None
        if hw and hw[0] * hw[1] > 1:  # (1x1 maps: squeeze-and-excitation gates, not a stage)
            stages[hw] = t
    return list(stages.values())


def default_labels(n: int, given: str | None) -> list[str]:
    """Labels from a text file (one per line), else ImageNet's for a 1000-way output, else class i."""
    if given:
        labels = [line.strip() for line in given.splitlines() if line.strip()]
        if len(labels) != n:
            raise UnsafeModel(f"The labels file has {len(labels)} lines for the model's {n} classes.")
        return labels
    if n == 1000:
        from convscope.imagenet_labels import IMAGENET_LABELS

        return list(IMAGENET_LABELS)
    return [f"class {i}" for i in range(n)]


def check_bytes(data: bytes) -> Graph:
    """Bytes -> the graph, if they are a self-contained ONNX model of standard operators within
    the caps; UnsafeModel with the reason otherwise. Nothing reaches ONNX Runtime before this."""
    if not data:
        raise UnsafeModel("The file is empty.")
    if len(data) > MAX_MODEL_BYTES:
        raise UnsafeModel(f"The model is {len(data) / 2**20:.0f} MB: this server takes models up to "
                          f"{MAX_MODEL_BYTES // 2**20} MB.")
    try:
        g = read_model(data)
    except ValueError:
        raise UnsafeModel("This is not an ONNX model (or it is truncated).") from None
    if why := hostile_reason(g, MAX_TENSOR_BYTES):
        raise UnsafeModel(why)
    return g


def open_model(data: bytes, name: str = "model.onnx", labels: str | None = None, preset: str | None = None,
               size: int | None = None) -> UserModel:
    """An uploaded image classifier, checked (check_bytes) and opened with its views prepared."""
    g = check_bytes(data)
    spec = input_spec(g)
    if size and spec.dynamic:
        spec.size = (min(int(size), MAX_INPUT_SIDE),) * 2
    card = embedded_card(g)  # a ConvScope file: its card says how it is fed and what its classes are
    preset = preset or ("raw" if spec.dtype == "uint8" or card else "imagenet")
    normalisation(preset)  # refuses an unknown or malformed one
    output = "probs" if card and "probs" in {o.name for o in g.outputs} else g.outputs[0].name
    if card and not labels:
        labels = "\n".join(card.get("labels") or [])
    candidates = _stage_candidates(g)
    head = _cam_head(g, output)
    computing = [n.outputs[0] for n in g.nodes if n.op_type in TABLE_OPS]
    probe_names = list(dict.fromkeys([output, *candidates, *computing, *([head[0]] if head else [])]))
    try:
        shapes = _probe(data, spec, probe_names)
    except InputError:  # the run's time budget: say so, not "cannot load"
        raise
    except Exception as e:  # ONNX Runtime refused the graph
        raise UnsafeModel(f"ONNX Runtime cannot load this model ({type(e).__name__}).") from None
    n_classes = int(np.prod(shapes[output][1:]))
    stages = _pick_stages(candidates, shapes, spec.layout)
    keep = list(dict.fromkeys([output, *stages, *([head[0]] if head else [])]))
    session = ort.InferenceSession(keep_outputs(with_outputs(data, [k for k in keep if k != output]), keep),
                                   session_options(1), providers=["CPUExecutionProvider"])
    layers, flops = _layer_table(g, shapes, _receptive_fields(g, spec.name))
    return UserModel(secrets.token_urlsafe(16), os.path.basename(name)[:80], spec, preset,
                     default_labels(n_classes, labels), output, g, session, stages,
                     {s: candidates[s] for s in stages}, conv_weights(g), head, layers,
                     sum(t.size for t in g.initializers.values()), flops, g.opsets.get("", g.opsets.get("ai.onnx", 0)))


def conv_weights(g: Graph) -> dict[str, str]:
    """Every Conv node whose weights the file holds, named for a picker: "conv 3: 64×64×3×3"."""
    out = {}
    for n in g.nodes:
        if n.op_type == "Conv" and len(n.inputs) > 1 and n.inputs[1] in g.initializers:
            out[f"conv {len(out) + 1}: {'×'.join(map(str, g.initializers[n.inputs[1]].dims))}"] = n.inputs[1]
    return out


def filters(m: UserModel, conv: str) -> np.ndarray:
    """The weights (C_out, C_in, k, k) of one Conv of the model, by its name in ``m.convs``."""
    return filters_of(m, m.convs[conv])


def filters_of(m: UserModel, weights: str) -> np.ndarray:
    """A Conv's weights as float32, a view of the file's bytes where they already are."""
    return m.graph.initializers[weights].array().astype(np.float32, copy=False)


def embedded_card(g: Graph) -> dict | None:
    """The ConvScope model card in a file's metadata (convscope.cards.METADATA_KEY), if any."""
    import json

    from convscope.cards import METADATA_KEY

    try:
        card = json.loads(g.metadata.get(METADATA_KEY, "null"))
    except ValueError:
        return None
    return card if isinstance(card, dict) else None


def probabilities(out: np.ndarray) -> np.ndarray:
    """The output as probabilities: kept when it already is a distribution, else softmax (logits)."""
    out = out.reshape(len(out), -1).astype(np.float64)
    if out.min() >= 0 and np.allclose(out.sum(1), 1, atol=1e-3):
        return out
    e = np.exp(out - out.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@dataclass
class UserView:
    model: UserModel
    seen: np.ndarray  # RGB uint8 at the model's input size
    probs: np.ndarray
    stages: dict[str, np.ndarray]  # name -> (C, H, W)
    filters: dict[str, np.ndarray]  # stage -> (C_out, C_in, k, k)
    heat: np.ndarray | None  # (h, w): CAM of the top class, or occlusion sensitivity
    heat_kind: str

    def top(self, k: int | None = 5) -> dict[str, float]:
        return top_k(self.probs, self.model.labels, k)


def predict(m: UserModel, image: Any) -> tuple[np.ndarray, np.ndarray]:
    """(what the model saw: RGB uint8 at its input size, its class probabilities) for one image."""
    rgb = resize(image, m.spec)
    with m.lock:
        out = run(m.session, [m.output], {m.spec.name: to_input(rgb, m.spec, m.preset)})[0]
    return rgb, probabilities(out)[0]


def look(m: UserModel, image: Any) -> UserView:
    """Everything the views show for one image: top-k, every stage, the filters, where it looks."""
    rgb = resize(image, m.spec)
    x = to_input(rgb, m.spec, m.preset)
    names = [o.name for o in m.session.get_outputs()]
    with m.lock:
        outs = dict(zip(names, run(m.session, names, {m.spec.name: x}), strict=True))
    probs = probabilities(outs[m.output])[0]
    nchw = m.spec.layout == "NCHW"
    stages = {s: (outs[s][0] if nchw else outs[s][0].transpose(2, 0, 1)) for s in m.stages}
    filters = {s: filters_of(m, w) for s, w in m.stage_convs.items()}
    top = int(probs.argmax())
    if m.cam_head is not None:
        feature, weights, layout = m.cam_head
        f = outs[feature][0] if layout == "NCHW" else outs[feature][0].transpose(2, 0, 1)
        heat, kind = np.maximum(np.einsum("k,khw->hw", weights[top], f.astype(np.float32)), 0), "cam"
    else:
        heat, kind = occlusion(m, rgb, top), "occlusion"
    return UserView(m, rgb, probs, stages, filters, heat, kind)


def occlusion(m: UserModel, rgb: np.ndarray, cls: int, grid: int = 8) -> np.ndarray:
    """How much the probability of ``cls`` drops when each cell of a grid x grid mesh is grayed
    out: forward passes only, in one batch where the model takes a batch."""
    h, w = rgb.shape[:2]
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    batch = np.repeat(rgb[None], grid * grid + 1, axis=0)
    for i in range(grid):
        for j in range(grid):
            batch[1 + i * grid + j, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = 128
    x = to_input(batch, m.spec, m.preset)
    with m.lock:
        if m.spec.batch_dynamic:
            out = run(m.session, [m.output], {m.spec.name: x})[0]
        else:
            out = np.concatenate([run(m.session, [m.output], {m.spec.name: x[k:k + 1]})[0] for k in range(len(x))])
    p = probabilities(out)[:, cls]
    return np.maximum(p[0] - p[1:], 0).reshape(grid, grid)


class ModelStore:
    """The uploaded models of one session (a browser tab) or of the REST API: at most ``capacity``,
    each for ``ttl`` seconds after its upload; the oldest goes first. An id is an unguessable
    token: nothing lists the models to anyone else."""

    def __init__(self, capacity: int = 4, ttl: float | None = None) -> None:
        self.capacity = capacity
        self.ttl = ttl if ttl is not None else float(os.environ.get("CONVSCOPE_MODEL_SECONDS", "3600"))
        self._models: dict[str, UserModel] = {}
        self._lock = threading.Lock()

    def add(self, m: UserModel) -> UserModel:
        with self._lock:
            self._expire()
            while len(self._models) >= self.capacity:
                self._models.pop(next(iter(self._models)))
            self._models[m.id] = m
        return m

    def get(self, model_id: str) -> UserModel | None:
        with self._lock:
            self._expire()
            return self._models.get(model_id)

    def __len__(self) -> int:
        return len(self._models)

    def _expire(self) -> None:
        now = time.time()
        for k in [k for k, m in self._models.items() if now - m.created > self.ttl]:
            del self._models[k]


API_MODELS = ModelStore(capacity=int(os.environ.get("CONVSCOPE_API_MODELS", "8")))  # REST and the Gradio API's
