"""The playground's numpy convolution arithmetic equals torch.nn.functional."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convscope import convmath as cm


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]


@pytest.mark.parametrize("kernel", list(cm.KERNELS))
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 0), (2, 1), (3, 2)])
def test_conv2d_matches_torch(kernel, stride, padding):
    x = np.random.default_rng(0).normal(size=(11, 13)).astype(np.float32)
    k = cm.KERNELS[kernel]
    ours = cm.conv2d(x, k, stride, padding, bias=0.5)
    ref = F.conv2d(t(x), t(k), bias=torch.tensor([0.5]), stride=stride, padding=padding)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ours.shape[0] == cm.out_size(11, 3, padding, stride)


def test_5x5_example_with_a_5x5_kernel():
    k = np.random.default_rng(1).integers(-2, 3, (5, 5)).astype(np.float32)
    ref = F.conv2d(t(cm.EXAMPLE_5X5), t(k), padding=2)[0, 0].numpy()
    np.testing.assert_allclose(cm.conv2d(cm.EXAMPLE_5X5, k, 1, 2), ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("k,stride", [(2, 2), (3, 1), (3, 2)])
def test_pooling_matches_torch(mode, k, stride):
    x = np.random.default_rng(2).normal(size=(9, 10)).astype(np.float32)
    fn = F.max_pool2d if mode == "max" else F.avg_pool2d
    np.testing.assert_allclose(cm.pool2d(x, k, stride, mode), fn(t(x), k, stride)[0, 0].numpy(), atol=1e-6)


def test_relu_and_formulas():
    np.testing.assert_array_equal(cm.relu(np.array([-1.0, 0.0, 2.0])), [0, 0, 2])
    assert cm.out_size(32, 5) == 28 and cm.out_size(28, 3, 1, 2) == 14
    assert cm.conv_params(5, 1, 6) == 156  # LeNet-5 C1
    assert cm.conv_params(5, 6, 16) == 2416  # C3 fully connected
    conv = torch.nn.Conv2d(6, 16, 5)
    assert cm.conv_params(5, 6, 16) == sum(p.numel() for p in conv.parameters())
    with pytest.raises(ValueError, match="does not fit"):
        cm.out_size(3, 5)


def test_playground_matrix_mode_fills_in_the_formulas():
    from convscope.tabs.playground import compute

    conv, _, pooled, _, md = compute("5×5 example", cm.EXAMPLE_5X5.tolist(), None,
                                                   cm.KERNELS["Sobel x"].tolist(), 1, 1, True, "max", 2, 2)
    ref = F.relu(F.conv2d(t(cm.EXAMPLE_5X5), t(cm.KERNELS["Sobel x"]), padding=1))
    np.testing.assert_allclose(conv, ref[0, 0].numpy(), atol=1e-3)
    np.testing.assert_allclose(pooled, F.max_pool2d(ref, 2, 2)[0, 0].numpy(), atol=1e-3)
    assert "⌊(5 − 3 + 2·1) / 1⌋ + 1 = ⌊4 / 1⌋ + 1 = **5**" in md
    assert "(3·3·3 + 1)·32 = **896**" in md and "= **2**" in md


def test_playground_image_mode_and_errors():
    from convscope.tabs.playground import compute

    img = np.random.default_rng(0).integers(0, 256, (600, 400, 3), dtype=np.uint8)
    _, conv_img, _, pool_img, md = compute("image", None, img, cm.KERNELS["sharpen"].tolist(), 2, 1, False,
                                           "avg", 2, 2)
    assert conv_img is not None and pool_img is not None and "⚠️" not in md
    assert compute("5×5 example", cm.EXAMPLE_5X5.tolist(), None, [[1, 2, 3], [4, 5, 6]], 1, 0, True, "none", 2, 2)[4] \
        .startswith("⚠️")  # not square
    assert "does not fit" in compute("5×5 example", [[1, 2], [3, 4]], None, np.ones((5, 5)).tolist(), 1, 0, True,
                                     "none", 2, 2)[4]
    assert compute("image", None, None, cm.KERNELS["identity"].tolist(), 1, 0, True, "none", 2, 2)[4].startswith("⚠️")
