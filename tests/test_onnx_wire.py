"""Sessions that compute only what a call fetches: the protobuf edit (convscope.onnx_wire),
checked against the onnx package, and the runtime's use of it."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from convscope.cards import CardError
from convscope.onnx_wire import keep_outputs, output_names
from convscope.runtime import MODELS_DIR, load_registry, make_session, prediction_outputs
from tests.conftest import CARDS

FILES = sorted({f for c in CARDS for f in [c.file, *(c.variants[v]["file"] for v in c.shipped_variants())]})


def _dead_nodes(model: onnx.ModelProto) -> list[str]:
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if not read.intersection(n.output)]


@pytest.mark.parametrize("file", FILES)
def test_lean_graph_is_valid_has_no_dead_nodes_and_answers_exactly_as_the_whole_graph(file):
    data = (MODELS_DIR / file).read_bytes()
    whole = onnx.load_from_string(data)
    assert output_names(data) == [o.name for o in whole.graph.output]
    fetch = prediction_outputs(output_names(data))
    lean = onnx.load_from_string(keep_outputs(data, fetch))
    onnx.checker.check_model(lean)
    assert [o.name for o in lean.graph.output] == fetch
    assert not _dead_nodes(lean)
    assert len(lean.graph.node) <= len(whole.graph.node)
    assert {n.name for n in lean.graph.node} <= {n.name for n in whole.graph.node}  # nodes dropped, none changed
    a, b = make_session(data), make_session(lean.SerializeToString())
    name = a.get_inputs()[0].name
    x = np.random.default_rng(0).integers(0, 256, (2, *a.get_inputs()[0].shape[1:]), dtype=np.uint8)
    for out, u, v in zip(fetch, a.run(fetch, {name: x}), b.run(fetch, {name: x}), strict=True):
        if out == "ood_score":  # statistics of stages that are outputs of the whole graph: in an INT8 file
            np.testing.assert_allclose(u, v, atol=1e-4)  # ORT fuses their dequantisation differently (~2e-6)
        else:
            np.testing.assert_array_equal(u, v)


def test_keeping_every_output_changes_no_byte():
    data = (MODELS_DIR / "mnist_cnn.onnx").read_bytes()
    assert keep_outputs(data, output_names(data)) == data


def _two_branch_model() -> bytes:
    """y = x + x and z = x * x: fetching y needs only the Add."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("y", "z")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"], name="add"),
                               helper.make_node("Mul", ["x", "x"], ["z"], name="mul")], "g", [x], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_drops_exactly_the_nodes_nothing_reads():
    lean = onnx.load_from_string(keep_outputs(_two_branch_model(), ["y"]))
    assert [n.name for n in lean.graph.node] == ["add"] and [o.name for o in lean.graph.output] == ["y"]
    np.testing.assert_array_equal(make_session(lean.SerializeToString()).run(["y"], {"x": np.ones(2, np.float32)})[0],
                                  [2, 2])


def test_unknown_output_and_broken_bytes_are_refused():
    data = _two_branch_model()
    with pytest.raises(ValueError, match="no outputs"):
        keep_outputs(data, ["nope"])
    with pytest.raises(ValueError, match="truncated"):
        keep_outputs(data[:-3], ["y"])


def test_predictions_run_on_the_prediction_graph_and_features_on_the_whole_graph():
    m = load_registry().models["mnist_cnn"]
    x = np.zeros((1, 28, 28, 1), np.uint8)
    assert [o.name for o in m.session.get_outputs()] == ["probs", "cam", "ood_score"]  # built at start-up
    assert m.session_for(["probs"]) is m.session and m.session_for(["probs", "cam"]) is m.session
    every = [o["name"] for o in m.card.outputs]
    whole = m.session_for(every)  # built on first use
    assert whole is not m.session and whole is m.session_for(every[:3])
    assert [o.name for o in whole.get_outputs()] == every
    np.testing.assert_array_equal(m.probs(x), m.run(every, x)[0])


def test_a_file_changed_after_start_up_is_refused_when_the_whole_graph_is_built(tmp_path):
    shutil.copytree(MODELS_DIR, tmp_path, dirs_exist_ok=True)
    m = load_registry(tmp_path).models["mnist_lenet5"]
    victim = tmp_path / "mnist_lenet5.onnx"
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    x = np.zeros((1, 28, 28, 1), np.uint8)
    assert m.probs(x).shape == (1, 10)  # the prediction graph was read and checked at start-up
    with pytest.raises(CardError, match="does not match its card"):
        m.run([o["name"] for o in m.card.outputs], x)


def test_feature_maps_api_says_so_when_a_file_changed_after_start_up(tmp_path):
    """The Feature maps tab reads the whole graph on first use: a file changed since start-up gets a
    clear message there (not a traceback), and the server keeps serving."""
    from gradio_client import Client, handle_file

    from convscope.ui import build_app, serve_in_background
    from tests.conftest import REPO, free_port

    shutil.copytree(MODELS_DIR, tmp_path, dirs_exist_ok=True)
    port = free_port()
    server = serve_in_background(build_app(tmp_path), port)
    try:
        victim = tmp_path / "mnist_cnn.onnx"
        victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        seven = handle_file(str(REPO / "examples" / "digit_7.png"))
        with pytest.raises(Exception, match="does not match its card"):
            client.predict("mnist_cnn", seven, api_name="/feature_maps")
        assert client.predict("mnist_lenet5", seven, api_name="/feature_maps")  # the others still answer
    finally:
        server.should_exit = True
