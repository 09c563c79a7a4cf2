"""The MNIST-style preprocessing of drawings: what the digit models actually see."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from convscope.preprocess import (
    MNIST_COM,
    MNIST_STROKE,
    EmptyInput,
    InputError,
    cifar_photo,
    mnist_digit,
    stroke_width,
    to_gray,
    to_rgb,
    xray_gray,
)


def draw(shape: str = "seven", width: int = 24, offset: tuple[int, int] = (0, 0), size: int = 280,
         scale: float = 1.0, ink: int = 0, paper: int = 255) -> np.ndarray:
    """A digit-like drawing on a canvas, as the Sketchpad gives it (dark ink on white)."""
    img = Image.new("L", (size, size), paper)
    d = ImageDraw.Draw(img)
    ox, oy = offset

    def p(x: float, y: float) -> tuple[float, float]:
        return (ox + x * scale, oy + y * scale)

    if shape == "seven":
        d.line([p(60, 50), p(200, 50), p(110, 240)], fill=ink, width=width, joint="curve")
    elif shape == "one":
        d.line([p(140, 40), p(140, 240)], fill=ink, width=width)
    elif shape == "zero":
        d.ellipse([p(80, 40), p(200, 240)], outline=ink, width=width)
    return np.asarray(img)


def center_of_mass(a: np.ndarray) -> tuple[float, float]:
    yy, xx = np.indices(a.shape)
    m = a.astype(np.float64).sum()
    return (a * yy).sum() / m, (a * xx).sum() / m


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 64, b > 64
    return (a & b).sum() / (a | b).sum()


def test_output_is_mnist_format():
    out = mnist_digit(draw())
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and out[0].max() == 0 and out[:, 0].max() == 0  # white ink, black border
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) <= 21  # fits MNIST's 20x20 box (+AA)


@pytest.mark.parametrize("shape", ["seven", "one", "zero"])
def test_centre_of_mass_at_centre(shape):
    cy, cx = center_of_mass(mnist_digit(draw(shape)))
    assert abs(cy - MNIST_COM[0]) <= 0.6 and abs(cx - MNIST_COM[1]) <= 0.6


def test_off_centre_and_smaller_drawing_gives_the_same_digit():
    centred = mnist_digit(draw("seven"))
    corner = mnist_digit(draw("seven", width=12, offset=(-20, -15), scale=0.5))  # top-left quarter
    assert iou(centred, corner) > 0.7
    cy, cx = center_of_mass(corner)
    assert abs(cy - 14) <= 0.6 and abs(cx - 14) <= 0.6


@pytest.mark.parametrize("width", [1, 3, 24, 60])
def test_thin_and_thick_strokes_come_out_mnist_wide(width):
    out = mnist_digit(draw("seven", width=width))
    w = stroke_width(out > 64)
    assert 0.5 * MNIST_STROKE <= w <= 1.7 * MNIST_STROKE, w
    assert iou(out, mnist_digit(draw("seven", width=24))) > 0.45


def test_inverted_polarity_gives_identical_output():
    dark_on_light = mnist_digit(draw("seven"))
    light_on_dark = mnist_digit(draw("seven", ink=255, paper=0))
    np.testing.assert_array_equal(dark_on_light, light_on_dark)


def test_transparent_canvas_is_white_paper():
    """A browser canvas exports black strokes on transparent pixels (RGB 0 under alpha 0)."""
    ink = 255 - draw("seven")
    rgba = np.dstack([np.zeros_like(ink)] * 3 + [ink])
    np.testing.assert_array_equal(mnist_digit(rgba), mnist_digit(draw("seven")))
    pil = Image.fromarray(rgba, "RGBA")
    np.testing.assert_array_equal(mnist_digit(pil), mnist_digit(draw("seven")))


@pytest.mark.parametrize("convert", [
    lambda a: a.astype(np.uint16) * 257,  # 16-bit
    lambda a: a.astype(np.float32) / 255.0,  # float in [0, 1]
    lambda a: np.dstack([a] * 3),  # RGB
    lambda a: a[..., None],  # HxWx1
    lambda a: a > 127,  # bool
])
def test_dtypes_and_channels(convert):
    ref = mnist_digit(draw("seven"))
    assert iou(mnist_digit(convert(draw("seven"))), ref) > 0.9


@pytest.mark.parametrize("value", [
    None,
    np.full((280, 280), 255, np.uint8),  # blank canvas
    np.full((280, 280), 128, np.uint8),  # uniform grey
    np.zeros((280, 280), np.uint8),  # all black
    np.full((280, 280), 250, np.uint8) - np.random.default_rng(0).integers(0, 8, (280, 280)).astype(np.uint8),
])
def test_empty_inputs(value):
    with pytest.raises(EmptyInput):
        mnist_digit(value)


@pytest.mark.parametrize("shape", [(1, 1), (5, 5000), (7000, 7000)])
def test_size_limits_have_clear_messages(shape):
    a = np.full(shape, 255, np.uint8)
    a[: shape[0] // 2, : shape[1] // 2] = 0
    with pytest.raises(InputError, match=r"too (small|large)"):
        mnist_digit(a)


def test_big_canvas_is_handled():
    big = np.asarray(Image.fromarray(draw("one")).resize((3000, 3000)))
    assert iou(mnist_digit(big), mnist_digit(draw("one"))) > 0.8


def test_not_an_image():
    with pytest.raises(InputError):
        to_gray(np.zeros((4, 4, 4, 4)))


def test_mnist_constants_are_measured(mnist_test):
    """MNIST_COM and MNIST_STROKE are what the real MNIST test digits have (all 10,000: the two
    halves come from different writers and differ in stroke width)."""
    x = mnist_test.x[..., 0].astype(np.float64)
    yy, xx = np.indices((28, 28))
    mass = x.sum((1, 2))
    com = np.array([((x * yy).sum((1, 2)) / mass).mean(), ((x * xx).sum((1, 2)) / mass).mean()])
    assert np.allclose(com, MNIST_COM, atol=0.1)
    widths = [stroke_width(d > 64) for d in mnist_test.x[..., 0]]
    assert abs(np.median(widths) - MNIST_STROKE) < 0.05


def test_mnist_digits_survive_the_round_trip(mnist_test):
    """Real MNIST digits drawn 10x larger, black on white, come back close to the original."""
    diffs = []
    for d in mnist_test.x[:300, ..., 0]:
        big = np.asarray(Image.fromarray(255 - d).resize((280, 280), Image.Resampling.BILINEAR))
        diffs.append(np.abs(mnist_digit(big).astype(int) - d).mean())
    assert np.mean(diffs) < 10, np.mean(diffs)  # of 255


# --- CIFAR-10 photos ----------------------------------------------------------------------------


def test_cifar_photo_keeps_a_32px_image_exactly(cifar_test):
    for x in cifar_test.x[:20]:
        np.testing.assert_array_equal(cifar_photo(Image.fromarray(x)), x)


def test_cifar_photo_takes_the_centred_square():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = (255, 0, 0)  # the centre third is red, the sides black
    out = cifar_photo(img)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 0).all()
    np.testing.assert_array_equal(cifar_photo(img.transpose(1, 0, 2)), out.transpose(1, 0, 2))


def test_cifar_photo_modes():
    grey = Image.new("L", (64, 48), 90)
    out = cifar_photo(grey)
    assert out.shape == (32, 32, 3) and (out == 90).all()  # grey repeated into RGB
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert (cifar_photo(clear) == 255).all()  # transparent is white paper, not black
    area = cifar_photo(np.tile(np.array([[0], [255]], np.uint8), (32, 64))[..., None].repeat(3, 2))
    assert np.abs(area.astype(int) - 128).max() <= 1  # 2:1 stripes average out (area filter)


@pytest.mark.parametrize("shape", [(4, 400), (1, 1)])
def test_cifar_photo_refuses_slivers(shape):
    with pytest.raises(InputError, match="too small"):
        cifar_photo(np.zeros((*shape, 3), np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_8bit_fast_paths_give_the_float_paths_bytes(mode):
    """to_rgb / xray_gray skip the float conversion for 8-bit images without alpha: same output."""
    a = np.random.default_rng(3).integers(0, 256, (37, 53, 3) if mode == "RGB" else (37, 53), dtype=np.uint8)
    img = Image.fromarray(a, mode)
    rgb = to_rgb(img)
    assert rgb.dtype == np.uint8 and rgb.shape == (37, 53, 3)
    np.testing.assert_array_equal(rgb, to_rgb(a.astype(np.float32)))  # arrays take the float path
    if mode == "L":
        np.testing.assert_array_equal(xray_gray(img), a)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_float_images_near_the_float32_limit_stretch_to_0_255():
    # the fuzzer found float32 pixels near +-3.4e38: stretching them in float32 overflowed to inf/NaN
    top = np.finfo(np.float32).max
    a = np.zeros((40, 40), np.float32)
    a[:, :20], a[:, 20:] = -top, top
    gray = to_gray(a)
    assert np.isfinite(gray).all()
    assert gray.min() == 0 and gray.max() == 255
