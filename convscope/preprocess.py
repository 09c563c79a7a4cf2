"""Image decoding and geometry, numpy/PIL only: the one home of "what the model sees".

The app calls these functions, and so do the tests and the export-time evaluation, so training,
evaluation and serving can never disagree. Arithmetic (scaling, mean/std) is *not* here: it lives
inside each ONNX graph, which takes raw uint8 pixels.

Every function raises :class:`InputError` (a ``ValueError`` with a message meant for the user)
for input it cannot use; nothing here should ever surface a stack trace.
"""

from __future__ import annotations

import io
import math
import os
import threading

import numpy as np
from PIL import Image, ImageFilter, ImageOps

MIN_SIDE = 8  # px: smaller images cannot hold a recognisable digit
# Refused from the header, before decoding: 4000x4000 is far more than any model needs (the
# largest input is 224x224) and bounds a decode at 64 MB (RGBA 8-bit) or 128 MB (RGBA 16-bit).
MAX_PIXELS = 16_000_000
WORK_MAX_SIDE = 2048  # px: larger decoded images are box-reduced to this before any float work
# Decodes that may run at once in the process (CONVSCOPE_DECODES): REST runs up to 40 requests in
# threads, and each decode of a large image holds its pixels several times over.
DECODES = threading.BoundedSemaphore(int(os.environ.get("CONVSCOPE_DECODES", "2")))
WORK_SIDE = 200  # px: the digit's longer side while its stroke width is normalised (10x MNIST's box)
MIN_CONTRAST = 32  # of 255: weaker ink than this counts as an empty canvas (JPEG noise, paper grain)

# Measured on the MNIST test set (see tests/test_preprocess.py): centre of mass of the digits
# and the median stroke width (2 * ink area / ink boundary, ink = pixels above 64).
MNIST_COM = (14.0, 14.0)
MNIST_STROKE = 3.35  # px at 28x28
MNIST_BOX = 20  # px: digits are fit into 20x20, keeping their aspect ratio


# Decompression-bomb guard for every PIL decode in the process, Gradio's included (PIL raises
# above 2x this, warns above 1x); check_header refuses above 1x before Gradio decodes.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class InputError(ValueError):
    """Input the model cannot use; ``str(e)`` is a message for the user."""


class EmptyInput(InputError):
    """Nothing drawn (None, blank, or a uniform image)."""


class Unreadable(InputError):
    """Bytes that are not an image this app can decode (REST: 415)."""


class TooLarge(InputError):
    """An image with more pixels than MAX_PIXELS (REST: 413)."""


def _pixels(img: np.ndarray | Image.Image | None) -> np.ndarray:
    """Any image -> its pixels as HxWxC (C = 1 to 4) in their own dtype, upright (EXIF applied)."""
    if img is None:
        raise EmptyInput("Nothing was drawn: the canvas is empty.")
    if isinstance(img, Image.Image):
        img = ImageOps.exif_transpose(img)  # phones store photos sideways plus an orientation tag
        if img.mode == "P":
            img = img.convert("RGBA")
        elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB")
        img = np.asarray(img)
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"Expected an image, got an array of shape {a.shape}.")
    return a


def _composited(img: np.ndarray | Image.Image | None) -> np.ndarray:
    """Any image -> float32 HxWxC in [0, 255], C = 1 (gray) or 3 (colour), alpha composited
    onto white (a transparent canvas is white paper, not black)."""
    a = _to_0_255(_pixels(img))
    if a.shape[2] in (2, 4):
        alpha = a[..., -1:] / 255.0
        a = a[..., :-1] * alpha + 255.0 * (1.0 - alpha)
    return a


def to_gray(img: np.ndarray | Image.Image | None) -> np.ndarray:
    """Any image (PIL or array: L, RGB, RGBA, 16-bit, float, bool) -> float32 HxW in [0, 255]."""
    a = _composited(img)
    if a.shape[2] == 3:
        return np.ascontiguousarray(a @ np.array([0.299, 0.587, 0.114], np.float32))  # ITU-R 601, as PIL "L"
    return np.ascontiguousarray(a[..., 0], np.float32)


def to_rgb(img: np.ndarray | Image.Image | None) -> np.ndarray:
    """Any image -> uint8 HxWx3 (gray repeated, alpha composited onto white)."""
    a = _pixels(img)
    if a.dtype == np.uint8 and a.shape[2] in (1, 3):
        # 8 bits, no alpha (every JPEG): the pixels are already the answer; the float path below
        # gives the same bytes and took most of a photo's preprocessing time
        return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a
    a = _composited(a)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def _to_0_255(a: np.ndarray) -> np.ndarray:
    """Pixel values of any dtype -> float32 in [0, 255]."""
    if a.dtype == bool:
        return a.astype(np.float32) * 255.0
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 257.0
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32: inf, then 0 below
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if np.issubdtype(a.dtype, np.floating) and f.size and f.min() >= 0 and f.max() <= 1.0:
        return f * 255.0  # float images in [0, 1]
    if f.size and (f.min() < 0 or f.max() > 255):  # 32-bit ints, HDR floats: stretch the range
        # in float64: with float32 values near its limit, hi - lo (and f - lo) overflow to inf
        d = f.astype(np.float64)
        lo, hi = float(d.min()), float(d.max())
        return ((d - lo) * (255.0 / (hi - lo))).astype(np.float32) if hi > lo else np.zeros_like(f)
    return f


def check_size(h: int, w: int) -> None:
    if min(h, w) < MIN_SIDE:
        raise InputError(f"The image is {w}x{h} px: too small (at least {MIN_SIDE}x{MIN_SIDE} px).")
    if h * w > MAX_PIXELS:
        raise TooLarge(f"The image is {w}x{h} px: too large (at most {MAX_PIXELS // 1_000_000} megapixels).")


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 255] relative to the background, whatever the polarity.

    The background is the median of the image border: dark ink on light paper (a canvas, a
    photo of paper) and light ink on dark (MNIST itself, chalkboards) both come out as ink > 0.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    bg = float(np.median(border))
    ink = (bg - gray) if bg >= 128 else (gray - bg)
    return np.clip(ink, 0, 255)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary drawing: 2 * area / boundary pixels (exact for long bands)."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    boundary = int((mask & ~inner).sum())
    return 2.0 * area / max(boundary, 1)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _normalise_stroke(work: Image.Image, scale_to_28: float) -> Image.Image:
    """Thicken hairlines and thin marker strokes so that, at 28x28, strokes are MNIST-wide."""
    mask = np.asarray(work) > 64
    width = stroke_width(mask) * scale_to_28  # as it would be at 28x28
    radius = 0
    if width < 0.6 * MNIST_STROKE or width > 1.8 * MNIST_STROKE:
        radius = round((MNIST_STROKE - width) / (2 * scale_to_28))
    if radius > 0:
        return work.filter(ImageFilter.MaxFilter(2 * radius + 1))
    if radius < 0:
        eroded = work.filter(ImageFilter.MinFilter(2 * min(-radius, 12) + 1))
        if (np.asarray(eroded) > 64).sum() >= 0.2 * mask.sum():  # never erase the drawing
            return eroded
    return work


def mnist_digit(img: np.ndarray | Image.Image | None) -> np.ndarray:
    """A drawing or photo of one digit -> the 28x28 uint8 image an MNIST model expects.

    MNIST's own procedure: find the ink, crop its bounding box, fit it into 20x20 keeping the
    aspect ratio (anti-aliased), and place it in 28x28 with its centre of mass at the centre.
    Polarity is detected from the border, and stroke width is normalised first so a hairline
    or a fat marker both look like an MNIST pen stroke. Output: white ink (255) on black (0).
    """
    gray = to_gray(img)
    check_size(*gray.shape)
    if max(gray.shape) > 4 * WORK_SIDE:  # area-average huge canvases down first: bounded work
        f = 4 * WORK_SIDE / max(gray.shape)
        small = Image.fromarray(gray).resize((max(1, round(gray.shape[1] * f)), max(1, round(gray.shape[0] * f))),
                                             Image.Resampling.BOX)
        gray = np.asarray(small, np.float32)
    ink = ink_map(gray)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise EmptyInput("Nothing was drawn: the image is blank or uniform.")
    ink = ink * (255.0 / peak)
    y0, y1, x0, x1 = _bbox(ink > 64)
    crop = Image.fromarray(ink[y0:y1, x0:x1].astype(np.uint8))
    # Work at 10x MNIST's box so stroke normalisation has pixels to work with.
    f = WORK_SIDE / max(crop.size)
    work_size = (max(1, round(crop.width * f)), max(1, round(crop.height * f)))
    work = crop.resize(work_size, Image.Resampling.BOX if f < 1 else Image.Resampling.BILINEAR)
    pad = WORK_SIDE // 4  # room for strokes to grow
    padded = Image.new("L", (work.width + 2 * pad, work.height + 2 * pad))
    padded.paste(work, (pad, pad))
    work = _normalise_stroke(padded, MNIST_BOX / WORK_SIDE)
    arr = np.asarray(work)
    y0, y1, x0, x1 = _bbox(arr > 64)
    work = work.crop((x0, y0, x1, y1))
    s = MNIST_BOX / max(work.size)
    fitted = work.resize((max(1, round(work.width * s)), max(1, round(work.height * s))), Image.Resampling.LANCZOS)
    digit = np.asarray(fitted, np.float32)
    mass = digit.sum()
    yy, xx = np.indices(digit.shape)
    cy, cx = (digit * yy).sum() / mass, (digit * xx).sum() / mass
    top = int(np.clip(round(MNIST_COM[0] - cy), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(MNIST_COM[1] - cx), 0, 28 - digit.shape[1]))
    out = np.zeros((28, 28), np.uint8)
    out[top:top + digit.shape[0], left:left + digit.shape[1]] = np.clip(digit, 0, 255).astype(np.uint8)
    return out


def imagenet_center(img: np.ndarray | Image.Image | None, size: int = 224, crop_pct: float = 0.875) -> np.ndarray:
    """timm's ImageNet evaluation geometry: shorter side to size / crop_pct (bicubic), then the
    central size x size crop. Returns uint8 (size, size, 3)."""
    rgb = to_rgb(img)
    h, w = rgb.shape[:2]
    check_size(h, w)
    short = round(size / crop_pct)
    f = short / min(h, w)
    pil = Image.fromarray(rgb).resize((max(size, round(w * f)), max(size, round(h * f))), Image.Resampling.BICUBIC)
    left, top = (pil.width - size) // 2, (pil.height - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)))


def center_square(rgb: np.ndarray) -> np.ndarray:
    """The largest centred square of an image (CIFAR's photos are roughly centred objects)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return rgb[top:top + s, left:left + s]


def cifar_photo(img: np.ndarray | Image.Image | None, size: int = 32) -> np.ndarray:
    """A photo -> what a CIFAR-10 model sees: the centred square, resized to size x size with an
    area filter (each output pixel averages its patch, as CIFAR's downsampled photos do).
    Returns uint8 (size, size, 3)."""
    rgb = to_rgb(img)
    check_size(*rgb.shape[:2])
    square = Image.fromarray(center_square(rgb))
    resample = Image.Resampling.BOX if square.width >= size else Image.Resampling.BICUBIC
    return np.asarray(square.resize((size, size), resample))


XRAY_SIDE = 224
# Warnings for images that do not look like a frontal chest X-ray (tuned on the training films and
# on the corpus in tests/test_xray.py): the model answers anyway, so the user must be told.
XRAY_MAX_COLOUR = 24.0  # mean (max - min) over R, G, B, of 255: radiographs are gray
XRAY_ASPECT = (0.5, 2.0)  # width / height; chest films are about 0.8-1.4
XRAY_MIN_STD = 12.0  # of 255: less spread than this is a nearly uniform picture, not a radiograph


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _window_to_uint8(a: np.ndarray) -> np.ndarray:
    """More than 8 bits of data -> 0-255, linearly from its minimum to its maximum (exact for an
    8-bit image saved at 16 bits; DICOM gets its own window first)."""
    a = np.nan_to_num(a.astype(np.float64))
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip((a - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


DEFLATED_DICOM = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: inflated whole by pydicom


def _dicom_dataset(data: bytes) -> object:
    """A DICOM file's dataset, parsed without decoding pixels; refuses what could inflate far beyond
    the file's size (the deflated transfer syntax) before pydicom reads past the file meta."""
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        fp = io.BytesIO(data)
        read_preamble(fp, True)
        syntax = str(_read_file_meta_info(fp).get("TransferSyntaxUID", ""))
    except Exception:
        raise Unreadable("Could not read this DICOM file: it is damaged or truncated.") from None
    if syntax == DEFLATED_DICOM:
        raise Unreadable("Deflated DICOM files are not accepted: save the film uncompressed or as JPEG/PNG.")
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        raise Unreadable("Could not read this DICOM file: it is damaged or truncated.") from None


def _dicom_frame0(ds: object) -> np.ndarray:
    """Frame 0 of a dataset's pixels, after checking from its header that one frame is within
    MAX_PIXELS (a multi-frame file is never decoded whole)."""
    from pydicom.pixels import pixel_array

    if "PixelData" not in ds:
        raise InputError("This DICOM file holds no image (no Pixel Data element): it may be a report, a "
                         "structured document, or cut short.")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    samples, bits = int(getattr(ds, "SamplesPerPixel", 1) or 1), int(getattr(ds, "BitsAllocated", 16) or 16)
    if rows * cols > MAX_PIXELS or samples > 4 or bits > 32:
        raise TooLarge(f"The DICOM image is {cols}x{rows} px with {samples}x{bits} bits: too large "
                       f"(at most {MAX_PIXELS // 1_000_000} megapixels).")
    try:
        with DECODES:
            return pixel_array(ds, index=0)
    except Exception as e:  # compressed transfer syntaxes without a decoder, truncated pixel data
        raise Unreadable(f"Could not decode this DICOM image ({type(e).__name__}): it may be damaged, or "
                         "compressed with a codec that is not installed.") from None


def dicom_to_gray(data: bytes) -> np.ndarray:
    """A DICOM file's image as uint8 HxW, displayed as a radiologist would see it: modality LUT
    (rescale slope/intercept), then the file's VOI LUT or window centre/width (else its full
    range), then MONOCHROME1 inverted so bone is bright. Multi-frame files: the first frame."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a serving dependency
        raise InputError("DICOM support needs pydicom (pip install pydicom).") from None
    ds = _dicom_dataset(data)
    arr = _dicom_frame0(ds)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour DICOM (secondary capture): plain luminance, no LUTs apply
        return np.clip(to_gray(arr) + 0.5, 0, 255).astype(np.uint8)
    if arr.ndim != 2:
        raise InputError(f"This DICOM image has an unexpected shape {arr.shape}.")
    check_size(*arr.shape)
    a = apply_modality_lut(arr, ds)
    if a.dtype.kind == "f" and "VOILUTSequence" in ds and np.array_equal(a, np.round(a)):
        a = a.astype(np.int64)  # a LUT is indexed by stored values; an identity rescale made them float
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        a = apply_voi_lut(a, ds, index=0)
    out = _window_to_uint8(a)
    return 255 - out if photometric == "MONOCHROME1" else out


def check_header(img: Image.Image) -> None:
    """Refuse (TooLarge) an opened, not yet decoded image whose header claims more than MAX_PIXELS."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise TooLarge(f"The image is {w}x{h} px: too large (at most {MAX_PIXELS // 1_000_000} megapixels).")


def bounded(img: Image.Image) -> Image.Image:
    """A decoded image with its longer side at most WORK_MAX_SIDE (integer box reduction: every
    model input is at most 256 px, so nothing a model sees changes, but later float copies shrink)."""
    factor = math.ceil(max(img.size) / WORK_MAX_SIDE)
    if factor <= 1:
        return img
    try:
        return img.reduce(factor)
    except (ValueError, NotImplementedError):  # modes reduce() does not take (e.g. "I;16")
        return img


def decode_file(fp: object) -> Image.Image:
    """An image file (path or file object) -> its first frame decoded: size checked from the
    header first, JPEGs decoded at a reduced scale where they are far larger than needed, and at
    most CONVSCOPE_DECODES decodes at once. Raises TooLarge or Unreadable."""
    try:
        img = Image.open(fp)
        check_header(img)
        if img.format == "JPEG":
            img.draft(img.mode, (WORK_MAX_SIDE, WORK_MAX_SIDE))
        with DECODES:
            img.load()
        return bounded(img)
    except TooLarge:
        raise
    except Image.DecompressionBombError:
        raise TooLarge(f"The image is too large (at most {MAX_PIXELS // 1_000_000} megapixels).") from None
    except Exception:  # PIL raises many types for files that are not images
        raise Unreadable("Could not read the file as an image (PNG, JPEG, DICOM, WebP, BMP and TIFF work).") \
            from None


def read_image(data: bytes) -> np.ndarray | Image.Image:
    """File bytes -> an image the preprocessing functions take: DICOM through
    :func:`dicom_to_gray`, everything else through :func:`decode_file` (raises InputError when
    unreadable or too large)."""
    if not data:
        raise Unreadable("The file is empty.")
    if is_dicom(data):
        return dicom_to_gray(data)
    return decode_file(io.BytesIO(data))


def xray_gray(img: np.ndarray | Image.Image | None) -> np.ndarray:
    """An X-ray in any format -> uint8 HxW at its own size. 8-bit images keep their values (the
    training films are 8-bit); 12-16-bit, 32-bit and float data are windowed min-max to 8 bits
    (floats in [0, 1] are read as fractions of white)."""
    if img is None:
        raise EmptyInput("No image was given.")
    if isinstance(img, Image.Image):
        img = ImageOps.exif_transpose(img)
        if img.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
            img = np.asarray(img)
    if isinstance(img, np.ndarray) and img.ndim == 2 and img.dtype == np.uint8:
        check_size(*img.shape)  # 8-bit gray, the common film: the float path below gives the same bytes
        return img
    if isinstance(img, np.ndarray) and img.ndim == 2 and img.dtype.kind in "iuf":
        check_size(*img.shape)
        a = np.nan_to_num(img.astype(np.float64))
        if img.dtype.kind == "f" and a.min() >= 0 and a.max() <= 1:
            return np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return _window_to_uint8(a)
    gray = to_gray(img)
    check_size(*gray.shape)
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def xray_image(img: np.ndarray | Image.Image | None, size: int = XRAY_SIDE) -> np.ndarray:
    """What an X-ray model sees: the whole film squashed to size x size (no crop: both training
    sets were made this way, aspect ratio not kept), Lanczos. 8-bit films keep their values;
    12-16-bit, 32-bit and float data are windowed from their minimum to their maximum to 8 bits;
    DICOM: modality LUT, then the file's VOI LUT or window, MONOCHROME1 inverted.

    Returns uint8 (size, size, 1)."""
    gray = xray_gray(img)
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.LANCZOS))[..., None]


def xray_warnings(img: np.ndarray | Image.Image | None) -> list[str]:
    """Reasons this image may not be a frontal chest X-ray (empty if it looks like one)."""
    out = []
    rgb = None
    colour_pil = isinstance(img, Image.Image) and img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr")
    if colour_pil or (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] >= 3):
        rgb = to_rgb(img)
    if rgb is not None:
        small = np.asarray(Image.fromarray(rgb).resize((64, 64)), np.float32)
        colour = float((small.max(2) - small.min(2)).mean())
        if colour > XRAY_MAX_COLOUR:
            out.append(f"The image is strongly coloured (colourfulness {colour:.0f} of 255); radiographs are gray.")
    gray = xray_gray(img)
    h, w = gray.shape
    if not XRAY_ASPECT[0] <= w / h <= XRAY_ASPECT[1]:
        out.append(f"The image is {w}x{h} px, an unusual shape for a chest film (aspect {w / h:.2f}; "
                   f"expected {XRAY_ASPECT[0]}-{XRAY_ASPECT[1]}); it is squashed to a square.")
    std = float(np.asarray(Image.fromarray(gray).resize((64, 64)), np.float32).std())
    if std < XRAY_MIN_STD:
        out.append(f"The image is nearly uniform (contrast {std:.1f} of 255): there is little to see.")
    return out


def whole_photo(img: np.ndarray | Image.Image | None, size: int = 224) -> np.ndarray:
    """What a model taught on your own images sees (the Teach tab, ``python -m train folder``): the
    whole picture, squashed to size x size (bicubic, no crop: what you framed is what it learns).
    Returns uint8 (size, size, 3)."""
    rgb = to_rgb(img)
    check_size(*rgb.shape[:2])
    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))


def policy_note(name: str) -> str:
    """A preprocessing policy in one paragraph, for model cards: its function's docstring, so
    the card says what the code does."""
    return " ".join((PREPROCESSORS[name].__doc__ or "").split())


PREPROCESSORS = {"mnist_digit": mnist_digit, "imagenet_center": imagenet_center, "cifar_photo": cifar_photo,
                 "xray_image": xray_image, "whole_photo": whole_photo}
