"""The README's results table is generated from the cards and must be current."""

import subprocess
import sys

from tests.conftest import REPO


def test_results_table_matches_the_cards():
    r = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_hugging_face_space_layout():
    """README front matter makes the repo a Space; requirements.txt holds serving dependencies only."""
    import re

    import gradio

    front = (REPO / "README.md").read_text().split("---\n")[1]
    meta = dict(line.split(": ", 1) for line in front.strip().splitlines())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert re.fullmatch(r"6\.\d+\.\d+", meta["sdk_version"])  # pinned, and within pyproject's gradio>=6.16,<7
    assert tuple(map(int, meta["sdk_version"].split("."))) >= (6, 16, 0)
    assert meta["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]
    reqs = [r.split("#")[0].strip() for r in (REPO / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=\[ ;]", r)[0].lower() for r in reqs if r}
    # no torch, onnx, timm at serving time; httptools and uvloop: uvicorn's fast HTTP parser and loop
    assert names == {"onnxruntime", "numpy", "pillow", "pydicom", "scikit-learn", "httptools", "uvloop"}, names
