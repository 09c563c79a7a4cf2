"""Convolution arithmetic in plain numpy, for the playground: small, readable, tested against
torch.nn.functional (tests/test_convmath.py).

Conventions follow torch: "convolution" is cross-correlation (the kernel is not flipped), zero
padding, floor division for output sizes.
"""

from __future__ import annotations

import numpy as np

KERNELS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32),
    "edge (Laplacian)": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
    "Sobel x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
    "Sobel y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32),
    "box blur": np.full((3, 3), 1 / 9, np.float32),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
}

# The course's 5x5 example input.
EXAMPLE_5X5 = np.array([[1, 1, 1, 0, 0],
                        [0, 1, 1, 1, 0],
                        [0, 0, 1, 1, 1],
                        [0, 0, 1, 1, 0],
                        [0, 1, 1, 0, 0]], np.float32)


def out_size(w: int, k: int, p: int = 0, s: int = 1) -> int:
    """Output side of a convolution or pooling: floor((W - K + 2P) / S) + 1."""
    if s < 1 or k < 1 or p < 0:
        raise ValueError("need kernel >= 1, stride >= 1, padding >= 0")
    n = (w - k + 2 * p) // s + 1
    if n < 1:
        raise ValueError(f"a {k}x{k} window does not fit a {w}x{w} input with padding {p}")
    return n


def conv_params(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    """Parameters of a conv layer: (K*K*C_in + 1) * C_out (without the +1 if there is no bias)."""
    return (k * k * c_in + int(bias)) * c_out


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """All k x k windows of a 2-D array with stride s: shape (out_h, out_w, k, k)."""
    v = np.lib.stride_tricks.sliding_window_view(x, (k, k))
    return v[::s, ::s]


def conv2d(x: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: int = 0, bias: float = 0.0) -> np.ndarray:
    """2-D cross-correlation of a single-channel image with a square kernel."""
    x = np.asarray(x, np.float32)
    kernel = np.asarray(kernel, np.float32)
    k = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != k:
        raise ValueError("the kernel must be square")
    out_size(min(x.shape), k, padding, stride)  # raises a clear error if it does not fit
    xp = np.pad(x, padding)
    return np.einsum("ijkl,kl->ij", _windows(xp, k, stride), kernel) + bias


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def pool2d(x: np.ndarray, k: int = 2, stride: int | None = None, mode: str = "max") -> np.ndarray:
    """Max or average pooling without padding (torch's default)."""
    stride = stride or k
    out_size(min(x.shape), k, 0, stride)
    w = _windows(np.asarray(x, np.float32), k, stride)
    if mode == "max":
        return w.max(axis=(2, 3))
    if mode == "avg":
        return w.mean(axis=(2, 3))
    raise ValueError(f"unknown pooling {mode!r}")
