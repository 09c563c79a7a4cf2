"""Turning arrays into pictures (numpy/PIL only): colour maps, channel tiles, filters, CAM overlays.

One colour map per kind of picture, always with its legend: activations use viridis on a scale
shared by every channel of a stage (so channels can be compared), filters use a diverging
blue-white-red map centred on zero (the sign of a weight matters). Upscaling is nearest-neighbour
so every pixel of a 7x7 map stays a visible square.
"""

from __future__ import annotations

import uuid

import numpy as np
from PIL import Image, ImageDraw


def served(img: Image.Image) -> Image.Image:
    """Tag an image we hand to Gradio with a one-off PNG text chunk.

    Gradio caches output images under the hash of their bytes and writes them with a plain
    truncate-and-write: when concurrent requests produce identical pictures (a class clicking the
    same example), one request's write can truncate the file while another's is being served, and
    that client receives 0 bytes (found by bench/load.py). Unique bytes give every request its own
    file; the copies are removed with the rest of the cache.
    """
    img.info["convscope-request"] = uuid.uuid4().hex
    return img

# Anchor colours of matplotlib's viridis (every 32nd entry) and a ColorBrewer RdBu, interpolated.
_VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], np.float32)
_DIVERGING = np.array([[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247],
                       [253, 219, 199], [239, 138, 98], [178, 24, 43]], np.float32)
_INFERNO = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                     [245, 125, 21], [250, 193, 39], [252, 255, 164]], np.float32)
CMAPS = {"viridis": _VIRIDIS, "diverging": _DIVERGING, "inferno": _INFERNO}


def _lut(name: str) -> np.ndarray:
    anchors = CMAPS[name]
    x = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], 1).astype(np.uint8)


LUTS = {name: _lut(name) for name in CMAPS}


def colorize(a: np.ndarray, lo: float, hi: float, cmap: str = "viridis") -> np.ndarray:
    """Values -> RGB uint8 through a colour map, with [lo, hi] mapped to its ends."""
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = np.clip((np.asarray(a, np.float32) - lo) * scale, 0, 255).astype(np.uint8)
    return LUTS[cmap][idx]


def upscale(rgb: np.ndarray, side: int) -> Image.Image:
    """Nearest-neighbour upscale to about ``side`` pixels on the longer edge (integer factor)."""
    h, w = rgb.shape[:2]
    f = max(1, side // max(h, w))
    return served(Image.fromarray(rgb).resize((w * f, h * f), Image.Resampling.NEAREST))


def colorbar(lo: float, hi: float, cmap: str, label: str, width: int = 320) -> Image.Image:
    """A horizontal legend: the colour ramp with its end values and what they measure."""
    ramp = colorize(np.tile(np.linspace(lo, hi, width), (16, 1)), lo, hi, cmap)
    img = Image.new("RGB", (width, 38), "white")
    img.paste(Image.fromarray(ramp), (0, 0))
    d = ImageDraw.Draw(img)
    d.text((2, 20), f"{lo:.3g}", fill="black")
    d.text((width // 2 - 3 * len(label), 20), label, fill="black")
    d.text((width - 6 * len(f"{hi:.3g}") - 2, 20), f"{hi:.3g}", fill="black")
    return served(img)


def columns(n: int) -> int:
    return 8 if n <= 32 else 16


def activation_grid(maps: np.ndarray, target: int = 56) -> tuple[Image.Image, float, float, int, int]:
    """(C, H, W) activations -> one numbered grid on a scale shared by all channels.

    Returns the image, the scale (lo, hi), the number of columns and the tile side in pixels.
    """
    lo, hi = float(maps.min()), float(maps.max())
    side = tile_side(maps.shape[1], target)
    f = side // maps.shape[1]
    tiles = [np.repeat(np.repeat(colorize(m, lo, hi), f, 0), f, 1) for m in maps]
    cols = columns(len(maps))
    return grid(tiles, cols), lo, hi, cols, side


def filter_grid(w: np.ndarray, in_channel: int = 0, target: int = 64) -> tuple[Image.Image, float, str]:
    """(C_out, C_in, k, k) weights -> a grid of filters and a description of what is shown.

    A first layer on RGB input shows every filter as a colour picture (min-max per filter); any
    other layer shows one input channel's k x k slice of every filter on a diverging map centred
    on zero, scaled by the largest |weight| of that slice.
    """
    k = w.shape[2]
    f = max(1, round(target / k))
    if w.shape[1] == 3:
        tiles = []
        for filt in w:
            rgb = filt.transpose(1, 2, 0)
            rgb = (rgb - rgb.min()) / (float(np.ptp(rgb)) or 1.0)
            tiles.append(np.repeat(np.repeat((rgb * 255).astype(np.uint8), f, 0), f, 1))
        return grid(tiles, columns(len(w))), float(np.abs(w).max()), "each filter as an RGB picture (min-max scaled)"
    c = int(np.clip(in_channel, 0, w.shape[1] - 1))
    sl = w[:, c]
    m = float(np.abs(sl).max()) or 1.0
    tiles = [np.repeat(np.repeat(colorize(t, -m, m, "diverging"), f, 0), f, 1) for t in sl]
    return grid(tiles, columns(len(w))), m, f"input channel {c} of each {k}×{k} filter"


def overlay(base_gray_or_rgb: np.ndarray, heat: np.ndarray | None, opacity: float, side: int = 280) -> Image.Image:
    """A class-activation map (any size) upsampled smoothly onto the input image (None: the image alone)."""
    base = Image.fromarray(base_gray_or_rgb).convert("RGB").resize((side, side), Image.Resampling.NEAREST)
    if heat is None:
        return served(base)
    h = heat - heat.min()
    h = h / (h.max() or 1.0)
    hm = Image.fromarray((h * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)
    colored = Image.fromarray(LUTS["inferno"][np.asarray(hm)])
    return served(Image.blend(base, colored, float(np.clip(opacity, 0, 1))))


def grid(tiles: list[np.ndarray], cols: int, gap: int = 2, labels: bool = True) -> Image.Image:
    """Equal-size RGB tiles in a grid on white, each numbered in its corner."""
    th, tw = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    canvas = np.full((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * (th + gap):r * (th + gap) + th, c * (tw + gap):c * (tw + gap) + tw] = t
    img = Image.fromarray(canvas)
    if labels and tw >= 24:
        d = ImageDraw.Draw(img)
        for i in range(len(tiles)):
            r, c = divmod(i, cols)
            d.text((c * (tw + gap) + 2, r * (th + gap) + 1), str(i), fill="white", stroke_width=1, stroke_fill="black")
    return served(img)


def grid_cell(x: int, y: int, tile_w: int, tile_h: int, cols: int, n: int, gap: int = 2) -> int | None:
    """Which tile of a :func:`grid` a click at pixel (x, y) falls on (None for the gaps)."""
    c, r = x // (tile_w + gap), y // (tile_h + gap)
    if x % (tile_w + gap) >= tile_w or y % (tile_h + gap) >= tile_h:
        return None
    i = r * cols + c
    return i if c < cols and 0 <= i < n else None


def tile_side(h: int, target: int = 56) -> int:
    """Integer upscale factor times ``h`` closest to ``target`` (at least 1x)."""
    return h * max(1, round(target / h))
