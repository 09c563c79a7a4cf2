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
