"""Images a model was not trained on, to fit and measure its in-distribution gate (export.gate).

Each family is a function ``(n, rng) -> list of images`` (uint8, H x W gray or H x W x 3 RGB), made
the way a user would hand them to the app: drawings on a white 280 x 280 canvas, photos and
documents at their own size. Everything is generated here with numpy and Pillow (its bundled font,
so the same seed gives the same pixels on every machine) or read from the data sets
(``data_families``), never downloaded. numpy and Pillow only: tests and benchmarks import it.
"""

from __future__ import annotations

import io
import string
import subprocess
import sys
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Family = Callable[[int, np.random.Generator], list[np.ndarray]]
CANVAS = 280  # px: the Digits tab's sketchpad
LETTERS = string.ascii_letters


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _canvas(side: int = CANVAS, colour: int | tuple = 255, mode: str = "L") -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new(mode, (side, side), colour)
    return img, ImageDraw.Draw(img)


def _random_points(rng: np.random.Generator, k: int, side: int, margin: float = 0.1) -> list[tuple[float, float]]:
    return [tuple(p) for p in rng.uniform(side * margin, side * (1 - margin), (k, 2))]


def dots(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One to three round dots, the size of a pen tap or a blot."""
    out = []
    for _ in range(n):
        img, d = _canvas()
        for x, y in _random_points(rng, int(rng.integers(1, 4)), CANVAS, 0.2):
            r = rng.uniform(6, 30)
            d.ellipse((x - r, y - r, x + r, y + r), fill=0)
        out.append(np.asarray(img))
    return out


def scribbles(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random pen path: a smoothed random walk of 6-30 waypoints, 6-30 px wide."""
    out = []
    for _ in range(n):
        img, d = _canvas()
        k = int(rng.integers(6, 31))
        pts = np.cumsum(rng.normal(0, rng.uniform(20, 60), (k, 2)), 0)
        pts = (pts - pts.min(0)) / max(float(np.ptp(pts, 0).max()), 1.0) * rng.uniform(100, 240) + 20
        d.line([tuple(p) for p in pts], fill=0, width=int(rng.integers(6, 31)), joint="curve")
        out.append(np.asarray(img))
    return out


def shapes(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Drawings of simple shapes (circles, boxes, stars, polygons, crossed lines), outlined or
    filled (a silhouette), on paper or coloured card, 64-512 px."""
    out = []
    for _ in range(n):
        side = int(rng.integers(64, 513))
        paper = tuple(int(v) for v in (rng.integers(200, 256, 3) if rng.random() < 0.7 else rng.integers(0, 256, 3)))
        img, d = _canvas(side, paper, "RGB")
        for _ in range(int(rng.integers(1, 4))):
            ink = tuple(int(v) for v in (rng.integers(0, 60, 3) if rng.random() < 0.6 else rng.integers(0, 256, 3)))
            pts = _random_points(rng, int(rng.integers(3, 9)), side)
            kind, fill = rng.integers(0, 4), (ink if rng.random() < 0.5 else None)
            width = max(1, int(side * rng.uniform(0.01, 0.06)))
            if kind == 0:
                d.polygon(pts, fill=fill, outline=ink, width=width)
            elif kind == 1:
                (x0, y0), (x1, y1) = sorted(pts[:2])
                d.ellipse((x0, min(y0, y1), x1 + 1, max(y0, y1) + 1), fill=fill, outline=ink, width=width)
            elif kind == 2:
                (x0, y0), (x1, y1) = sorted(pts[:2])
                d.rectangle((x0, min(y0, y1), x1 + 1, max(y0, y1) + 1), fill=fill, outline=ink, width=width)
            else:
                d.line(pts, fill=ink, width=width)
        out.append(np.asarray(img))
    return out


def letters(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One letter (A-Z, a-z) as drawn on the canvas: black on white, any size, slightly rotated."""
    out = []
    for _ in range(n):
        ch = LETTERS[int(rng.integers(len(LETTERS)))]
        img, d = _canvas()
        size = int(rng.integers(90, 220))
        d.text((CANVAS / 2, CANVAS / 2), ch, fill=0, font=_font(size), anchor="mm",
               stroke_width=int(rng.integers(0, 8)), stroke_fill=0)
        out.append(np.asarray(img.rotate(float(rng.uniform(-15, 15)), fillcolor=255)))
    return out


def typed_digits(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Not a negative: digits 0-9 typed in Pillow's font on the canvas, any size and pen weight,
    slightly rotated. Clean, even strokes like a browser pen's, which MNIST's scans are not: the
    digit gates count them as digits."""
    out = []
    for i in range(n):
        img, d = _canvas()
        d.text((CANVAS / 2, CANVAS / 2), str(i % 10), fill=0, font=_font(int(rng.integers(90, 230))), anchor="mm",
               stroke_width=int(rng.integers(0, 10)), stroke_fill=0)
        out.append(np.asarray(img.rotate(float(rng.uniform(-12, 12)), fillcolor=255)))
    return out


def words(k: int, rng: np.random.Generator) -> str:
    return " ".join("".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(2, 9)))) for _ in range(k))


def documents(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A page of text: lines of random words on white or tinted paper, 128-640 px wide."""
    out = []
    for _ in range(n):
        w = int(rng.integers(128, 641))
        h = int(w * rng.uniform(0.6, 1.5))
        paper = int(rng.integers(215, 256))
        img = Image.new("L", (w, h), paper)
        d = ImageDraw.Draw(img)
        size = int(rng.integers(10, max(11, w // 12)))
        y = rng.uniform(0, size)
        while y < h - size:
            d.text((rng.uniform(2, size), y), words(int(rng.integers(2, 12)), rng), fill=int(rng.integers(0, 90)),
                   font=_font(size))
            y += size * rng.uniform(1.2, 2.0)
        out.append(np.asarray(img))
    return out


def uniform(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A flat image: one gray or colour, or a smooth gradient, 16-512 px."""
    out = []
    for _ in range(n):
        side = int(rng.integers(16, 513))
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        if rng.random() < 0.5:
            b = a
        t = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]
        img = (a + (b - a) * t) * np.ones((1, side, 1), np.float32)
        out.append(img.astype(np.uint8)[..., 0] if rng.random() < 0.5 else img.astype(np.uint8))
    return out


def noise(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random pixels: white noise, or smooth noise (coarse noise enlarged), gray or colour."""
    out = []
    for _ in range(n):
        side, channels = int(rng.integers(32, 513)), (3 if rng.random() < 0.5 else 1)
        grain = int(rng.choice([side, max(2, side // 8), max(2, side // 32)]))
        coarse = rng.integers(0, 256, (grain, grain, channels), dtype=np.uint8)
        img = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse).resize((side, side),
                                                                                       Image.Resampling.BICUBIC)
        out.append(np.asarray(img))
    return out


SYNTHETIC: dict[str, Family] = {"dots": dots, "scribbles": scribbles, "shapes": shapes, "letters": letters,
                                "documents": documents, "uniform": uniform, "noise": noise}


def _enlarged(pick: Callable[[np.random.Generator], np.ndarray], sharpen: bool = False) -> Family:
    """A family of data-set images shown as a user would upload them: enlarged 2-8x, sometimes
    blurred; or, with ``sharpen``, enlarged 2-4x and sharpened (an unsharp mask), as crisp as a photo."""
    def family(n: int, rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            a = pick(rng)
            img = Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a)
            f = float(rng.uniform(2, 4 if sharpen else 8)) if img.width < 100 else float(rng.uniform(0.5, 1.5))
            img = img.resize((max(8, round(img.width * f)), max(8, round(img.height * f))), Image.Resampling.BICUBIC)
            if sharpen:
                img = img.filter(ImageFilter.UnsharpMask(float(rng.uniform(1, 3)), int(rng.integers(100, 300)), 2))
            elif rng.random() < 0.3:
                img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2))))
            out.append(np.asarray(img))
        return out
    return family


def from_arrays(x: np.ndarray, invert: bool = False, sharpen: bool = False) -> Family:
    """Random images of a data set (N, H, W, C); ``invert``: MNIST's white-on-black as ink on paper."""
    return _enlarged(lambda rng: 255 - x[int(rng.integers(len(x)))] if invert else x[int(rng.integers(len(x)))],
                     sharpen)


SKIMAGE_VERSION = "0.26.0"
# scikit-image's sample photos that are the CIFAR tab's examples (scripts/get_example_photos.py):
# never fitted on, so the gates are measured on them as on files they never saw
EXAMPLE_SOURCES = frozenset({"chelsea.png", "horse.png", "rocket.jpg", "coffee.png", "astronaut.png"})
CACHE = Path.home() / ".cache" / "convscope"


def skimage_photos(cache: Path = CACHE) -> list[np.ndarray]:
    """scikit-image's other sample pictures (CC0 and public domain: cameraman, coins, the moon, a
    motorcycle, a page of text, a retina, bricks, grass ...), sharp photos of every kind, read out of
    its wheel (pip-downloaded once into ``cache``, never installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        f"scikit-image=={SKIMAGE_VERSION}", "-d", str(cache), "-q"], check=True)
        wheels = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    out = []
    with zipfile.ZipFile(wheels[0]) as z:
        for name in sorted(z.namelist()):
            base = name.rsplit("/", 1)[-1]
            if not name.startswith("skimage/data/") or base in EXAMPLE_SOURCES or \
                    not base.endswith((".png", ".jpg")):
                continue
            img = Image.open(io.BytesIO(z.read(name)))
            if min(img.size) >= 32:
                out.append(np.asarray(img.convert("RGB" if img.mode not in ("L", "I;16") else "L")))
    return out


def crops_of(photos: list[np.ndarray]) -> Family:
    """Random views of real photos: a crop of 30-100% of the side, turned, mirrored, sometimes gray,
    at 64-512 px."""
    def family(n: int, rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            img = Image.fromarray(photos[int(rng.integers(len(photos)))])
            side = int(min(img.size) * rng.uniform(0.3, 1.0))
            x0, y0 = int(rng.integers(0, img.width - side + 1)), int(rng.integers(0, img.height - side + 1))
            img = img.crop((x0, y0, x0 + side, y0 + side)).rotate(90 * int(rng.integers(4)), expand=True)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if rng.random() < 0.3:
                img = img.convert("L")
            out.append(np.asarray(img.resize((int(rng.integers(64, 513)),) * 2, Image.Resampling.BICUBIC)))
        return out
    return family


def data_families(arrays: dict[str, np.ndarray]) -> dict[str, Family]:
    """Families drawn from data sets: ``arrays`` maps "photos", "digits", "xrays" to (N, H, W, C) uint8."""
    out = {}
    if "photos" in arrays:
        out["photos"] = from_arrays(arrays["photos"])
        out["photos_sharpened"] = from_arrays(arrays["photos"], sharpen=True)
    if "digits" in arrays:
        out["digits"] = from_arrays(arrays["digits"], invert=True)
    if "xrays" in arrays:
        out["xrays"] = from_arrays(arrays["xrays"])
    return out


def generate(families: dict[str, Family], n: int, seed: int) -> dict[str, list[np.ndarray]]:
    """``n`` images of each family; one seed per family and split, so the held-out images are new ones."""
    return {name: fam(n, np.random.default_rng([seed, *name.encode()])) for name, fam in families.items()}
