"""Pieces every tab shares."""

from __future__ import annotations


def missing_notice(problems: dict[str, str]) -> str:
    """Markdown for models a tab expected but cannot serve, with the reason for each."""
    if not problems:
        return ""
    lines = [f"- **{name}**: {reason}" for name, reason in sorted(problems.items())]
    return ("⚠️ **Some models of this tab are not available.** The rest of the app works.\n"
            + "\n".join(lines)
            + "\n\nTo restore a model: `python -m export <name>` (re-exports the shipped checkpoint), "
              "or `git checkout models/`.")
