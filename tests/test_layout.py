"""The shape of the code, checked mechanically: one answer layer that every door calls, tabs that
hold layout and wiring only, and functions short enough to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("convscope", "train", "export", "bench", "scripts")
MAX_FUNCTION_LINES = 80


def python_files(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((REPO / f).rglob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_only_the_ui_assembly_imports_the_tabs():
    for path in python_files(*PACKAGES):
        if path.parent.name == "tabs" or path == REPO / "convscope" / "ui.py":
            continue
        tabs = {m for m in imported_modules(path) if m.startswith("convscope.tabs")}
        assert not tabs, f"{path.relative_to(REPO)} imports {sorted(tabs)}"


def test_no_tab_imports_another_tab_or_the_rest_api():
    for path in python_files("convscope/tabs"):
        mods = imported_modules(path)
        assert "convscope.rest" not in mods, path.name
        others = {m.split(".")[2] for m in mods if m.startswith("convscope.tabs.") and len(m.split(".")) > 2}
        allowed = {"common", path.stem} | ({"playground", "own_model"} if path.stem == "features" else set())
        assert others <= allowed, (path.name, others - allowed)


def test_the_answer_layer_imports_no_gradio():
    for name in ("answers", "card_text", "inspection", "guard", "uploads", "preprocess", "runtime"):
        mods = imported_modules(REPO / "convscope" / f"{name}.py")
        assert not {m for m in mods if m.split(".")[0] == "gradio"}, name


@pytest.mark.parametrize("folder", ["convscope", "train", "export"])
def test_no_function_is_longer_than_80_lines(folder):
    long = []
    for path in python_files(folder):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_cards_will_describe_preprocessing_as_the_code_does():
    """Export writes each card's preprocessing note from the policy function's docstring (no
    hand-written copy to drift from the code)."""
    from convscope.preprocess import PREPROCESSORS, policy_note
    from train.datasets import INPUT_SPECS

    for spec in INPUT_SPECS.values():
        assert spec["preprocess"] in PREPROCESSORS
        assert spec["note"] == policy_note(spec["preprocess"]) and len(spec["note"]) > 60


def test_every_repository_path_named_in_code_and_docs_exists():
    """Files of this repository named in docstrings, comments and Markdown (a test file, a module,
    a docs page) exist: renamed files leave no stale references."""
    folders = "tests|convscope|train|export|bench|scripts|docs|examples"
    pattern = re.compile(rf"\b((?:{folders})/[\w./-]+\.(?:py|md|json|png))")
    missing = []
    for path in [*python_files(*PACKAGES, "tests"), *REPO.glob("*.md"), *(REPO / "docs").glob("*.md")]:
        for name in pattern.findall(path.read_text()):
            if not (REPO / name).exists() and "<" not in name and "*" not in name:
                missing.append(f"{path.relative_to(REPO)} names {name}")
    assert not missing, missing


def test_the_readme_layout_names_every_serving_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 5)]
    for path in sorted((REPO / "convscope").glob("*.py")):
        if path.stem != "__init__":
            assert path.name in layout or path.stem in layout, f"README Layout misses convscope/{path.name}"


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
