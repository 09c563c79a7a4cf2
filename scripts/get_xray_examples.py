"""Copy a few chest films out of the offline data into examples/xray/, with their sources: the
X-ray tab's examples, so the tab can be tried from a fresh clone.

    python scripts/get_xray_examples.py [--data-dir ../shared/data]

Picked deterministically (the first files by name of each kind, never chosen by what a model says
about them): Kermany's official test split (no model here trained on it; CC BY 4.0) and adult
NIH ChestX-ray14 films (public; cite Wang et al. 2017), plus one DICOM made from a Kermany film
(16-bit, MONOCHROME2, with a window) to show that format works.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.bad_inputs import dicom_bytes  # noqa: E402  (the one DICOM writer of the repo)
from train.datasets import KERMANY_CSV, KERMANY_ZIP, NIH_CSV, NIH_ZIP, resolve_data_dir  # noqa: E402

OUT = REPO / "examples" / "xray"
# (our name, csv filter, what it shows)
KERMANY = [
    ("kermany_normal_{i}.png", {"split": "test", "subtype": "normal"}, "pediatric, normal", 2),
    ("kermany_pneumonia_bacterial.png", {"split": "test", "subtype": "bacteria"}, "pediatric, bacterial pneumonia", 1),
    ("kermany_pneumonia_viral.png", {"split": "test", "subtype": "virus"}, "pediatric, viral pneumonia", 1),
]
NIH = [("nih_adult_normal.png", "normal", "adult, NIH 'No Finding'"),
       ("nih_adult_pneumonia.png", "pneumonia", "adult, NIH label includes Pneumonia")]


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: r.get("path_in_zip") or r["png_name"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=None)
    root = resolve_data_dir(ap.parse_args().data_dir)
    OUT.mkdir(parents=True, exist_ok=True)
    table = []
    with zipfile.ZipFile(root / KERMANY_ZIP) as z:
        for name, want, what, n in KERMANY:
            picked = [r for r in rows(root / KERMANY_CSV) if all(r[k] == v for k, v in want.items())][:n]
            for i, r in enumerate(picked, 1):
                img = Image.open(io.BytesIO(z.read(r["path_in_zip"]))).convert("L")
                img.save(OUT / name.format(i=i))
                table.append((name.format(i=i), what, f"Kermany et al. 2018, test/{r['filename']}", "CC BY 4.0"))
    first = OUT / "kermany_normal_1.png"
    pixels = np.asarray(Image.open(first)).astype(np.uint16) * 16  # 12-bit range
    (OUT / "kermany_normal_1.dcm").write_bytes(dicom_bytes(pixels, window=(2048, 4096)))
    table.append(("kermany_normal_1.dcm", "the same film as a 12-bit DICOM", "made from kermany_normal_1.png",
                  "CC BY 4.0"))
    with zipfile.ZipFile(root / NIH_ZIP) as z:
        for name, label, what in NIH:
            r = next(r for r in rows(root / NIH_CSV) if r["label"] == label)
            Image.open(io.BytesIO(z.read(r["png_name"]))).convert("L").save(OUT / name)
            table.append((name, f"{what}, age {r['age']}, {r['view']}",
                          f"NIH ChestX-ray14 {r['nih_image_index']} (Wang et al., CVPR 2017; NIH Clinical Center)",
                          "public, research use"))
    lines = "\n".join(f"| `{a}` | {b} | {c} | {d} |" for a, b, c, d in table)
    (OUT / "SOURCES.md").write_text(
        "# Example chest films of the X-ray tab\n\nCopied at 224×224 from the offline data by "
        "`scripts/get_xray_examples.py` (the first files by name of each kind, not chosen by any model's answer). "
        "Kermany's test films were never trained on; the NIH films are adults from another hospital.\n\n"
        "| file | shows | source | license |\n|---|---|---|---|\n" + lines + "\n")


if __name__ == "__main__":
    main()
