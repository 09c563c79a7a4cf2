"""Copy the CIFAR-10 tab's example photos out of the scikit-image wheel (public-domain and CC0
photos, none from CIFAR), shrunk to at most 512 px and saved as JPEG, and write their sources.

    python scripts/get_example_photos.py   # pip-downloads scikit-image (no install), writes examples/photos/
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "examples" / "photos"
WHEEL_VERSION = "0.26.0"

# file in skimage/data -> (our name, what it shows, credit and license as skimage documents them)
PHOTOS = {
    "chelsea.png": ("cat_chelsea.jpg", "Chelsea the cat (a CIFAR class)",
                    "Stefan van der Walt, CC0"),
    "horse.png": ("horse_silhouette.jpg", "a horse silhouette: a class, but a drawing, not a photo",
                  "Andreas Preuss (marauder), CC0"),
    "rocket.jpg": ("rocket_falcon9.jpg", "Falcon 9 launching DSCOVR: none of the ten classes",
                   "SpaceX, public domain"),
    "coffee.png": ("coffee_cup.jpg", "a coffee cup: none of the ten classes",
                   "Rachel Michetti (Pikolo Espresso Bar), CC0"),
    "astronaut.png": ("astronaut_collins.jpg", "astronaut Eileen Collins: none of the ten classes",
                      "NASA Great Images, public domain"),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        f"scikit-image=={WHEEL_VERSION}", "-d", tmp, "-q"], check=True)
        wheel = next(Path(tmp).glob("scikit_image-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for src, (name, _, _) in PHOTOS.items():
                with z.open(f"skimage/data/{src}") as f, Image.open(f) as im:
                    im = im.convert("RGB")
                    im.thumbnail((512, 512), Image.Resampling.LANCZOS)
                    im.save(OUT / name, quality=90)
    rows = "\n".join(f"| `{name}` | {what} | {credit} |" for name, what, credit in PHOTOS.values())
    (OUT / "SOURCES.md").write_text(
        "# Example photos of the CIFAR-10 tab\n\n"
        f"Copied from scikit-image {WHEEL_VERSION} (`skimage/data/`, whose docstrings state the credits "
        "and licenses below), shrunk to at most 512 px, saved as JPEG by `scripts/get_example_photos.py`. "
        "None is from CIFAR-10.\n\n| file | shows | credit, license |\n|---|---|---|\n" + rows + "\n")


if __name__ == "__main__":
    main()
