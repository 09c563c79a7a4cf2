"""Draw the example images the app offers (made here, so no license questions): two digits as a
canvas would give them, and a colourful pattern of edges and blobs for the ImageNet stem.

    python scripts/make_examples.py   # writes examples/*.png
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "examples"


def digit(strokes: list[list[tuple[int, int]]], name: str) -> None:
    img = Image.new("RGB", (280, 280), "white")
    d = ImageDraw.Draw(img)
    for s in strokes:
        d.line(s, fill="black", width=24, joint="curve")
        for x, y in (s[0], s[-1]):
            d.ellipse([x - 12, y - 12, x + 12, y + 12], fill="black")
    img.save(OUT / name)


def pattern(name: str) -> None:
    yy, xx = np.mgrid[0:240, 0:320]
    r = (np.sin(xx / 9.0) > 0) * 200 + 30
    g = np.clip(255 - np.hypot(xx - 220, yy - 80) * 3, 0, 255)
    b = ((yy // 40 + xx // 40) % 2) * 180 + 40
    img = Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([30, 120, 130, 220], fill=(250, 220, 40))
    d.polygon([(180, 230), (300, 230), (240, 130)], fill=(20, 20, 20))
    img.save(OUT / name)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    digit([[(150, 40), (150, 240)], [(110, 80), (150, 40)]], "digit_1.png")
    digit([[(80, 70), (200, 60), (210, 110), (90, 240), (210, 235)]], "digit_2.png")
    digit([[(90, 60), (200, 60), (120, 240)]], "digit_7.png")
    pattern("pattern_edges_colours.png")
